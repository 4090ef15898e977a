"""scratchvae: variational autoencoders on NumPy/CuPy with hand-derived backward passes.

The package is layered; each layer imports only those below it:

1. ``backend`` (array module, RNG, validation) and the top-level ``kernels``
   package (Numba/CUDA hot loops beside their NumPy references)
2. ``ops`` (functional forward/backward pairs)
3. ``layers`` (modules with parameters), ``losses``, ``optimizers``
4. ``models`` (the VAE chain and its architectures)
5. ``gradcheck`` (the op spec registry and its checks); ``train``, ``data``, ``checkpoints``
6. ``cli`` (``python -m scratchvae``)
"""
__version__ = "0.1.0"
