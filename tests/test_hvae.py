"""iwae-2l, the two-stochastic-layer model (scratchvae/models/hvae.py): its
gradient checks, its log-weights against a direct NumPy computation of the five
densities, the two objectives against each other, and a tiny run through the
command line (train, evaluate, sample, resume)."""
import json
import os

import numpy as np
import pytest

from scratchvae import checkpoints as ckpt
from scratchvae import files
from scratchvae.cli import main
from scratchvae.config import TrainConfig
from scratchvae.gradcheck import run_check
from scratchvae.layers import Linear
from scratchvae.metrics import iw_nll
from scratchvae.models import DEFAULT_LATENT_DIM, MODELS, iwae_2l
from scratchvae.models import hvae
from scratchvae.quality import run_sampler
from scratchvae.rundir import load_run

CHECKS = ("iwae-2l loss (Monte-Carlo ELBO, k=3)", "iwae-2l loss (IWAE bound, k=3)",
          "iwae-2l STL surrogate (k=3)", "iwae-2l DReG surrogate (k=3)")
SMALL = dict(image_shape=(1, 3, 4), hidden_dim=7, z1_dim=4, hidden2_dim=5, latent_dim=3)


def small(objective="elbo", k=1, dtype=np.float64, seed=0):
    return iwae_2l(rng=np.random.default_rng(seed), dtype=dtype, objective=objective,
                   n_samples=k, **SMALL)


def images(n=5, seed=1, dtype=np.float64):
    return np.random.default_rng(seed).random((n, 1, 3, 4)).astype(dtype)


def test_registered_with_the_papers_widths():
    assert MODELS["iwae-2l"] is iwae_2l and DEFAULT_LATENT_DIM["iwae-2l"] == 50
    model = iwae_2l()
    assert model.num_parameters() == 521_084
    assert (model.z1_dim, model.latent_dim) == (100, 50)
    shapes = [layer.weight.shape for net in (model.encoder1, model.encoder2, model.prior1,
                                             model.decoder)
              for layer in net.layers if isinstance(layer, Linear)]
    assert shapes == [(200, 784), (200, 200), (200, 200),       # q(z1 | x) -> [mu1 | logvar1]
                      (100, 100), (100, 100), (100, 100),       # q(z2 | z1) -> [mu2 | logvar2]
                      (100, 50), (100, 100), (200, 100),        # p(z1 | z2) -> [m1 | v1]
                      (200, 100), (200, 200), (784, 200)]       # p(x | z1) -> logits


@pytest.mark.parametrize("name", CHECKS)
def test_whole_model_gradcheck(name):
    result = run_check(name)
    assert result.passed, str(result) + f" errors={result.errors}"
    assert len(result.errors) == 24   # every weight and bias of the four networks


def test_a_wrong_sampler_gradient_fails_the_gradcheck(monkeypatch):
    """The classic bug (sigma = exp(logvar) instead of exp(logvar / 2) in the
    backward only) is caught by the whole-model check."""
    right = hvae.reparameterize_backward

    def wrong(dz, cache):
        dmu, dlogvar = right(dz, cache)
        return dmu, 2 * dlogvar
    monkeypatch.setattr(hvae, "reparameterize_backward", wrong)
    assert not run_check(CHECKS[1]).passed


@pytest.mark.parametrize("objective, exact", [("stl", "elbo"), ("dreg", "iwae")])
def test_held_q_gradients_differ_from_the_bounds_only_in_q(objective, exact):
    """STL/DReG: the loss and the generative networks' gradient are the ELBO's/IWAE's;
    the surrogate check of the one fails for the other's backward."""
    x, k = images(), 3
    rng = np.random.default_rng(5)
    eps = (rng.standard_normal((k, 5, 4)), rng.standard_normal((k, 5, 3)))
    loss_a, _, ga = _loss_and_grads(small(objective, k), x, eps)
    loss_b, _, gb = _loss_and_grads(small(exact, k), x, eps)
    names = [name for name, _ in small().named_parameters()]
    assert loss_a == loss_b
    for name, a, b in zip(names, ga, gb):
        if name.startswith(("prior1", "decoder")):
            assert np.array_equal(a, b), name
        else:
            assert not np.allclose(a, b), name


