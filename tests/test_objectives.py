"""The k-sample objectives of the VAE (scratchvae/models/vae.py): IWAE, DReG, STL.

- IWAE with k = 1 against the ELBO on the same noise: the same likelihood term
  and decoder gradient bit for bit; the encoder's differs only by the KL,
  sampled (log q - log p) instead of closed form, by an explicit formula;
- Jensen: L_k >= the mean of the k log-weights (the ELBO estimate on the same
  samples);
- DReG against its surrogate (finite differences, the registry's check),
  unbiased for IWAE's encoder gradient (Monte Carlo on a linear-Gaussian
  model, within 4 standard errors per coordinate), and a wrong weight caught;
- STL: IWAE's k = 1 gradient minus the score term, by an explicit formula;
- the command line: its errors (exit 2) and a tiny IWAE run that resumes
  bit for bit; examples/fig_gradient_snr.py --quick.
"""
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from scratchvae import checkpoints as ckpt
from scratchvae import files
from scratchvae.cli import main
from scratchvae.config import TrainConfig
from scratchvae.gradcheck import check_model, run_check
from scratchvae.gradcheck.objectives import surrogate_gradcheck
from scratchvae.gradcheck.problems import draw_vae, tiny_images
from scratchvae.layers import Linear, Sequential
from scratchvae.models import VAE, iwae_1l, mlp_cvae
from scratchvae.models.vae import log_weights
from scratchvae.ops.iwae import iwae_forward
from scratchvae.ops.sampler import reparameterize_forward

F64 = np.float64


def small(objective="elbo", k=1, seed=0, **options):
    """A float64 iwae-1l of 3x4 images, hidden 7, Z = 3."""
    return iwae_1l(image_shape=(1, 3, 4), hidden_dim=7, latent_dim=3,
                   rng=np.random.default_rng(seed), dtype=F64, objective=objective,
                   n_samples=k, **options)


def grads(model, x, eps, **kwargs):
    """(loss, parts, {name: gradient}) of one loss and backward."""
    model.zero_grad()
    loss, parts = model.loss(x, eps=eps, **kwargs)
    model.backward()
    return loss, parts, {name: p.grad.copy() for name, p in model.named_parameters()}


def encoder_grads(model, x, dh):
    """The encoder's parameter gradients of an upstream dh = d loss / d[mu | logvar]."""
    model.zero_grad()
    model.encode(x)
    model.encoder.backward(dh)
    return {"encoder." + name: p.grad.copy() for name, p in model.encoder.named_parameters()}


def problem(k, seed=1, n=3):
    rng = np.random.default_rng(seed)
    return tiny_images(rng, n, (1, 3, 4)), rng.standard_normal((k, n, 3))


# --------------------------------------------------------------------------
# IWAE
# --------------------------------------------------------------------------

def test_iwae_with_one_sample_is_the_elbo_with_the_kl_sampled():
    """k = 1: loss = recon + mean(log q(z|x) - log p(z)) on the same eps; the
    likelihood term and every decoder gradient equal the ELBO's bit for bit;
    the encoder's gradient is the ELBO's likelihood part (beta = 0) plus the
    sampled KL's, d/dmu = z / N, d/dlogvar = (-1/2 + z eps sigma / 2) / N."""
    x, eps = problem(1)
    n = x.shape[0]
    loss_e, parts_e, g_elbo = grads(small("elbo"), x, eps)
    _, _, g_recon = grads(small("elbo"), x, eps, beta=0.0)
    model = small("iwae")
    loss_i, parts_i, g_iwae = grads(model, x, eps)
    assert parts_i["recon"] == parts_e["recon"] and parts_i["kl"] == parts_e["kl"]
    assert parts_i["nelbo"] == parts_e["nelbo"]
    assert -loss_i == parts_i["bound"]
    mu, logvar = model.encode(x)
    sigma = np.exp(0.5 * logvar)
    z = mu + sigma * eps[0]
    kl_sampled = (-0.5 * (eps[0] ** 2 + logvar) + 0.5 * z * z).sum(axis=1)
    assert loss_i == pytest.approx(parts_e["recon"] + kl_sampled.mean(), rel=1e-13)
    assert loss_e == pytest.approx(parts_e["recon"] + parts_e["kl"], rel=1e-13)
    for name in g_iwae:
        if name.startswith("decoder."):
            assert np.array_equal(g_iwae[name], g_elbo[name]), name
    dh = np.concatenate([z, -0.5 + 0.5 * z * eps[0] * sigma], axis=1) / n
    g_kl = encoder_grads(model, x, dh)
    for name, g in g_kl.items():
        np.testing.assert_allclose(g_iwae[name], g_recon[name] + g, rtol=1e-12, atol=1e-15)
        assert not np.allclose(g_iwae[name], g_elbo[name])    # the closed-form KL differs


