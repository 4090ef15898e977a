"""A gated PixelCNN prior over code maps (van den Oord et al., 2016,
"Conditional Image Generation with PixelCNN Decoders").

Input: integer codes z (N, H, W) in [0, K). Output: K logits per position,
the conditional p(z_p | z_<p) in raster order (and the label y, if any):

    e      = Embedding(K, C)(z), transposed to (N, C, H, W)
    v_0    = e shifted down one row;    h_0 = e shifted right one column
    layer l = 0 .. L-1 (C channels in, 2C before each gate):
      a_v  = Vconv_l(v_l) [+ ClassBias(y)]            (k//2+1) x k, sees rows above
      v_l+1 = gate(a_v)                                (not needed after the last layer)
      a_h  = Hconv_l(h_l) + Link_l(a_v) [+ ClassBias(y)]  1 x (k//2+1), sees the left
      g    = gate(a_h)
      h_l+1 = Res_l(g) + (h_l if l > 0 else 0)        residual after the first layer
                                                       (not computed after the last:
                                                       Res_L-1 gets the gradient 0)
      s   += Skip_l(g)
    logits = Conv1x1(ReLU(Conv1x1(ReLU(s))))          C -> C -> K

gate(a) = tanh(a[:, :C]) * sigmoid(a[:, C:]); Link, Res and Skip are 1x1
convolutions. Each stack convolution is an ordinary Conv2d over its input
padded with zeros on one side only (:class:`CausalPad`), so nothing is
masked and no output is cropped.

Receptive field (p = (i, j), k = 2r + 1). The vertical conv of layer l
reads rows i-r .. i of v_l and columns j-r .. j+r; v_0 at row i is e at
row i-1, so a_v of layer 0 sees rows i-r-1 .. i-1, and every later layer
adds r rows above and r columns on each side: a_v of layer l sees rows
i-(l+1)r-1 .. i-1, columns j-(l+1)r .. j+(l+1)r, all strictly above p.
The horizontal conv of layer l reads columns j-r .. j of h_l in row i;
h_0 at column j is e at column j-1 (the type-A first layer: the current
code is never read), so h_l+1 sees row i, columns j-(l+1)r-1 .. j-1, plus
(through the link) the vertical field above. Both fields hold only
positions before p. After L layers they cover every position before p
of an H x W map once L r >= W - 1 (the vertical reach to the right, the
last to close; L r >= H - 2 and L r >= W - 2 follow): no blind spot, as
the vertical stack grows as a rectangle, not the single-stack triangle.
``first_type="B"`` reads the current code in the first horizontal layer:
it exists only for the test that shows the current code leaking.

Defaults (:func:`pixelcnn`): K = 128 codes, C = 64, L = 6 layers, k = 3
(r = 1: 6 layers cover a 7x7 map). Parameters: 564,416. Multiply-adds per
7x7 code map (forward): 27.1 M (``num_parameters()`` and
:func:`multiply_adds` compute them from the shapes). loss() is the mean over the batch of the NLL of each code map
in nats (summed over its H*W positions).
"""
import numpy as np

from .. import losses
from ..backend import check_int, check_rng, get_xp, to_numpy
from ..layers import ClassBias, Conv2d, Embedding, Gate, Module, ReLU

FIRST_TYPES = ("A", "B")