def test_dreg_is_unbiased_for_the_iwae_gradient():
    """E[DReG] = E[IWAE gradient] of the inference networks, by Monte Carlo: one image
    repeated M times is M independent estimates per step; over B steps with the same
    noise for both, every element's mean difference is within 5 standard errors of 0.
    Reweighting the path term by w~ instead of w~^2 (IWAE-STL, biased) is caught."""
    M, B, k = 1000, 20, 5
    x = np.repeat(images(1), M, axis=0)
    iwae, dreg = small("iwae", k), small("dreg", k)
    rng = np.random.default_rng(2)
    diffs = {"dreg": [], "w~ instead of w~^2": []}
    for _ in range(B):
        eps = (rng.standard_normal((k, M, 4)), rng.standard_normal((k, M, 3)))
        base = _loss_and_grads(iwae, x, eps)[2]
        for key in diffs:
            dreg.zero_grad()
            dreg.loss(x, eps=eps)
            if key != "dreg":
                dreg._cache.w_norm = None   # phi's weights g = -w~ / N
            dreg.backward()
            diffs[key].append(np.concatenate([(p.grad - g).ravel() for (name, p), g
                                              in zip(dreg.named_parameters(), base)
                                              if name.startswith("encoder")]))
    z = {key: np.mean(d, axis=0) / (np.std(d, axis=0, ddof=1) / np.sqrt(B))
         for key, d in diffs.items()}
    assert np.abs(z["dreg"]).max() < 5
    assert np.abs(z["w~ instead of w~^2"]).max() > 20


def _mlp(net, h):
    """The tanh MLP ``net`` applied in plain NumPy (Linear: h W^T + b)."""
    linears = [layer for layer in net.layers if isinstance(layer, Linear)]
    for i, layer in enumerate(linears):
        h = h @ layer.weight.data.T + layer.bias.data
        if i < len(linears) - 1:
            h = np.tanh(h)
    return h


def _log_normal(z, mean, logvar):
    return -0.5 * ((z - mean) ** 2 / np.exp(logvar) + logvar + np.log(2 * np.pi)).sum(-1)


def test_log_importance_weights_match_the_densities():
    model, x, k = small(), images(), 4
    Z1, Z2 = model.z1_dim, model.latent_dim
    log_w = model.log_importance_weights(x, k, np.random.default_rng(7))
    eps1, eps2 = model.draw_eps(np.random.default_rng(7), k, x.shape[0])   # the same noise
    h = _mlp(model.encoder1, x.reshape(len(x), -1))
    mu1, lv1 = h[:, :Z1], h[:, Z1:]
    z1 = mu1 + np.exp(lv1 / 2) * eps1                                       # (k, N, Z1)
    h = _mlp(model.encoder2, z1)
    mu2, lv2 = h[..., :Z2], h[..., Z2:]
    z2 = mu2 + np.exp(lv2 / 2) * eps2
    h = _mlp(model.prior1, z2)
    logits = _mlp(model.decoder, z1)
    xs = x.reshape(1, len(x), -1)
    log_px = (xs * np.log(1 / (1 + np.exp(-logits)))
              + (1 - xs) * np.log(1 - 1 / (1 + np.exp(-logits)))).sum(-1)
    expected = (log_px + _log_normal(z1, h[..., :Z1], h[..., Z1:])
                + _log_normal(z2, 0.0, np.zeros_like(z2))
                - _log_normal(z1, mu1, lv1) - _log_normal(z2, mu2, lv2))
    assert log_w.shape == (k, x.shape[0])
    np.testing.assert_allclose(log_w, expected, rtol=1e-12, atol=1e-10)


def _loss_and_grads(model, x, eps):
    model.zero_grad()
    loss, parts = model.loss(x, eps=eps)
    model.backward()
    return loss, parts, [p.grad.copy() for p in model.parameters()]


