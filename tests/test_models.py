"""The MLP VAE: architecture, loss against an independent PyTorch computation,
reproducibility; and the optimisers against torch.optim."""
import numpy as np
import pytest

from scratchvae.layers import Parameter
from scratchvae.models import build_model, mlp_vae
from scratchvae.optimizers import SGD, Adam, clip_grad_norm


def test_mlp_vae_parameter_count_and_names():
    model = build_model("mlp-vae", latent_dim=20, rng=np.random.default_rng(0))
    assert model.num_parameters() == 652_824
    shapes = {n: p.shape for n, p in model.named_parameters()}
    assert shapes["encoder.layers.1.weight"] == (400, 784)
    assert shapes["encoder.layers.3.weight"] == (40, 400)
    assert shapes["decoder.layers.2.weight"] == (784, 400)


def test_unknown_model_and_bad_input():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope")
    model = mlp_vae(rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"expected images of shape \(\*, 1, 28, 28\), got \(2, 784\)"):
        model.loss(np.zeros((2, 784), np.float32), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="pass rng"):
        model.loss(np.zeros((2, 1, 28, 28), np.float32))


def _torch_vae_loss(torch, model, x, eps, beta):
    """The same loss written independently with torch autograd, from our weights."""
    p = {n: torch.tensor(v.data, requires_grad=True) for n, v in model.named_parameters()}
    F = torch.nn.functional
    xt = torch.tensor(x)
    h = F.relu(F.linear(xt.reshape(len(x), -1), p["encoder.layers.1.weight"], p["encoder.layers.1.bias"]))
    h = F.linear(h, p["encoder.layers.3.weight"], p["encoder.layers.3.bias"])
    Z = model.latent_dim
    mu, logvar = h[:, :Z], h[:, Z:]
    z = (mu + torch.exp(0.5 * logvar) * torch.tensor(eps)).reshape(-1, Z)
    d = F.relu(F.linear(z, p["decoder.layers.0.weight"], p["decoder.layers.0.bias"]))
    logits = F.linear(d, p["decoder.layers.2.weight"], p["decoder.layers.2.bias"])
    L = eps.shape[0]
    target = xt.reshape(len(x), -1).repeat(L, 1)
    recon = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / (L * len(x))
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(x)
    loss = recon + beta * kl
    loss.backward()
    return float(loss.detach()), {n: t.grad.numpy() for n, t in p.items()}


@pytest.mark.parametrize("L,beta", [(1, 1.0), (3, 0.5)])
def test_vae_loss_and_gradients_match_torch_autograd(L, beta):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    model = mlp_vae(image_shape=(1, 6, 5), hidden_dim=9, latent_dim=4, rng=rng,
                    dtype=np.float64, n_samples=L, beta=beta)
    x = rng.random((7, 1, 6, 5))
    eps = rng.standard_normal((L, 7, 4))
    model.zero_grad()
    loss, parts = model.loss(x, eps=eps)
    model.backward()
    ref_loss, ref_grads = _torch_vae_loss(torch, model, x, eps, beta)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
    assert float(parts["nelbo"]) == pytest.approx(float(parts["recon"] + parts["kl"]))
    for name, p in model.named_parameters():
        assert np.allclose(p.grad, ref_grads[name], rtol=1e-10, atol=1e-12), name


def test_vae_float32_training_step_is_deterministic():
    def run():
        rng = np.random.default_rng(0)
        model = mlp_vae(rng=rng)
        opt = Adam(model.parameters())
        x = rng.random((16, 1, 28, 28)).astype(np.float32)
        for _ in range(3):
            opt.zero_grad()
            model.loss(x, rng=rng)
            model.backward()
            opt.step()
        return model.state_dict()

    a, b = run(), run()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_sample_and_reconstruct_shapes_and_range():
    rng = np.random.default_rng(0)
    model = mlp_vae(rng=rng)
    imgs = model.sample(5, rng)
    assert imgs.shape == (5, 1, 28, 28) and imgs.min() >= 0 and imgs.max() <= 1
    rec = model.reconstruct(rng.random((3, 1, 28, 28)).astype(np.float32))
    assert rec.shape == (3, 1, 28, 28)


# ---------------------------------------------------------------------------
# optimisers
# ---------------------------------------------------------------------------

def _run_ours(opt_cls, kwargs, steps=5, dtype=np.float64):
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((4, 3)).astype(dtype)
    grads = [rng.standard_normal((4, 3)).astype(dtype) for _ in range(steps)]
    p = Parameter(w0.copy())
    opt = opt_cls([p], **kwargs)
    for g in grads:
        opt.zero_grad()
        p.accumulate(g.copy())
        opt.step()
    return w0, grads, p.data


def _run_torch(torch, opt_cls, kwargs, w0, grads):
    t = torch.tensor(w0.copy(), requires_grad=True)
    opt = opt_cls([t], **kwargs)
    for g in grads:
        opt.zero_grad()
        t.grad = torch.tensor(g.copy())
        opt.step()
    return t.detach().numpy()


