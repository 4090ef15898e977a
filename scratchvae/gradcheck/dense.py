"""Registry entries of the linear op and the shape ops (scratchvae/ops/linear.py,
scratchvae/ops/shape.py), checked through their Modules
(scratchvae/layers/dense.py) and as functional pairs."""
from kernels.gemm import matmul, matmul_reference
from kernels.layout import ascontiguous, ascontiguous_reference

from ..layers import Concat, Flatten, Linear, Reshape, Sequential, Tanh
from ..ops import linear as L
from ..ops import shape as S
from .problems import F64, Problem, channels_last
from .spec import Case, OpSpec, module_check


def _linear(rng):
    return Problem({"x": rng.standard_normal((3, 5)), "W": rng.standard_normal((4, 5)),
                    "b": rng.standard_normal(4)}, ("x", "W", "b"))


def _flatten(rng):
    return Problem({"x": rng.standard_normal((2, 3, 4, 5))}, ("x",))


def _reshape(in_shape, shape):
    def make(rng):
        return Problem({"x": rng.standard_normal(in_shape), "shape": shape}, ("x",))
    return make


def _concat_pair(rng):
    return Problem({"a": rng.standard_normal((3, 2)), "b": rng.standard_normal((3, 4)),
                    "axis": 1}, ("a", "b"))


def concat_pair_forward(a, b, axis):
    """concat_forward of the list [a, b]: the inputs by name, for the check."""
    return S.concat_forward([a, b], axis)


def concat_pair_backward(dy, cache):
    """concat_backward's list of gradients as a tuple (da, db)."""
    return tuple(S.concat_backward(dy, cache))


SPECS = (
    OpSpec(
        "linear", L.linear_forward, L.linear_backward,
        cases=(Case(None, _linear),),
        checks=(module_check("Linear", lambda rng: Linear(5, 4, rng=rng, dtype=F64), (3, 5)),
                module_check("Sequential(Linear, Tanh, Linear)",
                             lambda rng: Sequential(Linear(5, 6, rng=rng, dtype=F64), Tanh(),
                                                    Linear(6, 3, rng=rng, dtype=F64)), (4, 5))),
        implementations=("reference", "cpu"), kernels=(matmul,), references=(matmul_reference,),
        wrapper=Linear, tests=("tests/test_kernels_gemm.py", "tests/test_ops.py")),
    OpSpec(
        "flatten", S.flatten_forward, S.flatten_backward,
        cases=(Case(None, _flatten),),
        checks=(module_check("Flatten", lambda rng: Flatten(), (2, 3, 4)),
                module_check("Flatten (channels-last input)", lambda rng: Flatten(),
                             (2, 3, 4, 5), layout=channels_last)),
        implementations=("reference", "cpu"),
        kernels=(ascontiguous,), references=(ascontiguous_reference,),
        wrapper=Flatten, tests=("tests/test_kernels_layout.py", "tests/test_ops.py")),
    OpSpec(
        "reshape", S.reshape_forward, S.reshape_backward,
        # (N, 60) -> (N, 3, 4, 5) as in the conv decoders, and an image to rows
        cases=(Case(None, _reshape((2, 60), (3, 4, 5))),
               Case(None, _reshape((2, 3, 4, 5), (60,)))),
        checks=(module_check("Reshape", lambda rng: Reshape(3, 4), (2, 12)),),
        implementations=("reference", "cpu"),
        kernels=(ascontiguous,), references=(ascontiguous_reference,),
        wrapper=Reshape, tests=("tests/test_ops.py",)),
    OpSpec(
        "concat", S.concat_forward, S.concat_backward,
        cases=(Case("Concat", _concat_pair),),
        check_forward=concat_pair_forward, check_backward=concat_pair_backward,
        wrapper=Concat, tests=("tests/test_ops.py",)),
)