def test_iwae_bound_is_at_least_the_mean_log_weight():
    """Jensen: L_k = log mean_i w_i >= mean_i log w_i, image by image; the model's
    loss is -mean L_k and parts['bound'] its mean."""
    x, eps = problem(5, n=4)
    model = small("iwae", 5)
    loss, parts = model.loss(x, eps=eps)
    mu, logvar = model.encode(x)
    z, _ = reparameterize_forward(mu, logvar, eps)
    nll, _ = model._recon_forward(model.decode(z), np.concatenate([x] * 5), False)
    log_w = log_weights(nll, z, eps, logvar)
    bound, _ = iwae_forward(log_w)
    assert np.all(bound >= log_w.mean(axis=0))
    assert np.all(bound - log_w.mean(axis=0) > 1e-6)      # strictly, the weights differ
    assert float(parts["bound"]) == pytest.approx(bound.mean(), rel=1e-13)
    assert float(loss) == -float(parts["bound"])


def test_iwae_gradcheck_of_the_conditional_vae():
    """The conditional VAE inherits the objectives: its IWAE loss (k = 2) w.r.t.
    every parameter, against central differences."""
    rng = np.random.default_rng(0)
    model, x, kwargs = draw_vae(rng, mlp_cvae, L=2, n_classes=4, objective="iwae")
    result = check_model("mlp-cvae iwae", model, x, rng=rng, loss_kwargs=kwargs, tol=1e-7,
                         h=1e-4)
    assert result.passed, result.errors


# --------------------------------------------------------------------------
# DReG and STL
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["iwae-1l DReG surrogate (k=3)", "iwae-1l STL surrogate (k=1)",
                                  "iwae-1l loss (IWAE, k=3)"])
def test_registry_checks_pass(name):
    result = run_check(name)
    assert result.passed, result.errors


def test_surrogate_check_catches_the_iwae_gradient():
    """The surrogate's finite differences tell DReG's gradient from IWAE's."""
    rng = np.random.default_rng(0)
    model, x, kwargs = draw_vae(rng, iwae_1l, L=3, objective="iwae")
    assert not surrogate_gradcheck("iwae against S", model, x, kwargs["eps"], rng).passed


def test_dreg_decoder_gradient_is_iwae_and_k1_is_stl():
    x, eps = problem(3)
    _, _, g_iwae = grads(small("iwae", 3), x, eps)
    loss_d, parts_d, g_dreg = grads(small("dreg", 3), x, eps)
    for name in g_iwae:
        same = np.array_equal(g_iwae[name], g_dreg[name])
        assert same == name.startswith("decoder."), name
    x, eps = problem(1)
    _, _, g_stl = grads(small("stl"), x, eps)
    _, _, g_dreg1 = grads(small("dreg"), x, eps)
    assert all(np.array_equal(g_stl[name], g_dreg1[name]) for name in g_stl)


