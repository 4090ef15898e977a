"""The PyTorch twins used by the benchmarks are the same models as scratchvae's
(skipped when PyTorch is not installed)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks.torch_models import MODELS  # noqa: E402
from scratchvae.models import DEFAULT_LATENT_DIM, build_model  # noqa: E402


@pytest.mark.parametrize("name", sorted(MODELS))
def test_twin_has_the_same_parameter_shapes(name):
    ours = build_model(name, latent_dim=DEFAULT_LATENT_DIM[name], rng=np.random.default_rng(0))
    twin = MODELS[name]()
    assert sum(p.numel() for p in twin.parameters()) == ours.num_parameters()
    assert (sorted(tuple(p.shape) for p in twin.parameters())
            == sorted(tuple(p.data.shape) for p in ours.parameters()))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_twin_loss_runs_on_a_batch(name):
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    loss, _, _ = MODELS[name]().loss(x, torch.tensor([0, 3, 7, 9]))
    assert torch.isfinite(loss) and loss.item() > 0
