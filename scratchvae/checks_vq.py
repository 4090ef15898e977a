"""Float64 gradient checks of the vector quantiser and the VQ-VAE.

The VQ-VAE's backward is not the derivative of its loss: the stop-gradients
and the straight-through copy define the "gradient". The checks therefore
differentiate a *surrogate* whose true derivative is that gradient, with
every sg() made explicit by freezing a value at the base point:

    z_e  = enc(x; theta_enc)                 z_e0, E0: z_e and the codebook at the
    z_st = E0[k] + (z_e - z_e0)              base point, held fixed while the
    S    = 1/N sum_n [ BCE(dec(z_st), x)     parameters are perturbed; k: the
           + ||z_e0 - E[k]||^2               assignments, held fixed
           + beta ||z_e - E0[k]||^2 ]

At the base point z_st = E0[k] = z_q and S equals the loss. dS/dtheta_enc
goes through z_st with Jacobian I (straight-through) and through the
commitment term; dS/dE comes from the codebook term only; the decoder sees
z_q. With the EMA codebook the codebook term is absent and E is not
trained (it is left out of the check).

Draws are rejected (and redrawn) where some vector's nearest and
second-nearest codes are nearly tied, or some ReLU input is near its kink,
so that the fixed assignments are the true nearest codes throughout the
finite-difference steps and no central difference straddles a kink.
"""
import numpy as np

from . import losses
from .gradcheck import check_op, gradcheck
from .models.vq_vae import vq_vae
from .ops.vq import (as_rows, codebook_loss_backward, codebook_loss_forward,
                     commitment_loss_backward, commitment_loss_forward, from_rows, vq_assign)

F64 = np.float64
TOL = 1e-7
MODEL_STEP = 1e-4
#: smallest accepted gap between nearest and second-nearest squared distances
MIN_GAP = 1e-2


def assignment_gap(z_e, codebook):
    """min over vectors of (second-nearest - nearest squared distance); inf for K = 1."""
    rows = as_rows(z_e)
    d = ((rows[:, None, :] - codebook[None, :, :]) ** 2).sum(axis=2)
    if d.shape[1] < 2:
        return np.inf
    d.sort(axis=1)
    return float((d[:, 1] - d[:, 0]).min())


def _latent_problem(rng, shape=(2, 3, 2, 2), num_codes=5):
    """z_e (N, D, H, W) and a codebook (K, D), redrawn until no near tie."""
    for _ in range(100):
        z_e = rng.standard_normal(shape)
        codebook = rng.standard_normal((num_codes, shape[1]))
        if assignment_gap(z_e, codebook) > MIN_GAP:
            return z_e, codebook
    raise RuntimeError("could not draw a VQ problem without near ties")


def codebook_loss_check(rng):
    """Codebook term ||sg(z_e) - e_k||^2 w.r.t. the codebook (assignments recomputed
    at every evaluation; no near ties, so they stay fixed)."""
    z_e, codebook = _latent_problem(rng)

    def forward(codebook):
        return codebook_loss_forward(z_e, codebook, vq_assign(z_e, codebook))

    return check_op("VQ codebook loss (w.r.t. codebook)", forward, codebook_loss_backward,
                    {"codebook": codebook}, ["codebook"], rng=rng, tol=TOL)


def commitment_loss_check(rng):
    """Commitment term ||z_e - sg(e_k)||^2 w.r.t. z_e (assignments recomputed)."""
    z_e, codebook = _latent_problem(rng)

    def forward(z_e):
        return commitment_loss_forward(z_e, codebook, vq_assign(z_e, codebook))

    return check_op("VQ commitment loss (w.r.t. z_e)", forward, commitment_loss_backward,
                    {"z_e": z_e}, ["z_e"], rng=rng, tol=TOL)


def straight_through_surrogate(model, x, indices, z_e0, codebook0):
    """The scalar S above, evaluated from the model's current parameters."""
    z_e = model.encode(x)
    E = model.quantizer.codebook.data
    z_q0 = from_rows(codebook0[indices.reshape(-1)], z_e.shape)
    z_st = z_q0 + (z_e - z_e0)
    recon = losses.bernoulli_nll_forward(model.decoder.forward(z_st), x)[0]
    total = recon + model.commitment * commitment_loss_forward(z_e, codebook0, indices)[0]
    if not model.quantizer.ema:
        total = total + codebook_loss_forward(z_e0, E, indices)[0]
    return float(total.mean())


def draw_vq_model(rng, ema=False, shape=(1, 8, 8), channels=(3, 4), num_codes=4, code_dim=3,
                  n=3):
    """A small float64 VQ-VAE and images, away from ReLU kinks and from near ties."""
    from .checks import _relu_inputs_distance  # here, not at import: checks imports us

    for _ in range(100):
        model = vq_vae(image_shape=shape, latent_dim=code_dim, num_codes=num_codes,
                       channels=channels, codebook_init="normal", ema=ema, restart_after=0,
                       rng=rng, dtype=F64)
        x = rng.random((n,) + shape)
        margin = _relu_inputs_distance(model, lambda: model.loss(x, training=False))
        gap = assignment_gap(model.encode(x), model.quantizer.codebook.data)
        if margin > 10 * MODEL_STEP and gap > MIN_GAP:
            return model, x
    raise RuntimeError("could not draw a VQ-VAE problem away from kinks and ties")


def model_gradcheck(name, model, x, rng, training=True):
    """model.backward() against central differences of the surrogate S."""
    z_e0 = model.encode(x).copy()
    codebook0 = model.quantizer.codebook.data.copy()
    indices = model.codes(x)
    model.zero_grad()
    model.loss(x, training=training, indices=indices)
    model.backward()
    arrays, grads = {}, {}
    for pname, p in model.named_parameters():
        if model.quantizer.ema and p is model.quantizer.codebook:
            if p.grad is not None:
                raise ValueError(f"{name}: the EMA codebook received a gradient")
            continue
        if p.grad is None:
            raise ValueError(f"{name}: parameter {pname} received no gradient")
        arrays[pname], grads[pname] = p.data, p.grad
    return gradcheck(lambda: straight_through_surrogate(model, x, indices, z_e0, codebook0),
                     arrays, grads, name=name, rng=rng, tol=TOL, h=MODEL_STEP)


def vq_vae_check(name, ema=False):
    """Whole-model check: every parameter (the codebook too unless EMA)."""
    def run(rng):
        model, x = draw_vq_model(rng, ema=ema)
        # training=True exercises the fused BCE path; with restarts off and no
        # EMA the quantiser's upkeep changes nothing. EMA would update the
        # codebook, so that check runs the evaluation path.
        return model_gradcheck(name, model, x, rng, training=not ema)
    return run


#: (name, check) entries for scratchvae.checks.CHECKS
VQ_CHECKS = [
    ("VQ codebook loss (w.r.t. codebook)", codebook_loss_check),
    ("VQ commitment loss (w.r.t. z_e)", commitment_loss_check),
    ("vq-vae loss (straight-through surrogate, codebook loss)",
     vq_vae_check("vq-vae loss (straight-through surrogate, codebook loss)")),
    ("vq-vae loss (straight-through surrogate, EMA codebook)",
     vq_vae_check("vq-vae loss (straight-through surrogate, EMA codebook)", ema=True)),
]