class CausalPad(Module):
    """y = x with its last ``shift`` rows (axis 2) or columns (axis 3) dropped
    and ``pad`` zero rows on top / columns on the left: the input of a
    causal convolution of that axis (shift 1: the output at p reads only
    positions strictly before p on that axis). backward: dx = dy's window of x, zeros at the dropped end.

    y and dx are channels-last in memory (NCHW shape, NHWC memory), the
    layout the convolutions read and write without a copy."""

    def __init__(self, axis, pad, shift=0):
        self.axis, self.pad, self.shift = axis, pad, shift
        self.cache = None

    def _window(self, a, start, stop):
        """a's rows (axis 2) or columns (axis 3) start .. stop - 1 (a view)."""
        return a[:, :, start:stop] if self.axis == 2 else a[:, :, :, start:stop]

    def forward(self, x):
        n = x.shape[self.axis]
        shape = list(x.shape)
        shape[self.axis] = n - self.shift + self.pad
        y = _channels_last_empty(get_xp(x), shape, x.dtype)
        self._window(y, 0, self.pad)[...] = 0
        self._window(y, self.pad, None)[...] = self._window(x, 0, n - self.shift)
        self.cache = x.shape
        return y

    def backward(self, dy):
        shape = self.forward_cache()
        n = shape[self.axis]
        dx = _channels_last_empty(get_xp(dy), shape, dy.dtype)
        self._window(dx, 0, n - self.shift)[...] = self._window(dy, self.pad, None)
        self._window(dx, n - self.shift, None)[...] = 0
        return dx

    def __repr__(self):
        return f"CausalPad(axis={self.axis}, pad={self.pad}, shift={self.shift})"


def _channels_last_empty(xp, shape, dtype):
    """An uninitialised array of NCHW ``shape`` held channels-last (a view of NHWC memory)."""
    N, C, H, W = shape
    return xp.empty((N, H, W, C), dtype=dtype).transpose(0, 3, 1, 2)


class GatedLayer(Module):
    """One layer of both stacks (see the module docstring); ``first``: no
    residual, and the stacks' inputs are shifted by one (``first_type`` "A")."""

    def __init__(self, channels, kernel, first, n_classes, first_type="A", rng=None,
                 dtype=np.float32):
        C, r = channels, kernel // 2
        kw = dict(rng=rng, dtype=dtype)
        v_shift, h_shift = (1, 1 if first_type == "A" else 0) if first else (0, 0)
        self.first = first
        self.v_pad = CausalPad(2, r + v_shift, v_shift)
        self.v_conv = Conv2d(C, 2 * C, (r + 1, kernel), padding=(0, r), **kw)
        self.h_pad = CausalPad(3, r + h_shift, h_shift)
        self.h_conv = Conv2d(C, 2 * C, (1, r + 1), **kw)
        self.link = Conv2d(2 * C, 2 * C, 1, **kw)
        self.v_gate, self.h_gate = Gate(), Gate()
        self.res = Conv2d(C, C, 1, **kw)
        self.skip = Conv2d(C, C, 1, **kw)
        self.v_class = ClassBias(n_classes, 2 * C, **kw) if n_classes else None
        self.h_class = ClassBias(n_classes, 2 * C, **kw) if n_classes else None

    def forward(self, v, h, labels, last):
        """(v_l, h_l) -> (v_l+1, h_l+1, skip_l), v_l+1 and h_l+1 None after the last layer."""
        a_v, v_next = self.vertical(v, labels, last)
        return (v_next,) + self.horizontal(h, a_v, labels, last)

    def vertical(self, v, labels, last=False):
        """v_l -> (a_v, v_l+1 or None): the vertical stack's half of the layer."""
        a_v = self.v_conv.forward(self.v_pad.forward(v))
        if self.v_class is not None:
            a_v = self.v_class.forward(a_v, labels)
        return a_v, (None if last else self.v_gate.forward(a_v))

    def horizontal(self, h, a_v, labels, last=False):
        """(h_l, a_v) -> (h_l+1 or None after the last layer, skip_l): the
        horizontal stack's half, a_v entering through the link before the gate.
        The last layer's h_l+1 feeds nothing: its residual is not computed."""
        a_h = self.h_conv.forward(self.h_pad.forward(h))
        a_h += self.link.forward(a_v)
        if self.h_class is not None:
            a_h = self.h_class.forward(a_h, labels)
        g = self.h_gate.forward(a_h)
        h_next = None
        if not last:
            h_next = self.res.forward(g)
            if not self.first:
                h_next += h
        return h_next, self.skip.forward(g)

    def backward(self, dv_next, dh_next, dskip):
        """(d v_l+1 or None, d h_l+1 or None, d skip_l) -> (d v_l, d h_l).

        dh_next None (the last layer): the residual took no part in the loss,
        its parameters get the gradient 0 (as a zero dh_next would give them)."""
        dg = self.skip.backward(dskip)
        if dh_next is None:
            xp = get_xp(dskip)
            for p in (self.res.weight, self.res.bias):
                p.accumulate(xp.zeros_like(p.data))
        else:
            dg += self.res.backward(dh_next)
        da_h = self.h_gate.backward(dg)
        if self.h_class is not None:
            da_h = self.h_class.backward(da_h)
        dh = self.h_pad.backward(self.h_conv.backward(da_h))
        if not self.first and dh_next is not None:
            dh += dh_next                           # the residual's identity path
        da_v = self.link.backward(da_h)
        if dv_next is not None:
            da_v = da_v + self.v_gate.backward(dv_next)
        if self.v_class is not None:
            da_v = self.v_class.backward(da_v)
        dv = self.v_pad.backward(self.v_conv.backward(da_v))
        return dv, dh


