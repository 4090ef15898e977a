"""Every CUDA kernel of kernels/ on device arrays against its NumPy reference
(tests/gpu_kernel_checks.py, on the backend tests/gpu_backend.py chooses)."""
import pytest

import gpu_kernel_checks
from gpu_backend import run_on_gpu

pytestmark = pytest.mark.gpu


def test_every_cuda_kernel_has_a_check():
    found = gpu_kernel_checks.discover_cuda_kernels()
    assert len(found) >= 10, found             # the scan finds the kernels it should
    assert set(found) == set(gpu_kernel_checks.CHECKS), (
        f"kernels without a check: {sorted(set(found) - set(gpu_kernel_checks.CHECKS))}; "
        f"checks of no kernel: {sorted(set(gpu_kernel_checks.CHECKS) - set(found))}")


def test_the_scan_finds_a_new_kernel(tmp_path, monkeypatch):
    (tmp_path / "extra.py").write_text("@cuda.jit\ndef extra_kernel(x):\n    pass\n\n"
                                       "@cuda.jit(fastmath=False)\ndef other_kernel(y):\n"
                                       "    pass\n")
    monkeypatch.setattr(gpu_kernel_checks, "KERNELS_DIR", tmp_path)
    assert gpu_kernel_checks.discover_cuda_kernels() == {"extra_kernel": "extra",
                                                          "other_kernel": "extra"}


def test_every_cuda_kernel_matches_its_reference_on_device_arrays():
    out = run_on_gpu("import gpu_kernel_checks; gpu_kernel_checks.main()")
    for name in gpu_kernel_checks.CHECKS:
        assert f"checked {name} " in out, out


def test_own_cublas_handle_multiplies_like_numpy_and_captures():
    out = run_on_gpu("import gpu_backend, gpu_kernel_checks; "
                     "gpu_kernel_checks.check_cublas_handle(gpu_backend.check_child(), "
                     "gpu_backend.on_real_cupy()); print(gpu_backend.OK)")
    assert "checked the own cuBLAS handle" in out, out


def test_a_kernel_that_skips_an_element_is_caught():
    """The poisoned allocations make an unwritten output element a failure."""
    script = """
import gpu_kernel_checks, kernels.relu as R
real = R._relu_forward_cuda
R._relu_forward_cuda = lambda x, y: real(x[:-1], y[:-1])   # the last one unwritten
try:
    gpu_kernel_checks.main(only={"relu_forward_kernel"})
except AssertionError as e:
    print("caught:", " ".join(str(e).split())[:400])
    print("GPU OK")
"""
    out = run_on_gpu(script)
    assert "caught:" in out and "relu_forward" in out, out