@pytest.mark.parametrize("kwargs", [
    dict(lr=1e-2), dict(lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
def test_adam_matches_torch(kwargs, dtype, tol):
    torch = pytest.importorskip("torch")
    w0, grads, ours = _run_ours(Adam, kwargs, dtype=dtype)
    ref = _run_torch(torch, torch.optim.Adam, kwargs, w0, grads)
    assert ours.dtype == dtype
    assert np.allclose(ours, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.9, dampening=0.1),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)])
def test_sgd_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    w0, grads, ours = _run_ours(SGD, kwargs)
    ref = _run_torch(torch, torch.optim.SGD, kwargs, w0, grads)
    assert np.allclose(ours, ref, rtol=1e-13, atol=1e-13)


def test_adam_without_torch_on_a_quadratic():
    p = Parameter(np.array([5.0, -3.0]))
    opt = Adam([p], lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        p.accumulate(2 * p.data)  # d/dp |p|^2
        opt.step()
    assert np.all(np.abs(p.data) < 1e-2)


def test_optimizer_skips_parameters_without_grad():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = Adam([a, b], lr=0.1)
    a.accumulate(np.ones(2))
    opt.step()
    assert np.array_equal(b.data, np.ones(2)) and not np.array_equal(a.data, np.ones(2))


def _skip_then_step(opt_cls, a, b, lr):
    """Step 1: only a has a gradient; step 2: both."""
    opt = opt_cls([a, b], lr=lr)
    a.accumulate(np.array([1.0, -2.0]))
    opt.step()
    opt.zero_grad()
    a.accumulate(np.array([0.5, 0.5]))
    b.accumulate(np.array([1.0, -2.0]))
    opt.step()
    return opt


def test_adam_counts_steps_per_parameter():
    """b joins at step 2: its bias correction is that of its own first step."""
    a, b = Parameter(np.ones(2)), Parameter(np.array([1.0, 2.0]))
    opt = _skip_then_step(Adam, a, b, lr=0.1)
    assert list(opt.steps) == [2, 1]
    # first Adam step of a parameter: p - lr * g / (|g| + eps')  ->  p - lr * sign(g)
    assert np.allclose(b.data, [0.9, 2.1], atol=1e-7)
    torch = pytest.importorskip("torch")
    ta = torch.ones(2, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    topt = torch.optim.Adam([ta, tb], lr=0.1)
    ta.grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
    topt.step()
    ta.grad, tb.grad = (torch.tensor([0.5, 0.5], dtype=torch.float64),
                        torch.tensor([1.0, -2.0], dtype=torch.float64))
    topt.step()
    assert np.allclose(a.data, ta.detach().numpy(), rtol=1e-13, atol=1e-13)
    assert np.allclose(b.data, tb.detach().numpy(), rtol=1e-13, atol=1e-13)


def test_adam_state_keeps_per_parameter_steps_and_reads_old_checkpoints(tmp_path):
    from scratchvae import checkpoints as ckpt

    opt = _skip_then_step(Adam, Parameter(np.ones(2)), Parameter(np.ones(2)), lr=0.1)
    path = str(tmp_path / "c.npz")
    ckpt.save_checkpoint(path, {"w": np.ones(1)}, opt.state_dict(), {"epoch": 1})
    fresh = Adam([Parameter(np.ones(2)), Parameter(np.ones(2))], lr=0.1)
    fresh.load_state_dict(ckpt.load_checkpoint(path)[1])
    assert list(fresh.steps) == [2, 1]
    old = {k: v for k, v in opt.state_dict().items() if k != "steps"}
    fresh.load_state_dict(dict(old, t=7))          # one shared t, as written before
    assert list(fresh.steps) == [7, 7]
    with pytest.raises(ValueError, match="step counts for 2 parameters"):
        fresh.load_state_dict(dict(old, steps=np.array([1, 2, 3])))


def test_clip_grad_norm_matches_torch_rule():
    a, b = Parameter(np.zeros(3)), Parameter(np.zeros(4))
    a.accumulate(np.array([3.0, 0.0, 0.0]))
    b.accumulate(np.array([0.0, 4.0, 0.0, 0.0]))
    total = clip_grad_norm([a, b], 1.0)
    assert total == pytest.approx(5.0)
    norm = np.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum())
    assert norm == pytest.approx(5.0 / (5.0 + 1e-6))
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(norm)  # under the limit: unchanged
    assert np.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum()) == pytest.approx(norm)


