"""The reparameterised Gaussian sampler of a VAE.

    z = mu + sigma * eps,   sigma = exp(logvar / 2),   eps ~ N(0, I)

Writing the sample as a deterministic function of (mu, logvar) and of noise
eps that does not depend on them lets the gradient flow into the encoder.

Shapes: mu, logvar (N, Z); eps (L, N, Z) for L samples per input;
z (L*N, Z), sample l of input n at row l*N + n (so the decoder sees L
ordinary batches stacked).

Registry entry (gradient checks, generated tests, docs/derivations.md):
scratchvae/gradcheck/losses.py.
"""
from ..backend import check_float, check_same, check_shape, get_xp, standard_normal


def draw_eps(rng, n_samples, mu):
    """eps ~ N(0, I) of shape (L, N, Z) and mu's dtype, from an explicit generator."""
    return standard_normal(rng, (n_samples,) + tuple(mu.shape), mu.dtype)


def reparameterize_forward(mu, logvar, eps):
    """z = mu + exp(logvar/2) * eps.  Returns ``(z, cache)``; caches (eps, sigma).

    The standard deviation is exp(logvar / 2), not the variance exp(logvar):
    scaling eps by the variance is a classic bug that a gradient check cannot
    see (the backward would be consistent with it) but a distribution test
    can (tests/test_ops.py checks the sample moments).
    """
    check_shape("Reparameterize", "mu", mu, (None, None))
    check_float("Reparameterize", "mu", mu)
    check_same("Reparameterize", "mu", mu, "logvar", logvar)
    check_shape("Reparameterize", "eps", eps, (None,) + tuple(mu.shape))
    check_float("Reparameterize", "eps", eps, mu.dtype)
    xp = get_xp(mu)
    sigma = xp.exp(0.5 * logvar)
    z = mu[None] + sigma[None] * eps
    return z.reshape(-1, mu.shape[1]), (eps, sigma)


def reparameterize_backward(dz, cache):
    """dz (L*N, Z) -> (dmu, dlogvar), each (N, Z).

    dz_l/dmu = 1 and dz_l/dlogvar = eps_l * d sigma/d logvar = eps_l * sigma / 2,
    summed over the L samples that share one (mu, logvar):

        dmu     = sum_l dz_l
        dlogvar = sum_l dz_l * eps_l * sigma / 2
    """
    eps, sigma = cache
    L, N, Z = eps.shape
    check_shape("Reparameterize.backward", "upstream gradient", dz, (L * N, Z))
    dz = dz.reshape(L, N, Z)
    dmu = dz.sum(axis=0)
    dlogvar = (dz * eps).sum(axis=0) * (0.5 * sigma)
    return dmu, dlogvar
