"""Registry entries of the vector quantiser (scratchvae/ops/vq.py) and the VQ-VAE.

Their backward is not the derivative of their forward: the stop-gradients
and the straight-through copy define the "gradient". The checks
differentiate the straight-through surrogate derived in scratchvae/ops/vq.py
(its docstring, "What the gradient checks differentiate"), in which every
sg() is a value frozen at the base point and the assignments k are held
fixed. Problems are drawn without near ties (problems.assignment_gap), so
the fixed assignments are the nearest codes throughout the steps.
"""
from ..losses import bernoulli_nll_forward
from ..models import vq_vae
from ..models.vq_vae import VQVAE
from ..ops import vq as V
from .core import gradcheck, model_gradients
from .problems import MODEL_STEP, Problem, draw_vq_model, latent_problem
from .spec import Case, Check, OpSpec

TOL = 1e-7
TIES = "near ties of the nearest and second-nearest codes (latent_problem, MIN_GAP)"


# --------------------------------------------------------------------------
# the ops
# --------------------------------------------------------------------------

def straight_through_forward(z_e, codebook, indices, z_e_frozen):
    """z_q = e_k + (z_e - sg(z_e)): the quantiser's value at the base point
    (z_e_frozen = z_e there), with Jacobian I with respect to z_e."""
    z_q, cache = V.vq_quantize_forward(z_e, codebook, indices)
    return z_q + (z_e - z_e_frozen), cache


def _latents(wrt, frozen=False):
    """z_e (2, 3, 2, 2), a codebook of 5 codes and the assignments, held fixed."""
    def make(rng):
        z_e, codebook = latent_problem(rng)
        inputs = {"z_e": z_e, "codebook": codebook, "indices": V.vq_assign(z_e, codebook)}
        if frozen:
            inputs["z_e_frozen"] = z_e.copy()
        return Problem(inputs, wrt)
    return make


# --------------------------------------------------------------------------
# the VQ-VAE
# --------------------------------------------------------------------------

def straight_through_surrogate(model, x, indices, z_e0, codebook0):
    """The surrogate S of scratchvae/ops/vq.py, from the model's current parameters."""
    z_e = model.encode(x)
    E = model.quantizer.codebook.data
    z_q0 = V.from_rows(codebook0[indices.reshape(-1)], z_e.shape)
    z_st = z_q0 + (z_e - z_e0)
    recon = bernoulli_nll_forward(model.decoder.forward(z_st), x)[0]
    total = recon + model.commitment * V.commitment_loss_forward(z_e, codebook0, indices)[0]
    if not model.quantizer.ema:
        total = total + V.codebook_loss_forward(z_e0, E, indices)[0]
    return float(total.mean())


def model_gradcheck(name, model, x, rng, training=True):
    """model.backward() against central differences of the surrogate S, w.r.t.
    every parameter (the codebook too, unless it is the EMA codebook)."""
    z_e0 = model.encode(x).copy()
    codebook0 = model.quantizer.codebook.data.copy()
    indices = model.codes(x)
    codebook = model.quantizer.codebook
    ema = (codebook,) if model.quantizer.ema else ()
    arrays, grads = model_gradients(name, model, x, skip=ema, training=training,
                                    indices=indices)
    if ema and codebook.grad is not None:
        raise ValueError(f"{name}: the EMA codebook received a gradient")
    return gradcheck(lambda: straight_through_surrogate(model, x, indices, z_e0, codebook0),
                     arrays, grads, name=name, rng=rng, tol=TOL, h=MODEL_STEP)


def vq_vae_check(name, ema=False):
    """Whole-model check of a small VQ-VAE, away from ReLU kinks and near ties.
    training=True runs the fused BCE path (with restarts off and no EMA the
    quantiser's upkeep changes nothing); the EMA model would update its
    codebook, so its check runs the evaluation path."""
    def run(rng):
        model, x = draw_vq_model(rng, ema=ema)
        return model_gradcheck(name, model, x, rng, training=not ema)
    return Check(name, run)


SPECS = (
    OpSpec(
        "vq_quantize", V.vq_quantize_forward, V.vq_quantize_backward,
        cases=(Case(None, _latents(("z_e",), frozen=True)),),
        check_forward=straight_through_forward, kinks=TIES,
        derivation=V, tests=("tests/test_vq.py",)),
    OpSpec(
        "codebook_loss", V.codebook_loss_forward, V.codebook_loss_backward,
        cases=(Case("VQ codebook loss (w.r.t. codebook)", _latents(("codebook",))),),
        kinks=TIES, derivation=V, tests=("tests/test_vq.py",)),
    OpSpec(
        "commitment_loss", V.commitment_loss_forward, V.commitment_loss_backward,
        cases=(Case("VQ commitment loss (w.r.t. z_e)", _latents(("z_e",))),),
        kinks=TIES, derivation=V, tests=("tests/test_vq.py",)),
    OpSpec(
        "vq-vae", VQVAE.loss, VQVAE.backward,
        checks=(vq_vae_check("vq-vae loss (straight-through surrogate, codebook loss)"),
                vq_vae_check("vq-vae loss (straight-through surrogate, EMA codebook)",
                             ema=True)),
        kinks="ReLU kinks and " + TIES + " (draw_vq_model)", h=MODEL_STEP,
        implementations=("reference", "cpu", "cuda"),
        derivation=V, wrapper=vq_vae, tests=("tests/test_vq.py", "tests/test_gpu_path.py")),
)