def test_optimizer_argument_errors():
    with pytest.raises(ValueError, match="at least one parameter"):
        Adam([])
    with pytest.raises(ValueError, match="betas"):
        Adam([Parameter(np.zeros(1))], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([Parameter(np.zeros(1))], lr=0.1, nesterov=True)


def test_optimizer_state_roundtrip():
    w0, grads, _ = _run_ours(Adam, dict(lr=0.01), steps=2)
    p = Parameter(w0.copy())
    opt = Adam([p], lr=0.01)
    p.accumulate(grads[0].copy())
    opt.step()
    state = opt.state_dict()
    q = Parameter(p.data.copy())
    opt2 = Adam([q], lr=0.01)
    opt2.load_state_dict(state)
    for prm, o in ((p, opt), (q, opt2)):
        prm.zero_grad()
        prm.accumulate(grads[1].copy())
        o.step()
    assert np.array_equal(p.data, q.data)


# ---------------------------------------------------------------------------
# Adam over one flat buffer
# ---------------------------------------------------------------------------

def _mlp(seed=0):
    from scratchvae.layers import Linear, Sequential, Tanh
    rng = np.random.default_rng(seed)
    return Sequential(Linear(30, 20, rng=rng), Tanh(), Linear(20, 10, rng=rng))


def _train(model, opt, steps=4, dtype=np.float32):
    rng = np.random.default_rng(1)
    for _ in range(steps):
        opt.zero_grad()
        y = model.forward(rng.standard_normal((7, 30)).astype(dtype))
        model.backward(y - 1)              # d/dy of 1/2 |y - 1|^2
        opt.step()


def _state_bytes(model, opt):
    return ([p.data.tobytes() for p in model.parameters()]
            + [m.tobytes() for m in opt.exp_avg + opt.exp_avg_sq], list(opt.steps))


def test_adam_over_the_flat_buffer_equals_one_update_per_parameter(monkeypatch):
    """One launch over all parameters, the gradients written into the flat buffer by
    the layers themselves, gives the bits of one launch per parameter."""
    import kernels
    from scratchvae import optimizers

    flat_model, per_model = _mlp(), _mlp()
    flat = Adam(flat_model.parameters(), lr=1e-2, weight_decay=0.01)
    with monkeypatch.context() as m:
        m.setattr(optimizers.FlatParameters, "build", classmethod(lambda cls, params: None))
        per = Adam(per_model.parameters(), lr=1e-2, weight_decay=0.01)
    assert per.flat is None and flat.flat is not None
    calls = []
    real = kernels.adam_step

    def spy(param, *args, **kwargs):
        calls.append(param.size)
        return real(param, *args, **kwargs)
    monkeypatch.setattr(kernels, "adam_step", spy)
    _train(flat_model, flat)
    assert calls == [flat_model.num_parameters()] * 4          # one launch a step
    calls.clear()
    _train(per_model, per)
    assert len(calls) == 4 * len(per.params)
    assert _state_bytes(flat_model, flat) == _state_bytes(per_model, per)
    for p, view in zip(flat_model.parameters(), flat.flat.grad_views):
        assert p.grad is view and np.shares_memory(p.data, flat.flat.data)


def test_flat_adam_gathers_gradients_held_elsewhere_and_follows_new_arrays():
    """A gradient set by hand (or stored while the buffer was taken) is copied into the
    buffer; a parameter given a new array is updated in that array, one by one."""
    model, ref_model = _mlp(), _mlp()
    opt, ref = Adam(model.parameters(), lr=1e-2), Adam(ref_model.parameters(), lr=1e-2)
    grads = [np.random.default_rng(i).standard_normal(p.shape).astype(np.float32)
             for i, p in enumerate(model.parameters())]
    for o, ps in ((opt, model.parameters()), (ref, ref_model.parameters())):
        o.zero_grad()
        ps[0].grad = grads[0].copy()                 # set by hand: not the buffer's view
        for p, g in zip(ps[1:], grads[1:]):
            p.accumulate(g.copy())
        ps[1].accumulate(grads[1].copy())            # a second contribution, added
    ref.flat = None                                  # the reference: one launch each
    opt.step()
    ref.step()
    assert _state_bytes(model, opt) == _state_bytes(ref_model, ref)
    p = model.parameters()[0]
    p.data = p.data.copy()                           # a new array, not the buffer's view
    before = p.data.copy()
    _train(model, opt, steps=1)
    assert not np.array_equal(p.data, before) and list(opt.steps) == [2] * 4


def test_loading_states_keeps_the_flat_buffer():
    model, other = _mlp(0), _mlp(1)
    opt, other_opt = Adam(model.parameters(), lr=1e-2), Adam(other.parameters(), lr=1e-2)
    _train(other, other_opt, steps=2)
    model.load_state_dict(other.state_dict())
    opt.load_state_dict(other_opt.state_dict())
    assert opt.flat.holds(model.parameters())
    for m, view in zip(opt.exp_avg, opt.flat.like()[1]):
        assert np.shares_memory(m, opt.flat_exp_avg) and m.shape == view.shape
    assert _state_bytes(model, opt) == _state_bytes(other, other_opt)
    _train(model, opt, steps=2)
    _train(other, other_opt, steps=2)
    assert _state_bytes(model, opt) == _state_bytes(other, other_opt)
