"""Registry entry of the k-sample objectives (scratchvae/models/vae.py) on
``iwae-1l``: its IWAE loss w.r.t. every parameter, and the DReG and STL
gradients against their surrogate.

DReG's and STL's backward is not the derivative of the loss: holding q's
parameters fixed inside log q and squaring the normalised weights define the
"gradient". As for the VQ straight-through check (vq.py), the check
differentiates the surrogate derived in scratchvae/models/vae.py,

    S = -1/N sum_n [ L_k(x_n; theta, z held)
                     + sum_i sg(w~_in^2) log w_in(theta held, z_in(phi), q held) ],

in which every held part is a value frozen at the base point: the samples
z0 and log-variances of the first term, and in the second the weights w~0,
the decoder's parameters (a copy of the model at the base point) and the
(mu0, logvar0) inside log q. iwae-1l is a tanh MLP: no kinks to avoid.
"""
import copy

import numpy as np

from ..models import iwae_1l
from ..models import vae as vae_module
from ..models.vae import VAE, log_weights
from ..ops.iwae import iwae_forward
from ..ops.sampler import reparameterize_forward
from .core import gradcheck, model_gradients
from .models import MODEL_KERNELS, vae_check
from .problems import MODEL_STEP, draw_vae
from .spec import Check, OpSpec

TOL = 1e-7


def bound_surrogate(model, frozen, x, eps):
    """The surrogate S above from the model's current parameters; ``frozen`` is
    the model at the base point (``frozen_point``)."""
    base, z0, mu0, logvar0, w0 = frozen
    # the bound as a function of the decoder (z, logvar held)
    nll, _ = model._recon_forward(model.decode(z0), _stack(x, eps), False)
    bound, _ = iwae_forward(log_weights(nll, z0, eps, logvar0))
    # the weighted log-weights as functions of the encoder through z alone
    mu, logvar = model.encode(x)
    z, _ = reparameterize_forward(mu, logvar, eps)
    nll_held, _ = base._recon_forward(base.decode(z), _stack(x, eps), False)
    k, n, dim = eps.shape
    log_pz = -0.5 * (z * z + np.log(2 * np.pi)).sum(axis=1)
    scaled = (z.reshape(k, n, dim) - mu0[None]) / np.exp(0.5 * logvar0)[None]
    log_qz = -0.5 * (scaled * scaled + logvar0[None] + np.log(2 * np.pi)).sum(axis=2)
    log_w = (log_pz - nll_held).reshape(k, n) - log_qz
    return float(-(bound + (w0 * w0 * log_w).sum(axis=0)).mean())


def _stack(x, eps):
    return np.concatenate([x] * eps.shape[0], axis=0)


def frozen_point(model, x, eps):
    """(a copy of the model, z0, mu0, logvar0, w~0) at the current parameters."""
    mu0, logvar0 = (a.copy() for a in model.encode(x))
    z0, _ = reparameterize_forward(mu0, logvar0, eps)
    nll, _ = model._recon_forward(model.decode(z0), _stack(x, eps), False)
    _, w0 = iwae_forward(log_weights(nll, z0, eps, logvar0))
    return copy.deepcopy(model), z0, mu0, logvar0, w0


def surrogate_gradcheck(name, model, x, eps, rng):
    """model.backward() of the last loss against central differences of S,
    w.r.t. every parameter."""
    frozen = frozen_point(model, x, eps)
    arrays, grads = model_gradients(name, model, x, eps=eps)
    return gradcheck(lambda: bound_surrogate(model, frozen, x, eps), arrays, grads,
                     name=name, rng=rng, tol=TOL, h=MODEL_STEP)


def surrogate_check(name, objective, k):
    """A small float64 iwae-1l under ``objective`` with k samples, against S."""
    def run(rng):
        model, x, kwargs = draw_vae(rng, iwae_1l, L=k, objective=objective)
        return surrogate_gradcheck(name, model, x, kwargs["eps"], rng)
    return Check(name, run)


SPECS = (
    OpSpec(
        "iwae-1l", VAE.loss, VAE.backward,
        checks=(vae_check("iwae-1l loss (ELBO)", iwae_1l),
                vae_check("iwae-1l loss (IWAE, k=3)", iwae_1l, L=3, objective="iwae"),
                vae_check("iwae-1l loss (IWAE, k=1)", iwae_1l, objective="iwae"),
                surrogate_check("iwae-1l DReG surrogate (k=3)", "dreg", 3),
                surrogate_check("iwae-1l STL surrogate (k=1)", "stl", 1)),
        kinks="none (tanh)", h=MODEL_STEP, implementations=MODEL_KERNELS,
        derivation=vae_module, wrapper=iwae_1l, tests=("tests/test_objectives.py",)),
)
