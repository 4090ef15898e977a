"""Registry entries of the PixelCNN ops: masked convolution (scratchvae/ops/conv.py)
and the embedding and class-conditional bias (scratchvae/ops/embedding.py).

The masked convolution is checked w.r.t. x, W and b with the mask held
fixed: its weight gradient must be Conv2d's times the mask, 0 where the mask
is. The embedding ops are checked w.r.t. the table (and h), with the
integer indices held fixed and drawn with repeats, so that the scatter-add
sums several rows into one. All three are linear in what is differentiated:
the central difference is exact up to round-off.
"""
import numpy as np

from ..layers.conv import MaskedConv2d
from ..layers.embedding import ClassBias, Embedding
from ..ops import conv as C
from ..ops import embedding as E
from .conv import KERNELS, REFERENCES
from .core import check_module, gradcheck
from .problems import Problem
from .spec import Case, Check, OpSpec

#: (mask type, N, C, H, W, O, kernel, bias); stride 1, padding kernel // 2
MASKED_CONV2D_CASES = (
    ("A", 2, 3, 5, 5, 4, 3, True),             # a first layer
    ("B", 2, 2, 6, 5, 3, 5, False),            # the centre kept, no bias
    ("B", 1, 5, 4, 6, 4, (3, 5), True),        # rectangular; C = 5: window classes
)


def _masked_conv2d_case(case):
    kind, N, C_in, H, W, O, k, bias = case
    kh, kw = (k, k) if np.isscalar(k) else k

    def make(rng):
        return Problem({"x": rng.standard_normal((N, C_in, H, W)),
                        "W": rng.standard_normal((O, C_in, kh, kw)),
                        "mask": C.pixelcnn_mask(kind, O, C_in, kh, kw, dtype=np.float64),
                        "b": rng.standard_normal(O) if bias else None,
                        "stride": 1, "padding": (kh // 2, kw // 2)},
                       ("x", "W", "b" if bias else None))
    return Case(f"masked_conv2d op type {kind} N={N} C={C_in} {H}x{W} O={O} k={k} "
                f"bias={bias}", make)


def _embedding(index_shape, count=5, dim=3):
    def make(rng):
        indices = rng.integers(0, count, size=index_shape)
        return Problem({"indices": indices, "table": rng.standard_normal((count, dim))},
                       ("table",))
    return make


def _class_bias(rng):
    return Problem({"h": rng.standard_normal((4, 3, 2, 3)),
                    "labels": np.array([2, 0, 2, 4]),          # class 2 twice, 1 and 3 unused
                    "table": rng.standard_normal((5, 3))}, ("h", "table"))


def _masked_module_check(name, kind):
    def run(rng):
        module = MaskedConv2d(3, 4, 3, kind, rng=rng, dtype=np.float64)
        return check_module(name, module, rng.standard_normal((2, 3, 5, 4)), rng=rng)
    return Check(name, run)


def _embedding_module_check(name):
    """Embedding(5, 3) on indices (2, 4, 3) w.r.t. its table."""
    def run(rng):
        module = Embedding(5, 3, rng=rng, dtype=np.float64)
        indices = rng.integers(0, 5, size=(2, 4, 3))
        G = rng.standard_normal((2, 4, 3, 3))
        module.zero_grad()
        module.forward(indices)
        module.backward(G)
        return gradcheck(lambda: float(np.sum(module.forward(indices) * G)),
                         {"weight": module.weight.data}, {"weight": module.weight.grad},
                         name=name, rng=rng)
    return Check(name, run)


def _class_bias_module_check(name):
    """ClassBias(4, 3) on h (3, 3, 2, 2) and labels, w.r.t. h and its table."""
    def run(rng):
        module = ClassBias(4, 3, rng=rng, dtype=np.float64)
        h, labels = rng.standard_normal((3, 3, 2, 2)), np.array([1, 3, 1])
        G = rng.standard_normal(h.shape)
        module.zero_grad()
        module.forward(h, labels)
        dh = module.backward(G)
        return gradcheck(lambda: float(np.sum(module.forward(h, labels) * G)),
                         {"input": h, "weight": module.weight.data},
                         {"input": dh, "weight": module.weight.grad}, name=name, rng=rng)
    return Check(name, run)


SPECS = (
    OpSpec(
        "masked_conv2d", C.masked_conv2d_forward, C.masked_conv2d_backward,
        cases=tuple(_masked_conv2d_case(c) for c in MASKED_CONV2D_CASES),
        checks=(_masked_module_check("MaskedConv2d(3, 4, 3, 'A')", "A"),
                _masked_module_check("MaskedConv2d(3, 4, 3, 'B')", "B")),
        implementations=("reference", "cpu", "cuda"), kernels=KERNELS, references=REFERENCES,
        wrapper=MaskedConv2d, tests=("tests/test_pixelcnn_ops.py", "tests/test_conv.py")),
    OpSpec(
        "embedding", E.embedding_forward, E.embedding_backward,
        cases=(Case("Embedding (indices (4, 3), table (5, 3))", _embedding((4, 3))),
               Case(None, _embedding((7,))),
               Case(None, _embedding((2, 3, 3)))),
        checks=(_embedding_module_check("Embedding(5, 3) on indices (2, 4, 3)"),),
        derivation=E, wrapper=Embedding, tests=("tests/test_pixelcnn_ops.py",)),
    OpSpec(
        "class_bias", E.class_bias_forward, E.class_bias_backward,
        cases=(Case("ClassBias (h (4, 3, 2, 3), 5 classes)", _class_bias),),
        checks=(_class_bias_module_check("ClassBias(4, 3) on h (3, 3, 2, 2)"),),
        derivation=E, wrapper=ClassBias, tests=("tests/test_pixelcnn_ops.py",)),
)