def test_stl_is_iwae_k1_without_the_score_term():
    """STL = IWAE (k = 1) - the score term: the encoder's gradient of
    1/N sum (d log q / d(mu, logvar) at z held) = 1/N [eps / sigma, (eps^2 - 1) / 2]."""
    x, eps = problem(1)
    n = x.shape[0]
    model = small("stl")
    loss_s, _, g_stl = grads(model, x, eps)
    loss_i, _, g_iwae = grads(small("iwae"), x, eps)
    assert loss_s == loss_i
    _, logvar = model.encode(x)
    sigma = np.exp(0.5 * logvar)
    dh = np.concatenate([eps[0] / sigma, 0.5 * (eps[0] ** 2 - 1)], axis=1) / n
    g_score = encoder_grads(model, x, dh)
    for name in g_stl:
        if name.startswith("decoder."):
            assert np.array_equal(g_stl[name], g_iwae[name]), name
        else:
            np.testing.assert_allclose(g_stl[name], g_iwae[name] - g_score[name], rtol=1e-11,
                                       atol=1e-14)
            assert np.abs(g_score[name]).max() > 1e-3


def linear_gaussian(objective, k, rng):
    """A linear-Gaussian VAE on 4-dimensional data: q(z|x) = N(A x + a, diag exp(B x + b)),
    p(x|z) = N(C z + c, I), Z = 2 (float64)."""
    encoder = Sequential(Linear(4, 4, rng=rng, dtype=F64))
    decoder = Sequential(Linear(2, 4, rng=rng, dtype=F64))
    return VAE(encoder, decoder, 2, image_shape=(4,), likelihood="gaussian", n_samples=k,
               objective=objective)


