"""benchmarks/bench_gpu.py --smoke on the GPU tests' backend: every section
runs and fills its table (tiny sizes: a check of the script, not a benchmark)."""
import json

import pytest

from gpu_backend import ROOT, run_on_gpu

pytestmark = pytest.mark.gpu


def test_smoke_run_fills_every_table(tmp_path):
    script = (f"import sys; sys.argv = ['bench_gpu.py', '--smoke', '--out', {str(tmp_path)!r}]\n"
              f"import runpy\n"
              f"try:\n"
              f"    runpy.run_path({str(ROOT / 'benchmarks' / 'bench_gpu.py')!r}, "
              f"run_name='__main__')\n"
              f"except SystemExit as e:\n"
              f"    assert e.code == 0, e.code\n"
              f"print('GPU OK')\n")
    out = run_on_gpu(script)
    result = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert result["errors"] == [], result["errors"]
    assert result["meta"]["smoke"] is True
    rows = {(r["model"], r["impl"]): r for r in result["speed"]}
    for model in ("mlp-vae", "conv-vae", "vq-vae"):
        eager = rows[(model, "scratchvae eager")]
        assert eager["step_ms"] > 0 and eager["epoch_s"] > 0, eager
        assert (model, "scratchvae captured") in rows
        assert any(m == model and impl.startswith("PyTorch") for m, impl in rows)
    parts = {r["model"]: r for r in result["breakdown"]}
    assert set(parts) == {"mlp-vae", "conv-vae", "vq-vae"}
    assert parts["mlp-vae"]["ms"]["elementwise"] > 0 and parts["mlp-vae"]["launches"] > 0
    assert parts["conv-vae"]["ms"]["im2col/col2im"] > 0
    assert parts["vq-vae"]["ms"]["VQ search"] > 0
    kernels = [r["kernel"] for r in result["bandwidth"]]
    assert kernels == ["device-to-device copy", "im2col", "col2im", "VQ search (nearest_code)"]
    assert all(r["gb_s"] > 0 and r["fraction"] > 0 for r in result["bandwidth"])
    table = (tmp_path / "bench_gpu.md").read_text()
    assert "## Training speed" in table and "## Bandwidth at large sizes" in table
    assert "| vq-vae | scratchvae eager |" in table and "## Training speed" in out


def test_a_section_that_may_not_fit_the_budget_is_skipped(tmp_path):
    script = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
              f"import bench_gpu\n"
              f"rc = bench_gpu.main(['--smoke', '--models', 'mlp-vae', '--budget', '1', "
              f"'--out', {str(tmp_path)!r}])\n"
              f"assert rc == 0, rc\n"
              f"print('GPU OK')\n")
    run_on_gpu(script)
    result = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert result["errors"] == []
    # nothing timed; with PyTorch on a GPU, --smoke lists torch.compile as not run
    assert [r for r in result["speed"] if r.get("note") != "n/a (--smoke)"] == []
    assert [s.split(":")[0] for s in result["skipped"]] == [
        "mlp-vae scratchvae eager", "mlp-vae scratchvae captured", "mlp-vae PyTorch eager"]
    assert "## Skipped (--budget)" in (tmp_path / "bench_gpu.md").read_text()


def test_bad_model_names_are_a_usage_error():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"),
                           "--models", "mlp-vae,pixelcnn"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--models: expected names among mlp-vae, conv-vae, vq-vae, got pixelcnn" in proc.stderr
