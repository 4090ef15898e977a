"""Test-suite settings shared by every test module.

``gpu``: the tests of the GPU path (CUDA kernels against their references,
whole training steps on the device). ``python -m pytest -m gpu tests`` runs
them alone; the report's header says which backend they run on (real CuPy
or the NumPy stand-in, chosen by tests/gpu_backend.py).
"""
import gpu_backend


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: a test of the GPU path (run alone with `python -m pytest -m gpu tests`)")


def pytest_report_header(config):
    return gpu_backend.describe()