def encoder_gradient_draws(objective, k=3, groups=400, copies=50):
    """Encoder gradients of two images, each the mean of ``copies`` draws (the images
    repeated in the batch), for ``groups`` independent groups, on fixed
    parameters; rows (groups, encoder parameters). Seeded: the same draws for
    every objective."""
    wrong = objective == "wrong-dreg"
    model = linear_gaussian("dreg" if wrong else objective, k, np.random.default_rng(3))
    if wrong:   # DReG's path with w~ for w~^2: STL's path at k > 1
        model.objective = "stl"
    x = np.repeat(np.array([[2.0, -1.0, 0.5, 1.5], [-0.5, 1.0, 1.0, 0.0]]), copies // 2, axis=0)
    rng = np.random.default_rng(4)
    rows = []
    for _ in range(groups):
        model.zero_grad()
        model.loss(x, eps=rng.standard_normal((k, copies, 2)), check_inputs=False)
        model.backward()
        rows.append(np.concatenate([p.grad.ravel() for p in model.encoder.parameters()]))
    return np.array(rows)


def standard_errors(a, b):
    """|mean(a - b)| / (std(a - b) / sqrt(rows)) per coordinate (paired draws)."""
    d = a - b
    return np.abs(d.mean(axis=0)) / (d.std(axis=0, ddof=1) / np.sqrt(d.shape[0]))


def test_dreg_and_iwae_k1_encoder_gradients_are_unbiased():
    """Monte Carlo, 20,000 draws on the same noise: DReG's encoder gradient has
    IWAE's mean (k = 3), and IWAE's with k = 1 the ELBO's (the closed-form KL is
    the sampled KL's mean), each within 4 standard errors per coordinate. The
    path term with w~ instead of w~^2 is off by many standard errors."""
    iwae = encoder_gradient_draws("iwae")
    assert standard_errors(encoder_gradient_draws("dreg"), iwae).max() < 4
    assert standard_errors(encoder_gradient_draws("wrong-dreg"), iwae).max() > 8
    iwae1 = encoder_gradient_draws("iwae", k=1)
    assert standard_errors(iwae1, encoder_gradient_draws("elbo", k=1)).max() < 4
    assert standard_errors(encoder_gradient_draws("stl", k=1), iwae1).max() < 4


# --------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------

@pytest.mark.parametrize("options, needle", [
    (dict(objective="stl", n_samples=2), "k = 1"),
    (dict(objective="iwae", beta=4.0), "beta=4.0"),
    (dict(objective="dreg", kl_warmup_steps=10), "kl_warmup_steps=10"),
    (dict(objective="vimco"), "objective"),
    (dict(n_samples=0), "n_samples >= 1"),
])
def test_model_refuses(options, needle):
    with pytest.raises(ValueError, match=needle):
        iwae_1l(image_shape=(1, 3, 4), hidden_dim=7, latent_dim=3, **options)


def test_loss_refuses_beta_with_a_bound():
    x, eps = problem(2)
    with pytest.raises(ValueError, match="beta"):
        small("iwae", 2).loss(x, eps=eps, beta=0.5)


@pytest.mark.parametrize("argv, needle", [
    (["--k", "0"], "argument --k/--n-samples/--samples: expected a positive integer, got 0"),
    (["--n-samples", "-1"], "expected a positive integer"),
    (["--objective", "elbow"], "invalid choice"),
])
def test_cli_argument_errors_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--sample"] + argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["--objective", "stl", "--k", "5"], "objective stl (sticking the landing) takes k = 1"),
    (["--objective", "iwae", "--model", "vq-vae"],
     "--objective iwae needs a Gaussian-latent VAE"),
    (["--objective", "dreg", "--model", "pixelcnn", "--vq-run", "x"],
     "--objective dreg needs a Gaussian-latent VAE"),
    (["--objective", "iwae", "--beta", "4"], "beta=4.0: a KL weight or schedule applies to the "
                                             "elbo objective only"),
])
def test_cli_usage_errors_exit_2(argv, needle, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--sample", "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "error:" in err
    assert not out.exists()


def test_config_without_objective_loads_as_elbo():
    assert TrainConfig.from_dict({"model": "iwae-1l", "n_samples": 5}).objective == "elbo"


def test_cli_trains_iwae_and_resumes_exactly(tmp_path):
    """train --model iwae-1l --objective iwae --k 5: metrics, config, and 1 + 1
    epochs equal to 2, bit for bit."""
    argv = ["train", "--model", "iwae-1l", "--objective", "iwae", "--k", "5", "--sample",
            "--batch-size", "32", "--train-limit", "64", "--test-limit", "32", "--no-progress",
            "--latent-dim", "10"]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert main(argv + ["--epochs", "2", "--out", straight]) == 0
    assert main(argv + ["--epochs", "1", "--out", split]) == 0
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    assert config["objective"] == "iwae" and config["n_samples"] == 5
    assert main(["train", "--resume", split, "--epochs", "2", "--no-progress"]) == 0
    a, _, _ = ckpt.load_checkpoint(straight)
    b, _, meta = ckpt.load_checkpoint(split)
    assert meta["epoch"] == 2 and all(np.array_equal(a[key], b[key]) for key in a)
    ra = files.read_jsonl(os.path.join(straight, "metrics.jsonl"))
    rb = files.read_jsonl(os.path.join(split, "metrics.jsonl"))
    for key in ("train_loss", "test_nelbo", "test_recon", "test_kl"):
        assert [r[key] for r in ra] == [r[key] for r in rb], key
    assert all(np.isfinite(r["train_loss"]) and 0 < r["train_loss"] for r in rb)
    assert rb[1]["train_loss"] < rb[0]["train_loss"]


def test_gradient_snr_example_runs_quick(tmp_path, capsys):
    """examples/fig_gradient_snr.py --quick: a PNG and one SNR per k, estimator and part;
    DReG's decoder gradient is IWAE's, so their decoder SNRs agree."""
    path = Path(__file__).resolve().parents[1] / "examples" / "fig_gradient_snr.py"
    spec = importlib.util.spec_from_file_location("fig_gradient_snr", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(["--quick", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "s.png")])
    assert Path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = {tuple(line.split()[:2]): line for line in capsys.readouterr().out.splitlines()
             if line.startswith(("iwae ", "dreg "))}
    assert sorted(lines) == [(e, p) for e in ("dreg", "iwae") for p in ("decoder", "encoder")]
    assert lines["iwae", "decoder"].split()[2:] == lines["dreg", "decoder"].split()[2:]
    assert lines["iwae", "encoder"].count("k=") == 3
