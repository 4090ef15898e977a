"""The PixelCNN ops beyond their registry entries (tests/test_op_specs.py):
masks of types A and B, masked weights that never move under Adam, the
raster-order dependence of one masked layer (through the engine's backward),
the embedding's scatter-add and the class bias, softmax cross-entropy at
every position of a logit map, and each op's errors."""
import numpy as np
import pytest

from scratchvae import losses
from scratchvae.layers import ClassBias, Conv2d, Embedding, MaskedConv2d
from scratchvae.ops import conv as C
from scratchvae.ops import embedding as E
from scratchvae.optimizers import Adam


# --------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------

def test_masks_of_type_a_and_b():
    a = C.pixelcnn_mask("A", 2, 3, 3, 3)
    b = C.pixelcnn_mask("B", 2, 3, 3, 3)
    assert a.shape == b.shape == (2, 3, 3, 3) and a.dtype == np.float32
    assert (a == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]).all()
    assert (b == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]).all()
    five = C.pixelcnn_mask("B", 1, 1, 5, 5, dtype=np.float64)[0, 0]
    assert five.dtype == np.float64 and five.sum() == 13 and five[2, 2] == 1
    assert five[3:].sum() == 0 and five[2, 3:].sum() == 0
    assert C.pixelcnn_mask("A", 1, 1, 1, 1).sum() == 0
    assert (C.pixelcnn_mask("B", 1, 1, 3, 5)[0, 0] == [[1] * 5, [1, 1, 1, 0, 0], [0] * 5]).all()


@pytest.mark.parametrize("args,needle", [
    (("C", 1, 1, 3, 3), "expected kind 'A' or 'B', got 'C'"),
    (("A", 1, 1, 4, 3), "expected an odd kh"),
    (("B", 1, 1, 3, 2), "expected an odd kw"),
    (("A", 0, 1, 3, 3), "expected out_channels to be an int >= 1")])
def test_mask_rejects_bad_arguments(args, needle):
    with pytest.raises(ValueError, match="pixelcnn_mask: " + needle):
        C.pixelcnn_mask(*args)


# --------------------------------------------------------------------------
# masked convolution
# --------------------------------------------------------------------------

def test_masked_conv2d_is_conv2d_with_the_masked_weight():
    rng = np.random.default_rng(0)
    masked = MaskedConv2d(3, 4, 5, "A", rng=np.random.default_rng(1))
    plain = Conv2d(3, 4, 5, padding=2, rng=np.random.default_rng(1))
    assert np.array_equal(masked.weight.data, plain.weight.data)   # Conv2d's initialisation
    plain.weight.data = plain.weight.data * masked.mask
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    assert np.array_equal(masked.forward(x), plain.forward(x))
    dy = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    assert np.array_equal(masked.backward(dy), plain.backward(dy))
    assert np.array_equal(masked.weight.grad, plain.weight.grad * masked.mask)
    assert masked.padding == (2, 2) and "mask_type='A'" in repr(masked)


def _adam_steps(module, backward, steps=50, seed=0):
    """``steps`` Adam steps on L = sum(y * G), fresh x and G each step, the
    weight gradient from ``backward(dy, cache)``."""
    rng = np.random.default_rng(seed)
    opt = Adam(module.parameters(), lr=1e-2)
    for _ in range(steps):
        x = rng.standard_normal((4, module.in_channels, 6, 6)).astype(np.float32)
        y = module.forward(x)
        opt.zero_grad()
        _, dW, db = backward(rng.standard_normal(y.shape).astype(np.float32), module.cache)
        module.weight.accumulate(dW)
        module.bias.accumulate(db)
        opt.step()


def _unmasked_backward(dy, cache):      # Conv2d's backward on W * M: dW not masked
    return C.conv2d_backward(dy, cache[0])


