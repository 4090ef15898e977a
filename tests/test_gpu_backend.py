"""The switch of the GPU tests (tests/gpu_backend.py): which backend, and the
clear error when real CuPy is demanded where there is none."""
import types

import pytest

import gpu_backend

pytestmark = pytest.mark.gpu


def _fake_real_cupy(name=b"NVIDIA H200"):
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1,
                                    getDeviceProperties=lambda i: {"name": name})
    return types.SimpleNamespace(__version__="14.2.0", cuda=types.SimpleNamespace(runtime=runtime))


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(gpu_backend, "_probe", lambda: (None, "ModuleNotFoundError: cupy"))


@pytest.fixture
def with_cupy(monkeypatch):
    monkeypatch.setattr(gpu_backend, "_probe", lambda: (_fake_real_cupy(), None))


@pytest.mark.parametrize("value", ["", "auto", "AUTO", " stand-in "])
def test_without_cupy_the_stand_in_is_chosen(no_cupy, monkeypatch, value):
    monkeypatch.setenv(gpu_backend.ENV_VAR, value)
    assert gpu_backend.backend() == "stand-in"
    assert not gpu_backend.on_real_cupy()
    assert gpu_backend.describe() == ("GPU tests: the NumPy stand-in under Numba's CUDA "
                                      "simulator")


def test_asking_for_cupy_where_there_is_none_is_an_error(no_cupy, monkeypatch):
    monkeypatch.setenv(gpu_backend.ENV_VAR, "cupy")
    with pytest.raises(RuntimeError, match=r"SCRATCHVAE_GPU_TESTS=cupy: the GPU tests need "
                                           r"real CuPy and a CUDA device, but "
                                           r"ModuleNotFoundError: cupy"):
        gpu_backend.backend()
    assert gpu_backend.describe().startswith("GPU tests: cannot run (SCRATCHVAE_GPU_TESTS=cupy")
    with pytest.raises(RuntimeError):
        gpu_backend.run_on_gpu("print('GPU OK')")


def test_a_bad_value_names_the_accepted_ones(monkeypatch):
    monkeypatch.setenv(gpu_backend.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match=r"SCRATCHVAE_GPU_TESTS: expected one of auto, "
                                         r"stand-in, cupy \(or unset\), got 'gpu'"):
        gpu_backend.backend()


@pytest.mark.parametrize("value", ["", "cupy"])
def test_real_cupy_is_chosen_where_it_works(with_cupy, monkeypatch, value):
    monkeypatch.setenv(gpu_backend.ENV_VAR, value)
    assert gpu_backend.backend() == "cupy"
    assert gpu_backend.describe() == "GPU tests: real CuPy 14.2.0 on NVIDIA H200"
    monkeypatch.setenv(gpu_backend.ENV_VAR, "stand-in")       # the override wins
    assert gpu_backend.backend() == "stand-in"


def test_no_cupy_and_no_device_here():
    """This machine has no GPU: the probe says why (real CuPy would be chosen otherwise)."""
    cupy, why = gpu_backend._probe()
    if cupy is not None:
        pytest.skip("real CuPy with a CUDA device is present")
    assert why


def test_the_script_runs_on_the_chosen_backend(no_cupy, monkeypatch):
    monkeypatch.delenv(gpu_backend.ENV_VAR, raising=False)
    monkeypatch.setenv("SCRATCHVAE_KERNELS", "reference")       # not passed on
    out = gpu_backend.run_on_gpu(
        "import os, gpu_backend; cupy = gpu_backend.check_child(); "
        "print(os.environ['SCRATCHVAE_GPU_TESTS'], 'SCRATCHVAE_KERNELS' in os.environ, "
        "cupy.__version__); print('GPU OK')")
    assert out.split()[:3] == ["stand-in", "False", "13.0.0+fake"]


def test_a_script_that_fails_or_forgets_ok_fails(no_cupy, monkeypatch):
    monkeypatch.setenv(gpu_backend.ENV_VAR, "auto")   # gpu_check.sh sets it to cupy
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        gpu_backend.run_on_gpu("1 / 0")
    with pytest.raises(AssertionError, match="no ok"):
        gpu_backend.run_on_gpu("print('no ok')")
