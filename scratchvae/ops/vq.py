"""Vector quantisation (van den Oord et al., 2017, "Neural Discrete
Representation Learning"): the ops of a VQ-VAE's bottleneck.

Shapes: encoder output z_e (N, D, H, W), read as N*H*W vectors of size D
(the vector at (n, h, w) is z_e[n, :, h, w]); codebook E (K, D) of K codes;
assignments k (N, H, W) int64, k[n, h, w] in [0, K). Every loss returns one
value per image, (N,), summed over its H*W vectors and D components.

    assignment     k(n,h,w) = argmin_j ||z_e[n,:,h,w] - e_j||^2          vq_assign
    quantised      z_q[n,:,h,w] = e_{k(n,h,w)}                           vq_quantize_*
    codebook loss  L_cb[n]     = sum_{h,w} ||sg(z_e[n,:,h,w]) - e_k||^2  codebook_loss_*
    commitment     L_commit[n] = sum_{h,w} ||z_e[n,:,h,w] - sg(e_k)||^2  commitment_loss_*

sg() is the stop-gradient: the value passes, the derivative is taken as 0.
The two losses have the same *value* and differ only in where their
gradient goes; the VQ-VAE loss weights them 1 and beta (0.25).

The argmin is piecewise constant, so the decoder's gradient cannot reach
the encoder through it. The straight-through estimator copies it across:
backward treats z_q as if it were z_q = z_e + sg(e_k - z_e) (value e_k,
Jacobian dz_q/dz_e = I). The codebook is learnt from the codebook loss
alone (or by exponential moving averages, :func:`ema_update`); the
decoder's gradient never reaches it.

Memory: vectors are handled as rows (N*H*W, D) in (n, h, w) order, which for
a channels-last z_e (what the conv ops return) is a free view; z_q and
dz_e come back as NCHW-shaped views of channels-last arrays, like the conv
ops' outputs.

What the gradient checks differentiate (registry entries:
scratchvae/gradcheck/vq.py; docs/derivations.md). The backward is not the
derivative of the loss: the stop-gradients and the straight-through copy
define the "gradient". The checks differentiate a surrogate whose true
derivative is that gradient, with every sg() made explicit by a value
frozen at the base point:

    z_e  = enc(x; theta_enc)                 z_e0, E0: z_e and the codebook at the
    z_st = E0[k] + (z_e - z_e0)              base point, held fixed while the
    S    = 1/N sum_n [ BCE(dec(z_st), x)     parameters are perturbed; k: the
           + ||z_e0 - E[k]||^2               assignments, held fixed
           + beta ||z_e - E0[k]||^2 ]

At the base point z_st = E0[k] = z_q and S equals the loss. dS/dtheta_enc
goes through z_st with Jacobian I (straight-through) and through the
commitment term; dS/dE comes from the codebook term only; the decoder sees
z_q. With the EMA codebook the codebook term is absent and E is not
trained. The ops alone are checked the same way: vq_quantize as
z_q = E[k] + (z_e - z_e0) with respect to z_e, the two losses with k held
fixed. Problems are drawn without near ties of the nearest and
second-nearest codes, so the fixed k are the nearest codes throughout the
finite-difference steps.
"""
import numpy as np

from kernels.codes import code_counts, segment_sum  # noqa: F401 (part of this module's API)
from kernels.vq import nearest_code

from ..backend import check_float, check_shape, get_xp


# --------------------------------------------------------------------------
# layout helpers
# --------------------------------------------------------------------------

def _check(op, z_e, codebook, indices=None):
    check_shape(op, "codebook", codebook, (None, None))
    check_float(op, "codebook", codebook)
    K, D = codebook.shape
    check_shape(op, "encoder output", z_e, (None, D, None, None))
    check_float(op, "encoder output", z_e, codebook.dtype)
    if indices is not None:
        N, _, H, W = z_e.shape
        check_shape(op, "indices", indices, (N, H, W))
        if np.dtype(indices.dtype).kind not in "iu":
            raise ValueError(f"{op}: expected integer indices, got dtype {indices.dtype}")


def as_rows(z):
    """(N, D, H, W) -> (N*H*W, D), rows in (n, h, w) order (a view when channels-last)."""
    N, D, H, W = z.shape
    return get_xp(z).ascontiguousarray(z.transpose(0, 2, 3, 1)).reshape(N * H * W, D)


