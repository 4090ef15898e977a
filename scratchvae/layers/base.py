"""Parameters and the Module base class.

A :class:`Module` is a thin object around functional op pairs
(``scratchvae.ops``): ``forward`` calls the op's forward and keeps its cache;
``backward`` hands the upstream gradient and that cache to the op's backward,
returns the gradient w.r.t. the input and accumulates the parameter
gradients into ``Parameter.grad``.

There is no tape. A model's backward calls its modules' ``backward`` in
reverse order, explicitly, so the reader can follow the gradient by eye.
"""
import numpy as np

from ..backend import get_xp, to_device, to_numpy


class Parameter:
    """A trainable array and its accumulated gradient.

    ``grad`` is ``None`` until the first backward after :meth:`zero_grad`
    (PyTorch's ``set_to_none`` behaviour): the first contribution is stored
    as is, later ones are added. This saves a zero-fill and an add per step.

    ``grad_view`` (set by :class:`scratchvae.optimizers.FlatParameters`) is
    this parameter's slice of one flat gradient buffer: the first contribution
    after :meth:`zero_grad` goes there, so that an optimiser updates every
    parameter in one pass over that buffer. A backward that can write its
    result into a given array asks :meth:`grad_buffer` for it (no new array,
    no copy); :meth:`accumulate` copies any other first contribution there.
    """

    def __init__(self, data):
        self.data = data
        self.grad = None
        self.grad_view = None
        self._view_free = False   # grad_view takes the next first contribution

    def grad_buffer(self):
        """The array to write this parameter's next gradient into and then pass to
        :meth:`accumulate`: ``grad_view`` while it is free (``grad`` is None since
        :meth:`zero_grad`), else None (the backward makes its own array)."""
        return self.grad_view if self.grad is None and self._view_free else None

    def accumulate(self, g):
        """grad = g on the first contribution (held in ``grad_view`` while it is
        free: g is that view, written by a backward, or is copied there), else
        grad += g."""
        if self.grad is not None:
            self.grad += g
        elif self.grad_buffer() is None:
            self.grad = g
        else:
            if g is not self.grad_view:
                self.grad_view[...] = g
            self.grad, self._view_free = self.grad_view, False

    def zero_grad(self):
        self.grad = None
        self._view_free = self.grad_view is not None

    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        return self.data.size

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Module:
    """Base class: holds parameters and sub-modules as plain attributes.

    Sub-classes implement ``forward(x)`` and ``backward(dout)``. Parameters
    are discovered by walking the instance's attributes in definition order
    (Parameters, Modules, and lists of Modules), which gives stable dotted
    names such as ``encoder.layers.0.weight``.
    """

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward_cache(self):
        """What the last ``forward`` kept for ``backward`` (``self.cache``).

        Layers read their cache through this, so that a backward before any
        forward is a clear RuntimeError instead of an error deep in the op.
        """
        cache = getattr(self, "cache", None)
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first")
        return cache

    # -- parameter bookkeeping -------------------------------------------------
    def named_parameters(self, prefix=""):
        for key, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + key, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + key + ".")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield from item.named_parameters(f"{prefix}{key}.{i}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        """This module and every Module below it (attributes and lists of them),
        parents before children, as PyTorch's ``Module.modules()``."""
        yield self
        for value in vars(self).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if isinstance(item, Module):
                    yield from item.modules()

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    @property
    def xp(self):
        params = self.parameters()
        return get_xp(params[0].data) if params else np

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].data.dtype if params else np.dtype(np.float32)

    def astype(self, dtype):
        """Cast every parameter to ``dtype`` in place (e.g. float64 for checks)."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad_view = None      # a flat buffer of the old dtype
            p.zero_grad()
        if hasattr(self, "param_dtype"):
            self.param_dtype = np.dtype(dtype)
        return self

    def to(self, xp):
        """Move every parameter to the array module ``xp`` (numpy or cupy)."""
        for p in self.parameters():
            p.data = to_device(p.data, xp)
            p.grad_view = None      # a flat buffer of the old device
            p.zero_grad()
        return self

    # -- (de)serialisation -----------------------------------------------------
    def state_dict(self):
        """Parameters as host NumPy arrays, keyed by dotted name."""
        return {name: to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters' own arrays (in place: an optimiser's flat
        buffer keeps them); names and shapes must match, values cast to the dtype."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"load_state_dict: parameter names do not match; "
                             f"missing {missing}, unexpected {unexpected}")
        for name, p in own.items():
            arr = state[name]
            if tuple(arr.shape) != tuple(p.data.shape):
                raise ValueError(f"load_state_dict: expected {name} of shape "
                                 f"{tuple(p.data.shape)}, got {tuple(arr.shape)}")
            p.data[...] = to_device(np.asarray(arr), get_xp(p.data)).astype(p.data.dtype)
            p.zero_grad()