@pytest.mark.parametrize("kind", ["A", "B"])
def test_weights_outside_the_mask_never_change(kind):
    module = MaskedConv2d(3, 5, 3, kind, rng=np.random.default_rng(0))
    W0 = module.weight.data.copy()
    outside = module.mask == 0
    _adam_steps(module, C.masked_conv2d_backward)
    assert np.array_equal(module.weight.data[outside], W0[outside])      # bit for bit
    assert (module.weight.data[~outside] != W0[~outside]).all()          # the rest learns
    # the test can fail: without the mask on dW, the hidden weights move
    broken = MaskedConv2d(3, 5, 3, kind, rng=np.random.default_rng(0))
    _adam_steps(broken, _unmasked_backward)
    assert (broken.weight.data[outside] != W0[outside]).any()


def dependence(module, size=7):
    """dep[p, q] = True when the output at pixel p (raster order, any channel)
    has a non-zero gradient w.r.t. the input at pixel q, from the module's
    own backward with dy = 1 at p."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, module.in_channels, size, size))
    y = module.forward(x)
    dep = np.zeros((size * size, size * size), dtype=bool)
    for p in range(size * size):
        dy = np.zeros_like(y)
        dy[0, :, p // size, p % size] = 1
        module.forward(x)
        dx = module.backward(dy)
        dep[p] = (np.abs(dx[0]).sum(axis=0) != 0).reshape(-1)
    return dep


def reads_only_the_past(dep, kind):
    """True when no output reads an input at or after its own pixel (type A),
    or after it (type B)."""
    p, q = np.indices(dep.shape)
    future = q >= p if kind == "A" else q > p
    return not dep[future].any()


@pytest.mark.parametrize("kind", ["A", "B"])
def test_a_masked_layer_reads_only_the_past_in_raster_order(kind):
    module = MaskedConv2d(2, 3, 3, kind, rng=np.random.default_rng(0), dtype=np.float64)
    dep = dependence(module)
    assert reads_only_the_past(dep, kind)
    assert dep[np.diag_indices(49)].all() == (kind == "B")    # the centre: B only
    assert dep[24, 16] and dep[24, 23]                        # above and left of p
    # the check can fail: a B layer checked as A, and an unmasked conv, read the future
    if kind == "B":
        assert not reads_only_the_past(dep, "A")
    plain = Conv2d(2, 3, 3, padding=1, rng=np.random.default_rng(0), dtype=np.float64)
    assert not reads_only_the_past(dependence(plain), kind)


@pytest.mark.parametrize("change,needle", [
    (dict(mask=np.ones((4, 3, 3, 2))), r"expected mask of shape \(4, 3, 3, 3\)"),
    (dict(mask=np.ones((4, 3, 3, 3), np.float32)), "expected mask of dtype float64"),
    (dict(W=np.ones((4, 3, 3))), "expected weight of shape"),
    (dict(x=np.ones((2, 2, 5, 5))), r"expected input of shape \(\*, 3, \*, \*\)")])
def test_masked_conv2d_rejects_bad_inputs(change, needle):
    args = dict(x=np.ones((2, 3, 5, 5)), W=np.ones((4, 3, 3, 3)),
                mask=C.pixelcnn_mask("A", 4, 3, 3, 3, dtype=np.float64))
    args.update(change)
    with pytest.raises(ValueError, match="MaskedConv2d: " + needle):
        C.masked_conv2d_forward(**args, padding=1)


def test_masked_conv2d_module_rejects_a_bad_mask_type():
    with pytest.raises(ValueError, match="expected kind 'A' or 'B', got 'a'"):
        MaskedConv2d(2, 3, 3, "a", rng=np.random.default_rng(0))


def test_masked_conv2d_module_follows_astype():
    module = MaskedConv2d(2, 3, 3, "B", rng=np.random.default_rng(0)).astype(np.float64)
    y = module.forward(np.ones((1, 2, 4, 4)))
    assert y.dtype == np.float64 and module.mask.dtype == np.float64


# --------------------------------------------------------------------------
# embedding and class bias
# --------------------------------------------------------------------------

def test_embedding_gathers_and_scatter_adds():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((5, 3))
    indices = np.array([[4, 0, 4], [4, 1, 0]])
    out, cache = E.embedding_forward(indices, table)
    assert out.shape == (2, 3, 3) and np.array_equal(out, table[indices])
    dout = rng.standard_normal(out.shape)
    dtable = E.embedding_backward(dout, cache)
    want = np.zeros_like(table)
    for s in np.ndindex(indices.shape):     # the definition, one position at a time
        want[indices[s]] += dout[s]
    assert np.array_equal(dtable, want)
    assert (dtable[[2, 3]] == 0).all()
    # a fixed order of summation: the same bits every time, and those of the loop
    many = rng.integers(0, 3, size=1000)
    rows = rng.standard_normal((1000, 4)).astype(np.float32)
    first = E.scatter_add_rows(rows, many, 3)
    assert np.array_equal(first, E.scatter_add_rows(rows, many, 3))
    loop = np.zeros((3, 4), np.float32)
    for k, r in zip(many, rows):
        loop[k] += r
    assert np.array_equal(first, loop)
    assert np.array_equal(E.scatter_add_rows(rows[:0], many[:0], 3), np.zeros((3, 4), np.float32))
    # the one-hot product of other array modules: the same sums, to round-off
    assert np.allclose(E.scatter_add_onehot(rows, many, 3), first, rtol=1e-5, atol=1e-4)
    assert np.allclose(E.scatter_add_onehot(dout.reshape(-1, 3), indices.reshape(-1), 5), want,
                       rtol=0, atol=1e-12)


def test_embedding_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    module = Embedding(6, 4, rng=rng, dtype=np.float64)
    indices = rng.integers(0, 6, size=(3, 7, 7))
    dout = rng.standard_normal((3, 7, 7, 4))
    ref = torch.nn.Embedding(6, 4).double()
    ref.weight.data = torch.tensor(module.weight.data)
    out = ref(torch.tensor(indices))
    out.backward(torch.tensor(dout))
    assert np.allclose(module.forward(indices), out.detach().numpy(), atol=0)
    assert module.backward(dout) is None
    assert np.allclose(module.weight.grad, ref.weight.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("indices,needle", [
    (np.array([0, 5]), r"expected indices in \[0, 5\), got values from 0 to 5"),
    (np.array([-1, 2]), r"expected indices in \[0, 5\), got values from -1 to 2"),
    (np.array([0.0, 1.0]), r"expected integer indices in \[0, 5\), got dtype float64")])
def test_embedding_rejects_bad_indices(indices, needle):
    with pytest.raises(ValueError, match="Embedding: " + needle):
        E.embedding_forward(indices, np.zeros((5, 2)))


def test_embedding_rejects_a_bad_table_and_gradient():
    with pytest.raises(ValueError, match=r"Embedding: expected table of shape \(\*, \*\)"):
        E.embedding_forward(np.array([0]), np.zeros(5))
    with pytest.raises(ValueError, match="Embedding: expected table of dtype float32"):
        E.embedding_forward(np.array([0]), np.zeros((5, 2), np.int64))
    _, cache = E.embedding_forward(np.array([[0, 1]]), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"Embedding.backward: expected upstream gradient "
                                         r"of shape \(1, 2, 2\)"):
        E.embedding_backward(np.zeros((1, 2)), cache)


def test_class_bias_adds_the_label_row_at_every_position():
    rng = np.random.default_rng(0)
    module = ClassBias(4, 3, rng=rng, dtype=np.float64)
    h, labels = rng.standard_normal((3, 3, 2, 5)), np.array([1, 3, 1])
    y = module.forward(h, labels)
    assert np.array_equal(y, h + module.weight.data[labels][:, :, None, None])
    dy = rng.standard_normal(y.shape)
    assert module.backward(dy) is dy
    want = np.zeros((4, 3))
    for n, k in enumerate(labels):
        want[k] += dy[n].sum(axis=(1, 2))
    assert np.allclose(module.weight.grad, want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("h,labels,needle", [
    (np.zeros((2, 3, 2, 2)), np.array([0, 4]), r"expected labels in \[0, 4\)"),
    (np.zeros((2, 3, 2, 2)), np.array([0]), r"expected labels of shape \(2,\)"),
    (np.zeros((2, 3, 2, 2)), np.array([0.0, 1.0]), "expected integer labels"),
    (np.zeros((2, 2, 2, 2)), np.array([0, 1]), r"expected input of shape \(\*, 3, \*, \*\)"),
    (np.zeros((2, 3, 2, 2), np.float32), np.array([0, 1]), "expected input of dtype float64")])
def test_class_bias_rejects_bad_inputs(h, labels, needle):
    with pytest.raises(ValueError, match="ClassBias: " + needle):
        E.class_bias_forward(h, labels, np.zeros((4, 3)))


# --------------------------------------------------------------------------
# softmax cross-entropy at every position
# --------------------------------------------------------------------------

def test_softmax_ce_over_a_map_is_the_sum_of_its_positions():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 5, 3, 4))
    labels = rng.integers(0, 5, size=(2, 3, 4))
    ce, cache = losses.softmax_cross_entropy_forward(logits, labels)
    rows = logits.transpose(0, 2, 3, 1).reshape(-1, 5)
    per_position = losses.softmax_cross_entropy_forward(rows, labels.reshape(-1))[0]
    assert ce.shape == (2,)
    assert np.allclose(ce, per_position.reshape(2, -1).sum(axis=1), rtol=1e-14)
    dce = np.array([0.5, -2.0])
    g = losses.softmax_cross_entropy_backward(dce, cache)
    _, row_cache = losses.softmax_cross_entropy_forward(rows, labels.reshape(-1))
    g_rows = losses.softmax_cross_entropy_backward(np.repeat(dce, 12), row_cache)
    assert g.shape == logits.shape
    assert np.allclose(g, g_rows.reshape(2, 3, 4, 5).transpose(0, 3, 1, 2), rtol=1e-14)


def test_softmax_ce_over_a_map_matches_torch_with_large_logits():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = 1e4 * rng.standard_normal((2, 4, 3, 3))
    labels = rng.integers(0, 4, size=(2, 3, 3))
    ce, cache = losses.softmax_cross_entropy_forward(logits, labels)
    t = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(t, torch.tensor(labels), reduction="none")
    ref.sum(dim=(1, 2)).sum().backward()
    assert np.isfinite(ce).all() and ce.max() > 1e3
    assert np.allclose(ce, ref.sum(dim=(1, 2)).detach().numpy(), rtol=1e-12)
    g = losses.softmax_cross_entropy_backward(np.ones(2), cache)
    assert np.isfinite(g).all() and np.allclose(g, t.grad.numpy(), atol=1e-12)


def test_softmax_ce_on_two_dimensions_is_unchanged():
    """(N, K) logits give the classifier's numbers bit for bit: the direct formula."""
    rng = np.random.default_rng(0)
    logits = (5 * rng.standard_normal((64, 10))).astype(np.float32)
    labels = rng.integers(0, 10, size=64)
    ce, cache = losses.softmax_cross_entropy_forward(logits, labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1)
    assert np.array_equal(ce, np.log(total) - shifted[np.arange(64), labels])
    dce = np.full(64, 1 / 64, np.float32)
    p = e / total[:, None]
    p[np.arange(64), labels] -= 1
    assert np.array_equal(losses.softmax_cross_entropy_backward(dce, cache), dce[:, None] * p)


@pytest.mark.parametrize("labels,needle", [
    (np.zeros((2, 3), np.int64), r"expected labels of shape \(2, 3, 4\)"),
    (np.full((2, 3, 4), 5), r"expected integer labels in \[0, 5\), got dtype int64, range \[5, 5\]"),
    (np.zeros((2, 3, 4)), r"expected integer labels in \[0, 5\), got dtype float64")])
def test_softmax_ce_over_a_map_rejects_bad_targets(labels, needle):
    with pytest.raises(ValueError, match="SoftmaxCrossEntropy: " + needle):
        losses.softmax_cross_entropy_forward(np.zeros((2, 5, 3, 4)), labels)