def test_iwae_with_one_sample_is_the_elbo():
    x = images(dtype=np.float32)
    rng = np.random.default_rng(3)
    eps = (rng.standard_normal((1, 5, 4), dtype=np.float32),
           rng.standard_normal((1, 5, 3), dtype=np.float32))
    elbo = _loss_and_grads(small("elbo", dtype=np.float32), x, eps)
    iwae = _loss_and_grads(small("iwae", dtype=np.float32), x, eps)
    assert elbo[0] == iwae[0]                              # the loss, bit for bit
    assert float(iwae[1]["bound"]) == pytest.approx(-float(elbo[1]["nelbo"]), rel=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(elbo[2], iwae[2]))
    # and DReG is STL: w~ = 1
    stl = _loss_and_grads(small("stl", dtype=np.float32), x, eps)
    dreg = _loss_and_grads(small("dreg", dtype=np.float32), x, eps)
    assert stl[0] == dreg[0] == elbo[0]
    assert all(np.array_equal(a, b) for a, b in zip(stl[2], dreg[2]))


def test_the_bound_is_above_the_elbo_on_the_same_noise():
    x, k = images(), 5
    rng = np.random.default_rng(4)
    eps = (rng.standard_normal((k, 5, 4)), rng.standard_normal((k, 5, 3)))
    loss_iwae, parts, _ = _loss_and_grads(small("iwae", k), x, eps)
    loss_elbo, parts_elbo, _ = _loss_and_grads(small("elbo", k), x, eps)
    assert loss_iwae == -parts["bound"]
    assert loss_elbo == pytest.approx(parts_elbo["nelbo"], rel=1e-14)
    assert parts["nelbo"] == parts_elbo["nelbo"]           # the same parts under both
    log_w = small().log_importance_weights(x, k, np.random.default_rng(0))
    assert -parts["bound"] < parts["nelbo"]                 # L_k >= the Monte-Carlo ELBO
    per_image = np.log(np.exp(log_w).mean(axis=0))          # Jensen, image by image
    assert np.all(per_image >= log_w.mean(axis=0))


def test_iw_nll_runs_and_tightens():
    model, x = small(), images(8)
    metrics = model.test_metrics(x, batch_size=3, rng=np.random.default_rng(0))
    assert metrics["test_nelbo"] == pytest.approx(metrics["test_recon"] + metrics["test_kl"])
    result = iw_nll(model, x, k=200, chunk=70, batch_size=3, rng=np.random.default_rng(0))
    assert result["iw_k"] == 200 and np.isfinite(result["iw_nll"])
    assert result["iw_nll"] < metrics["test_nelbo"]


def test_sample_reconstruct_and_latent_maps():
    model, x = small(), images(4)
    rng = np.random.default_rng(0)
    s = model.sample(6, rng)
    assert s.shape == (6, 1, 3, 4) and np.all((s > 0) & (s < 1))
    assert model.reconstruct(x).shape == x.shape
    mu2, logvar2 = model.encode(x)
    assert mu2.shape == logvar2.shape == (4, 3)
    assert model.mean_image(model.decode(mu2)).shape == x.shape


@pytest.mark.parametrize("options, needle", [
    (dict(objective="rws"), "objective: iwae-2l trains with elbo, iwae, stl, dreg, got 'rws'"),
    (dict(beta=2.0), "beta: iwae-2l takes beta 1.0 only"),
    (dict(likelihood="gaussian"), "likelihood: iwae-2l takes likelihood 'bernoulli' only"),
    (dict(n_samples=0), "expected n_samples >= 1, got 0"),
])
def test_bad_options_are_refused(options, needle):
    with pytest.raises(ValueError, match=needle):
        iwae_2l(**SMALL, **options)


