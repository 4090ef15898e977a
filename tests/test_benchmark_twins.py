"""The PyTorch twins (scratchvae/twins/models.py) are the same models as scratchvae's
(skipped when PyTorch is not installed)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scratchvae.twins.models import MODELS  # noqa: E402
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


@pytest.mark.parametrize("name", ["mlp-vae", "conv-vae", "conv-cvae"])
def test_twin_from_our_weights_and_noise_gives_our_loss_and_gradients(name):
    """What benchmarks/paired_quality.py relies on: with our weights copied in
    and our eps passed, the twin computes our loss and our gradients."""
    from scratchvae.twins.models import twin_parameters_in_our_order, twin_with_weights_of

    rng = np.random.default_rng(3)
    ours = build_model(name, latent_dim=DEFAULT_LATENT_DIM[name], rng=rng)
    twin = twin_with_weights_of(ours, name)
    x = rng.random((5, 1, 28, 28)).astype(np.float32)
    eps = rng.standard_normal((1, 5, DEFAULT_LATENT_DIM[name])).astype(np.float32)
    labels = np.array([0, 3, 7, 9, 9])
    loss, _ = ours.loss(x, eps=eps, labels=labels)
    ours.backward()
    twin_loss = twin.loss(torch.from_numpy(x), torch.from_numpy(labels),
                          eps=torch.from_numpy(eps[0]))[0]
    twin_loss.backward()
    np.testing.assert_allclose(float(loss), twin_loss.item(), rtol=1e-5)
    for p, q in zip(twin_parameters_in_our_order(twin), ours.parameters(), strict=True):
        np.testing.assert_allclose(np.asarray(q.grad), p.grad.numpy(), rtol=1e-3, atol=1e-5)


def test_vq_twin_from_our_weights_gives_our_loss_and_gradients():
    from scratchvae.twins.models import twin_parameters_in_our_order, twin_with_weights_of

    rng = np.random.default_rng(4)
    ours = build_model("vq-vae", latent_dim=DEFAULT_LATENT_DIM["vq-vae"], rng=rng)
    twin = twin_with_weights_of(ours, "vq-vae").eval()      # eval: no restarts in either
    x = rng.random((5, 1, 28, 28)).astype(np.float32)
    loss, parts = ours.loss(x, training=False)
    ours.backward()
    twin_loss, twin_recon, _ = twin.loss(torch.from_numpy(x))
    twin_loss.backward()
    np.testing.assert_allclose(float(loss), twin_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(float(parts["recon"]), twin_recon.item(), rtol=1e-5)
    for p, q in zip(twin_parameters_in_our_order(twin), ours.parameters(), strict=True):
        np.testing.assert_allclose(np.asarray(q.grad), p.grad.numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("init", ["normal", "uniform"])
def test_vq_twin_restarts_dead_codes_with_encoder_outputs(init):
    torch.manual_seed(0)
    twin = MODELS["vq-vae"](codebook_init=init)
    with torch.no_grad():
        twin.codebook.data[1:] = 1e3               # every vector picks code 0
        twin.codebook.data[0] = 0
    x = torch.rand(4, 1, 28, 28)
    twin.loss(x)                                   # training mode: restarts after the forward
    rows = twin.encoder(x).permute(0, 2, 3, 1).reshape(-1, 16)
    fresh = twin.codebook.data[1:]
    assert torch.all(twin.codebook.data[0] == 0)
    assert all(bool((rows == code).all(dim=1).any()) for code in fresh)
    assert len({tuple(code.tolist()) for code in fresh}) == len(fresh)   # drawn without replacement
    metrics = twin.test_metrics(x.numpy())
    assert metrics["codes_used"] > 1 and metrics["test_recon"] > 0
    if init == "uniform":
        fresh_twin = MODELS["vq-vae"](codebook_init="uniform")
        assert float(fresh_twin.codebook.detach().abs().max()) <= 1 / 128


def _prior_and_codes(n_classes, channels, layers, seed=5):
    """Our PixelCNN prior, random codes (5, 7, 7) in [0, 128) and labels (with classes)."""
    from scratchvae.models.pixelcnn import pixelcnn

    rng = np.random.default_rng(seed)
    ours = pixelcnn(channels=channels, layers=layers, n_classes=n_classes, rng=rng)
    codes = rng.integers(0, 128, size=(5, 7, 7))
    labels = rng.integers(0, n_classes, size=5) if n_classes else None
    return ours, codes, labels


def _assert_prior_twin_agrees(ours, twin, codes, labels):
    """The twin's loss, bits per code and every parameter gradient are ours."""
    from scratchvae.twins.models import twin_parameters_in_our_order

    loss, parts = ours.loss(codes, labels)
    ours.backward()
    twin_loss, _, twin_bits = twin.loss(torch.from_numpy(codes),
                                        None if labels is None else torch.from_numpy(labels))
    twin_loss.backward()
    np.testing.assert_allclose(float(loss), twin_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(float(parts["bits_per_code"]), twin_bits.item(), rtol=1e-5)
    for p, q in zip(twin_parameters_in_our_order(twin), ours.parameters(), strict=True):
        # the last layer's residual feeds nothing: no gradient in the twin, zero in ours
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        np.testing.assert_allclose(np.asarray(q.grad), grad.numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("n_classes", [0, 10])
@pytest.mark.parametrize("channels, layers", [(8, 3), (64, 6)])   # small, and the default
def test_pixelcnn_twin_from_our_weights_gives_our_loss_and_gradients(n_classes, channels,
                                                                     layers):
    from scratchvae.twins.models import twin_with_weights_of

    ours, codes, labels = _prior_and_codes(n_classes, channels, layers)
    twin = twin_with_weights_of(ours, "pixelcnn")
    assert sum(p.numel() for p in twin.parameters()) == ours.num_parameters()
    _assert_prior_twin_agrees(ours, twin, codes, labels)


@pytest.mark.parametrize("flaw", ["first layer reads the current code", "no link"])
def test_pixelcnn_twin_agreement_catches_a_wrong_twin(flaw):
    from scratchvae.twins.models import twin_with_weights_of

    ours, codes, labels = _prior_and_codes(10, 8, 3)
    twin = twin_with_weights_of(ours, "pixelcnn")
    if flaw == "no link":
        for layer in twin.layers:
            layer.link.forward = torch.zeros_like
    else:
        twin.layers[0].h_shift = 0
    with pytest.raises(AssertionError):
        _assert_prior_twin_agrees(ours, twin, codes, labels)


# --------------------------------------------------------------------------
# iwae-1l: the twin with k samples and scratchvae's objectives
# --------------------------------------------------------------------------

def _iwae_pair(objective, k, seed=6, n=5):
    """Our iwae-1l with ``objective`` over k samples, its twin holding our weights,
    binarised images (n) and our eps (k, n, 50)."""
    from scratchvae.twins.models import twin_with_weights_of

    rng = np.random.default_rng(seed)
    options = {} if objective == "elbo" else {"objective": objective}
    ours = build_model("iwae-1l", rng=rng, n_samples=k, **options)
    twin = twin_with_weights_of(ours, "iwae-1l")
    twin.objective, twin.n_samples = objective, k
    x = (rng.random((n, 1, 28, 28)) < 0.3).astype(np.float32)
    eps = rng.standard_normal((k, n, 50)).astype(np.float32)
    return ours, twin, x, eps


def _assert_iwae_twin_agrees(ours, twin, x, eps):
    """The twin's loss is ours to rounding; each gradient ours within float32 rounding
    of its largest entry (2e-4 of it: the k rows are summed in other orders)."""
    from scratchvae.twins.models import twin_parameters_in_our_order

    loss, parts = ours.loss(x, eps=eps)
    ours.backward()
    twin_loss = twin.loss(torch.from_numpy(x), eps=torch.from_numpy(eps))[0]
    twin_loss.backward()
    np.testing.assert_allclose(float(loss), twin_loss.item(), rtol=2e-6)
    if "bound" in parts:
        np.testing.assert_allclose(-float(parts["bound"]), twin_loss.item(), rtol=2e-6)
    for p, q in zip(twin_parameters_in_our_order(twin), ours.parameters(), strict=True):
        scale = float(np.abs(np.asarray(q.grad)).max())
        np.testing.assert_allclose(np.asarray(q.grad), p.grad.numpy(), rtol=1e-4,
                                   atol=2e-4 * scale)


@pytest.mark.parametrize("k", [1, 5])
def test_iwae_1l_twin_gives_our_elbo_and_its_gradients(k):
    _assert_iwae_twin_agrees(*_iwae_pair("elbo", k))


def test_the_iwae_1l_agreement_catches_a_twin_of_another_objective():
    ours, twin, x, eps = _iwae_pair("elbo", 5)
    twin.objective = "iwae"
    with pytest.raises(AssertionError):
        _assert_iwae_twin_agrees(ours, twin, x, eps)


def _vae_takes_an_objective():
    import inspect

    from scratchvae.models.vae import VAE
    return "objective" in inspect.signature(VAE.__init__).parameters


@pytest.mark.skipif(not _vae_takes_an_objective(),
                    reason="scratchvae's VAE has no objective option in this tree")
@pytest.mark.parametrize("objective, k", [("iwae", 1), ("iwae", 5), ("iwae", 50),
                                          ("dreg", 5)])
def test_iwae_1l_twin_gives_our_bound_and_its_gradients(objective, k):
    _assert_iwae_twin_agrees(*_iwae_pair(objective, k))


def test_the_dreg_twin_moves_the_encoders_gradient_alone():
    """DReG's twin: IWAE's loss value and decoder gradient; another encoder gradient."""
    grads = {}
    for objective in ("iwae", "dreg"):
        _, twin, x, eps = _iwae_pair("elbo", 5)
        twin.objective = objective
        loss = twin.loss(torch.from_numpy(x), eps=torch.from_numpy(eps))[0]
        loss.backward()
        grads[objective] = (loss.item(), [p.grad.clone() for p in twin.encoder.parameters()],
                            [p.grad.clone() for p in twin.decoder.parameters()])
    (li, ei, di), (ld, ed, dd) = grads["iwae"], grads["dreg"]
    assert li == pytest.approx(ld, rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
               for a, b in zip(di, dd))
    assert not any(torch.allclose(a, b, rtol=1e-3) for a, b in zip(ei, ed))