def from_rows(rows, shape):
    """(N*H*W, D) rows -> an (N, D, H, W)-shaped view of the channels-last array."""
    N, D, H, W = shape
    return rows.reshape(N, H, W, D).transpose(0, 3, 1, 2)


def _per_image_sq(r, n):
    """sum of squares of the rows r (N*H*W, D), per image -> (N,)."""
    return (r * r).reshape(n, -1).sum(axis=1)


def _per_row(dloss, n, rows, op):
    """Upstream gradient dloss (N,) repeated for each of an image's H*W rows -> (M, 1)."""
    check_shape(op, "upstream gradient", dloss, (n,))
    xp = get_xp(dloss)
    return xp.repeat(dloss, rows // n)[:, None]


# --------------------------------------------------------------------------
# assignment and quantisation
# --------------------------------------------------------------------------

def vq_assign(z_e, codebook):
    """k[n, h, w] = argmin_j ||z_e[n, :, h, w] - e_j||^2, ties to the lowest j.

    z_e (N, D, H, W), codebook (K, D) -> int64 (N, H, W). One pass of the
    nearest-code kernel (kernels/vq.py); no gradient (piecewise constant).
    """
    _check("VectorQuantizer", z_e, codebook)
    N, _, H, W = z_e.shape
    indices, _ = nearest_code(as_rows(z_e), codebook)
    return indices.reshape(N, H, W)


def vq_quantize_forward(z_e, codebook, indices):
    """z_q[n, :, h, w] = codebook[indices[n, h, w]].  Returns ``(z_q, cache)``.

    z_q has z_e's shape (N, D, H, W) and is channels-last in memory. Its
    value is the code itself, not z_e + (e_k - z_e) (which differs in the
    last bits): the straight-through estimator lives in the backward only.
    The cache holds z_e's shape (the backward needs nothing else).
    """
    _check("VectorQuantizer", z_e, codebook, indices)
    rows = codebook[indices.reshape(-1)]                  # (N*H*W, D), a gather
    return from_rows(rows, z_e.shape), tuple(z_e.shape)


def vq_quantize_backward(dz_q, cache):
    """Straight-through: dL/dz_e = dL/dz_q.

    The true derivative of z_q = e_{k(z_e)} with respect to z_e is 0 almost
    everywhere (k is piecewise constant). The estimator replaces the
    quantiser by z_q = z_e + sg(e_k - z_e), whose value is e_k and whose
    Jacobian with respect to z_e is the identity, so the upstream gradient
    is passed on unchanged (the same array, not a copy). The codebook gets
    no gradient from this path: sg() covers e_k too.
    """
    check_shape("VectorQuantizer.backward", "upstream gradient", dz_q, cache)
    return dz_q


# --------------------------------------------------------------------------
# the two latent losses
# --------------------------------------------------------------------------

def _latent_term(op, z_e, codebook, indices):
    """(sq, r, idx): the per-image sums of squares sq (N,) of the residual rows
    r = z_e - e_k (N*H*W, D), k = idx = the flat indices; the value of both losses."""
    _check(op, z_e, codebook, indices)
    idx = indices.reshape(-1)
    r = as_rows(z_e) - codebook[idx]
    return _per_image_sq(r, z_e.shape[0]), r, idx


def codebook_loss_forward(z_e, codebook, indices):
    """L_cb[n] = sum_{h,w} ||sg(z_e[n, :, h, w]) - e_{k(n,h,w)}||^2, shape (N,).

    Moves the codes towards the encoder outputs assigned to them. Caches the
    residuals r = z_e - e_k as rows (N*H*W, D) and the flat indices.
    """
    sq, r, idx = _latent_term("CodebookLoss", z_e, codebook, indices)
    return sq, (r, idx, codebook.shape[0], z_e.shape[0])


def codebook_loss_backward(dloss, cache):
    """dL/dE from dloss = dL/dL_cb (N,); z_e gets nothing (it is inside sg).

    With r_m = z_m - e_{k_m} for row m of image n(m):

        dL_cb[n]/de_j = sum_{m in n, k_m = j} d/de_j ||z_m - e_j||^2
                      = sum_{m in n, k_m = j} 2 (e_j - z_m) = -2 sum r_m,

    so dE[j] = sum_{m : k_m = j} -2 dloss[n(m)] r_m: the residuals scattered
    onto their codes (:func:`segment_sum`). Codes no vector chose get 0.
    Returns dE of shape (K, D).
    """
    r, idx, K, n = cache
    g = (-2 * _per_row(dloss, n, r.shape[0], "CodebookLoss.backward")) * r
    return segment_sum(idx, g.astype(r.dtype, copy=False), K)


def commitment_loss_forward(z_e, codebook, indices):
    """L_commit[n] = sum_{h,w} ||z_e[n, :, h, w] - sg(e_{k(n,h,w)})||^2, shape (N,).

    Keeps the encoder outputs close to their codes. Caches the residual rows
    r = z_e - e_k and z_e's shape.
    """
    sq, r, _ = _latent_term("CommitmentLoss", z_e, codebook, indices)
    return sq, (r, tuple(z_e.shape))


def commitment_loss_backward(dloss, cache):
    """dL/dz_e from dloss = dL/dL_commit (N,); the codebook gets nothing (sg).

        dL_commit[n]/dz_e[n, :, h, w] = 2 (z_e[n, :, h, w] - e_k) = 2 r

    Returns dz_e of z_e's shape (N, D, H, W), channels-last in memory.
    """
    r, shape = cache
    g = (2 * _per_row(dloss, shape[0], r.shape[0], "CommitmentLoss.backward")) * r
    return from_rows(g.astype(r.dtype, copy=False), shape)


def latent_losses_forward(z_e, codebook, indices):
    """Both latent losses at once: ``(sq, commitment_cache, codebook_cache)``.

    L_cb and L_commit have one value, sq (N,) (sg() only decides where each
    gradient goes), and one residual r = z_e - e_k: it is formed once and
    both caches hold it, as :func:`commitment_loss_forward` and
    :func:`codebook_loss_forward` would each (the same values, bit for bit).
    """
    sq, r, idx = _latent_term("VQ latent losses", z_e, codebook, indices)
    return sq, (r, tuple(z_e.shape)), (r, idx, codebook.shape[0], z_e.shape[0])


# --------------------------------------------------------------------------
# exponential-moving-average codebook (instead of the codebook loss)
# --------------------------------------------------------------------------

def ema_update(hidden_count, hidden_sum, steps, z_rows, indices, decay=0.99, epsilon=1e-5):
    """One EMA step of the codebook; returns ``(hidden_count, hidden_sum, steps, codebook)``.

    Each code becomes the running mean of the vectors assigned to it
    (van den Oord et al. 2017, appendix A.1; Sonnet's VectorQuantizerEMA).
    With n_j the number of rows of ``z_rows`` (M, D) assigned to code j and
    s_j their sum (``indices`` (M,)):

        c_j <- decay c_j + (1 - decay) n_j        hidden_count (K,), starts at 0
        S_j <- decay S_j + (1 - decay) s_j        hidden_sum (K, D), starts at 0
        t   <- t + 1                              steps
        N_j = c_j / (1 - decay^t),  m_j = S_j / (1 - decay^t)   zero-debiased
        n   = sum_j N_j
        N~_j = (N_j + epsilon) / (n + K epsilon) * n            Laplace smoothing
        e_j = m_j / N~_j

    The zero-debiased average (Kingma & Ba's bias correction; TensorFlow's
    ``zero_debias``) is the exact weighted mean of the values seen so far:
    after the first step N_j = n_j. Laplace smoothing keeps N~_j > 0 for a
    code nobody chose (its e_j stays at its last mean until its count has
    decayed to the order of epsilon, then tends to 0) and preserves the
    total, sum_j N~_j = n. New arrays are returned (hidden state in
    float64); the codebook has z_rows' dtype.
    """
    xp = get_xp(z_rows)
    K = hidden_count.shape[0]
    counts = code_counts(indices, K).astype(xp.float64)
    sums = segment_sum(indices, z_rows.astype(xp.float64), K)
    hidden_count = decay * hidden_count + (1 - decay) * counts
    hidden_sum = decay * hidden_sum + (1 - decay) * sums
    steps = int(steps) + 1
    debias = 1 - decay ** steps
    N, m = hidden_count / debias, hidden_sum / debias
    n = N.sum()
    smoothed = (N + epsilon) / (n + K * epsilon) * n
    codebook = (m / smoothed[:, None]).astype(z_rows.dtype)
    return hidden_count, hidden_sum, steps, codebook