def test_bad_noise_and_backward_before_loss_are_refused():
    model, x = small(k=2), images(3)
    with pytest.raises(ValueError, match="pass rng"):
        model.loss(x)
    with pytest.raises(ValueError, match=r"expected eps = \(eps1, eps2\).*got ndarray"):
        model.loss(x, eps=np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="eps2"):
        model.loss(x, eps=(np.zeros((2, 3, 4)), np.zeros((1, 3, 3))))
    with pytest.raises(ValueError, match="beta 1 only"):
        model.loss(x, rng=np.random.default_rng(0), beta=0.5)
    with pytest.raises(RuntimeError, match="call loss"):
        model.backward()
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        model.loss(x * 2, rng=np.random.default_rng(0))


def test_config_refuses_what_the_model_does_not_take(capsys):
    with pytest.raises(ValueError, match="capacity_gamma: iwae-2l takes"):
        TrainConfig(model="iwae-2l", capacity_gamma=1.0, capacity_max=5.0)
    assert main(["train", "--model", "iwae-2l", "--kl-warmup-steps", "10"]) == 2
    assert "kl_warmup_steps: iwae-2l takes kl_warmup_steps 0 only" in capsys.readouterr().err


def test_cli_trains_evaluates_samples_and_resumes(tmp_path, capsys):
    argv = ["train", "--model", "iwae-2l", "--sample", "--batch-size", "32", "--train-limit",
            "96", "--test-limit", "64", "--samples", "2", "--no-progress"]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert main(argv + ["--epochs", "2", "--out", straight]) == 0
    assert main(argv + ["--epochs", "1", "--out", split]) == 0
    assert "iwae-2l: 521,084 parameters" in capsys.readouterr().out
    assert main(["train", "--resume", split, "--epochs", "2", "--no-progress"]) == 0
    a, _, _ = ckpt.load_checkpoint(straight)
    b, _, meta = ckpt.load_checkpoint(split)
    assert meta["epoch"] == 2 and sorted(a) == sorted(b) and len(a) == 24
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ra = files.read_jsonl(os.path.join(straight, "metrics.jsonl"))
    rb = files.read_jsonl(os.path.join(split, "metrics.jsonl"))
    for key in ("train_loss", "test_nelbo", "test_recon", "test_kl", "active_units",
                "active_units_z2"):
        assert [r[key] for r in ra] == [r[key] for r in rb], key
    assert rb[1]["train_loss"] < rb[0]["train_loss"]
    assert 0 < rb[1]["test_kl"] and 0 < rb[1]["test_recon"] < 784 * np.log(2)
    capsys.readouterr()

    assert main(["evaluate", "--checkpoint", split, "--json", "--iw-k", "100",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "iwae-2l" and result["iw_k"] == 100
    assert result["test_nelbo"] == pytest.approx(rb[1]["test_nelbo"], rel=1e-12)
    assert result["iw_nll"] < result["test_nelbo"]
    out = str(tmp_path / "samples.png")
    assert main(["sample", "--checkpoint", split, "--n", "16", "--out", out]) == 0
    assert os.path.getsize(out) > 0
    config, model, _ = load_run(split)
    sampler = run_sampler(config, model)      # evaluate --classifier scores its samples
    assert sampler(3, np.random.default_rng(0)).shape == (3, 1, 28, 28)


@pytest.mark.parametrize("objective", ["iwae", "dreg"])
def test_cli_trains_a_bound_and_records_it(tmp_path, capsys, objective):
    """`--objective iwae|dreg --k 3` reaches HierarchicalVAE through the config
    and the run trains to a finite loss."""
    out = str(tmp_path / objective)
    assert main(["train", "--model", "iwae-2l", "--sample", "--batch-size", "32",
                 "--train-limit", "96", "--test-limit", "64", "--objective", objective,
                 "--k", "3", "--epochs", "1", "--no-progress", "--out", out]) == 0
    config, model, _ = load_run(out)
    assert config.objective == objective and model.objective == objective
    assert model.n_samples == 3
    record = files.read_jsonl(os.path.join(out, "metrics.jsonl"))[0]
    assert np.isfinite(record["train_loss"]) and 0 < record["train_loss"] < 784 * np.log(2)
    capsys.readouterr()
