"""Registry entries of the elementwise activations (scratchvae/ops/activations.py).

Each activation is checked through its Module (scratchvae/layers/dense.py);
ReLU also on a channels-last input, the layout a convolution hands it, so
that its one-pass kernel (kernels/relu.py) is what the check differentiates.
The gate (y = tanh(a) * sigmoid(b) over the two halves of the channels) is
checked on a channels-last input too, for its fused kernel (kernels/gated.py).
"""
import kernels

from ..layers import LeakyReLU, ReLU, Sigmoid, Tanh
from ..layers.dense import Gate
from ..ops import activations as A
from .problems import Problem, away_from_zero, channels_last
from .spec import Case, OpSpec, module_check

SHAPE = (2, 3, 4, 5)        # 4-D: the generated tests also lay it out channels-last
GATE_SHAPE = (2, 6, 3, 4)   # (N, 2C, H, W): a = the first 3 channels, b = the last 3
KINK = "x = 0: inputs drawn at least 0.1 away (away_from_zero)"


def _input(kinked, **options):
    def make(rng):
        x = away_from_zero(rng, SHAPE) if kinked else rng.standard_normal(SHAPE)
        return Problem(dict(x=x, **options), ("x",))
    return (Case(None, make),)


SPECS = (
    OpSpec(
        "relu", A.relu_forward, A.relu_backward,
        cases=_input(kinked=True),
        checks=(module_check("ReLU", lambda rng: ReLU(), (3, 5), kinked=True),
                module_check("ReLU (channels-last input)", lambda rng: ReLU(), SHAPE,
                             kinked=True, layout=channels_last)),
        kinks=KINK, implementations=("reference", "cpu", "cuda"),
        kernels=(kernels.relu_forward, kernels.relu_backward),
        references=(kernels.relu_forward_reference, kernels.relu_backward_reference),
        wrapper=ReLU, tests=("tests/test_kernels_relu.py", "tests/test_ops.py")),
    OpSpec(
        "leaky_relu", A.leaky_relu_forward, A.leaky_relu_backward,
        cases=_input(kinked=True, negative_slope=0.2),
        checks=(module_check("LeakyReLU", lambda rng: LeakyReLU(0.2), (3, 5), kinked=True),),
        kinks=KINK, wrapper=LeakyReLU, tests=("tests/test_ops.py",)),
    OpSpec(
        "sigmoid", A.sigmoid_forward, A.sigmoid_backward,
        cases=_input(kinked=False),
        checks=(module_check("Sigmoid", lambda rng: Sigmoid(), (3, 5)),),
        wrapper=Sigmoid, tests=("tests/test_ops.py",)),
    OpSpec(
        "tanh", A.tanh_forward, A.tanh_backward,
        cases=_input(kinked=False),
        checks=(module_check("Tanh", lambda rng: Tanh(), (3, 5)),),
        wrapper=Tanh, tests=("tests/test_ops.py",)),
    OpSpec(
        "gated", A.gated_forward, A.gated_backward,
        cases=(Case(None, lambda rng: Problem(dict(x=rng.standard_normal(GATE_SHAPE)), ("x",))),
               Case(None, lambda rng: Problem(dict(x=3 * rng.standard_normal((5, 8))), ("x",)))),
        checks=(module_check("Gate", lambda rng: Gate(), (3, 4)),
                module_check("Gate (channels-last input)", lambda rng: Gate(), GATE_SHAPE,
                             layout=channels_last)),
        implementations=("reference", "cpu", "cuda"),
        kernels=(kernels.gated_forward, kernels.gated_backward),
        references=(kernels.gated_forward_reference, kernels.gated_backward_reference),
        derivation=kernels.gated, wrapper=Gate,
        tests=("tests/test_kernels_gated.py",)),
)
