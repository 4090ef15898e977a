"""Functional op pairs: ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> gradients``, each derived in its docstring.

- linear.py       Linear (y = x W^T + b)
- activations.py  ReLU, LeakyReLU, Sigmoid, Tanh
- shape.py        Flatten, Reshape, Concat
- sampler.py      reparameterised Gaussian sampler z = mu + exp(logvar/2) eps
- conv.py         Conv2d and ConvTranspose2d (im2col / col2im), masked Conv2d
                  (PixelCNN types A and B)
- embedding.py    Embedding (a gather, backward a scatter-add) and the
                  class-conditional bias
- iwae.py         the importance-weighted bound log (1/k) sum_i w_i (Burda et al.)
- vq.py           vector quantisation: nearest code, straight-through copy,
                  codebook and commitment losses, EMA codebook update

Every pair has an entry in the op spec registry (scratchvae/gradcheck/),
from which its gradient checks, its generated tests and docs/derivations.md
come; a ``*_backward`` without one fails tests/test_op_specs.py.
"""
