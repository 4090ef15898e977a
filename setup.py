from setuptools import find_packages, setup

setup(
    name="scratchvae",
    version="0.1.0",
    description="Variational autoencoders from scratch on NumPy/CuPy, every backward derived by "
                "hand and checked by finite differences",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["scratchvae", "scratchvae.*", "kernels", "kernels.*"]),
    package_data={"scratchvae": ["sample_data/*/*.gz", "sample_data/*/*.md",
                                 "sample_data/*.md"]},
    install_requires=["numpy>=1.24,<2.6", "numba>=0.60", "scipy>=1.9", "threadpoolctl>=3.1",
                      "tqdm>=4.60", "dask>=2024.1", "distributed>=2024.1"],
    extras_require={
        "gpu": ["cupy-cuda13x>=14"],
        "plot": ["matplotlib>=3.6"],
        "test": ["pytest>=7", "matplotlib>=3.6"],
        "bench": ["torch"],
        # Intel's MKL runtime for the products (SCRATCHVAE_BLAS=mkl; kernels/blas.py)
        "mkl": ["mkl"],
    },
    entry_points={"console_scripts": ["scratchvae=scratchvae.cli:main"]},
)