class PixelCNN(Module):
    """The gated PixelCNN prior; ``loss(codes, labels)`` and ``backward()``."""

    def __init__(self, num_codes, channels, layers, kernel, n_classes=0, first_type="A",
                 rng=None, dtype=np.float32):
        op = "PixelCNN"
        self.num_codes = check_int(op, "num_codes", num_codes, 2)
        self.channels = check_int(op, "channels", channels, 1)
        self.n_layers = check_int(op, "layers", layers, 1)
        self.kernel = check_int(op, "kernel", kernel, 1)
        if self.kernel % 2 == 0:
            raise ValueError(f"{op}: expected an odd kernel, got {kernel}")
        self.n_classes = check_int(op, "n_classes", n_classes, 0)
        if first_type not in FIRST_TYPES:
            raise ValueError(f"{op}: expected first_type in {FIRST_TYPES}, got {first_type!r}")
        check_rng(op, rng)
        kw = dict(rng=rng, dtype=dtype)
        C = self.channels
        self.param_dtype = np.dtype(dtype)
        self.embedding = Embedding(self.num_codes, C, **kw)
        self.layers = [GatedLayer(C, self.kernel, i == 0, self.n_classes, first_type, **kw)
                       for i in range(self.n_layers)]
        self.head = [ReLU(), Conv2d(C, C, 1, **kw), ReLU(inplace=True),
                     Conv2d(C, self.num_codes, 1, **kw)]
        self._cache = None
        self._positions = 1

    # -- checks ----------------------------------------------------------------
    def check_codes(self, codes, labels=None, op="PixelCNN.loss"):
        """ValueError unless codes are integers (N, H, W) in [0, K) and labels
        (with classes) integers (N,) in [0, n_classes)."""
        xp = get_xp(codes) if hasattr(codes, "dtype") else np
        codes = xp.asarray(codes)
        K = self.num_codes
        if codes.ndim != 3:
            raise ValueError(f"{op}: expected codes of shape (N, H, W), got {codes.shape}")
        if codes.dtype.kind not in "iu":
            raise ValueError(f"{op}: expected integer codes, got dtype {codes.dtype}")
        if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= K):
            raise ValueError(f"{op}: expected codes in [0, {K}), got range "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        if self.n_classes:
            if labels is None:
                raise ValueError(f"{op}: this prior is class-conditional: pass labels")
            labels = xp.asarray(labels)
            if labels.shape != (codes.shape[0],) or labels.dtype.kind not in "iu":
                raise ValueError(f"{op}: expected integer labels of shape ({codes.shape[0]},), "
                                 f"got {labels.dtype} {labels.shape}")
            if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
                raise ValueError(f"{op}: expected labels in [0, {self.n_classes}), got range "
                                 f"[{int(labels.min())}, {int(labels.max())}]")
        elif labels is not None:
            raise ValueError(f"{op}: this prior has no classes (n_classes=0), got labels")
        return codes, labels

    # -- forward ----------------------------------------------------------------
    def embed(self, codes):
        """codes (N, H, W) -> e (N, C, H, W)."""
        return get_xp(self.embedding.weight.data).moveaxis(self.embedding.forward(codes), 3, 1)

    def forward_embedded(self, e, labels=None):
        """e (N, C, H, W) -> logits (N, K, H, W): both stacks and the head."""
        v, h, s = e, e, None
        for i, layer in enumerate(self.layers):
            v, h, skip = layer.forward(v, h, labels, last=i == self.n_layers - 1)
            if s is None:
                s = skip
            else:
                s += skip
        for module in self.head:
            s = module.forward(s)
        return s

    def logits(self, codes, labels=None):
        """The K logits (N, K, H, W) of p(z_p | z_<p, y) at every position."""
        codes, labels = self.check_codes(codes, labels, "PixelCNN.logits")
        return self.forward_embedded(self.embed(codes), labels)

    # -- loss and its backward -----------------------------------------------------
    def loss(self, codes, labels=None, rng=None, eps=None, step=None, training=True,
             check_inputs=True):
        """Mean over the batch of -log p(z | y) in nats per code map; ``(loss, parts)``.

        ``rng``, ``eps``, ``step``, ``training`` and ``check_inputs`` are part of
        every model's signature and unused (the prior draws no noise, has no
        schedule, and always checks its integer codes: the check is cheap).

        -log p(z) = sum_p -log softmax(logits[:, p])[z_p] (softmax
        cross-entropy over K at every position). parts: 'nll' (the mean),
        'nll_per_map' (N,), 'bits_per_code' (the mean in bits per position).
        """
        codes, labels = self.check_codes(codes, labels)
        logits = self.forward_embedded(self.embed(codes), labels)
        nll, ce_cache = losses.softmax_cross_entropy_forward(logits, codes)
        self._cache = (codes.shape[0], ce_cache)
        mean = nll.mean()
        positions = self._positions = codes.shape[1] * codes.shape[2]
        return mean, {"nll": mean, "nll_per_map": nll,
                      "bits_per_code": mean / positions / np.log(2)}

    def backward_embedded(self, dlogits):
        """d logits (N, K, H, W) -> d e (N, C, H, W), accumulating every
        parameter gradient except the embedding's."""
        ds = dlogits
        for module in reversed(self.head):
            ds = module.backward(ds)
        dv, dh = None, None                        # the last v and h feed nothing
        for layer in reversed(self.layers):
            dv, dh = layer.backward(dv, dh, ds)
        return dv + dh                             # e feeds both stacks

    def backward(self):
        """Accumulate the gradient of the last ``loss`` into every parameter.

        loss = 1/N sum_n CE_n, read backwards: softmax cross-entropy -> head
        -> the layers in reverse (skip gradient into each, residual and
        vertical gradients carried down) -> both stacks' inputs -> embedding.
        """
        if self._cache is None:
            raise RuntimeError("PixelCNN.backward: call loss() first")
        n, ce_cache = self._cache
        self._cache = None
        xp, dtype = self.xp, self.param_dtype
        dlogits = losses.softmax_cross_entropy_backward(xp.full(n, 1.0 / n, dtype=dtype),
                                                        ce_cache)
        de = self.backward_embedded(dlogits)
        self.embedding.backward(xp.moveaxis(de, 1, 3))


    # -- evaluation and sampling -----------------------------------------------------
    def train_record(self, train_loss):
        """The epoch's mean training NLL (nats per map) also in bits per code."""
        return {"train_bits_per_code": train_loss / self._positions / np.log(2)}

    def test_metrics(self, codes, labels=None, batch_size=1000, rng=None):
        """NLL of the code maps ``codes`` (host (N, H, W)): 'test_nll' in nats
        per map (mean over maps), 'test_bits_per_code' = test_nll / (H W ln 2)."""
        total = 0.0
        for start in range(0, codes.shape[0], batch_size):
            zb = self.xp.asarray(codes[start:start + batch_size])
            yb = None if labels is None else self.xp.asarray(labels[start:start + batch_size])
            total += float(self.loss(zb, yb)[1]["nll_per_map"].sum())
        self._cache = None
        nll = total / codes.shape[0]
        return {"test_nll": nll,
                "test_bits_per_code": nll / (codes.shape[1] * codes.shape[2]) / np.log(2)}

    def sample(self, n, rng, labels=None, temperature=1.0, height=7, width=7):
        """Ancestral sampling: n code maps (n, height, width), host int64.

        In raster order, z_p ~ softmax(logits_p(z_<p, y) / T), p = (i, j):
        the vertical stack runs once per row on rows 0..i (its row i reads
        rows above only), the horizontal stack and head once per position on
        row i, columns 0..j (they read nothing to the right): the same logits
        as :meth:`logits` on the whole map, at about a fifth of the work. z_p
        is drawn by the inverse CDF of one uniform from ``rng`` (a NumPy
        generator: the same draws on every device). T < 1 sharpens.
        """
        n = check_int("PixelCNN.sample", "n", n, 1)
        if not (temperature > 0 and np.isfinite(temperature)):
            raise ValueError(f"PixelCNN.sample: expected a temperature > 0, got {temperature}")
        check_rng("PixelCNN.sample", rng)
        if labels is not None:
            labels = np.broadcast_to(np.asarray(labels), (n,))
        codes = np.zeros((n, height, width), dtype=np.int64)
        self.check_codes(codes, labels, "PixelCNN.sample")
        xp = self.xp
        y = None if labels is None else xp.asarray(labels)
        for i in range(height):
            # the vertical stack at row i reads rows < i only: once per row
            v, a_vs = self.embed(xp.asarray(codes[:, :i + 1])), []
            for layer in self.layers:
                a_v, v = layer.vertical(v, y)
                a_vs.append(a_v[:, :, i:i + 1])
            for j in range(width):
                # the horizontal stack at (i, j) reads row i, columns <= j
                h = self.embed(xp.asarray(codes[:, i:i + 1, :j + 1]))
                s = 0
                for layer, a_v in zip(self.layers, a_vs):
                    h, skip = layer.horizontal(h, a_v[:, :, :, :j + 1], y)
                    s = s + skip
                for module in self.head:
                    s = module.forward(s)
                logits = to_numpy(s[:, :, 0, j]).astype(np.float64) / temperature
                p = np.exp(logits - logits.max(axis=1, keepdims=True))
                cdf = np.cumsum(p, axis=1)
                u = rng.random(n)[:, None] * cdf[:, -1:]
                codes[:, i, j] = np.minimum((cdf <= u).sum(axis=1), self.num_codes - 1)
        return codes


def multiply_adds(model, height=7, width=7):
    """Multiply-adds of one forward of ``model`` on one height x width code map
    (every convolution's out * in * KH * KW per position; gates and sums left out)."""
    convs = [m for layer in model.layers for m in (layer.v_conv, layer.h_conv, layer.link,
                                                  layer.res, layer.skip)]
    convs += [m for m in model.head if isinstance(m, Conv2d)]
    return height * width * sum(c.weight.size for c in convs)


#: the defaults of :func:`pixelcnn`
DEFAULTS = {"num_codes": 128, "channels": 64, "layers": 6, "kernel": 3}


def pixelcnn(num_codes=DEFAULTS["num_codes"], channels=DEFAULTS["channels"],
             layers=DEFAULTS["layers"], kernel=DEFAULTS["kernel"], n_classes=0, rng=None,
             dtype=np.float32, latent_dim=0, **_ignored):
    """Build the gated PixelCNN prior (defaults in the module docstring).
    ``latent_dim`` and ``_ignored`` take the VAE options every builder receives
    (scratchvae.config refuses them for this model)."""
    rng = np.random.default_rng(0) if rng is None else rng
    return PixelCNN(num_codes, channels, layers, kernel, n_classes, rng=rng, dtype=dtype)
