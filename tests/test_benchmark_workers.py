"""Processes that time PyTorch import it before anything of scratchvae.

A process that times PyTorch must not share the cores with scratchvae's thread
pool or BLAS settings (benchmarks/common.import_torch says why). Each script
below is run as ``__main__`` in a fresh interpreter with
``benchmarks.common.import_torch`` replaced by a probe that reports whether
scratchvae was already imported, then stops the script. No PyTorch needed.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import runpy, sys
sys.path.insert(0, {root!r})
import benchmarks.common as common

def probe(threads):
    print("scratchvae imported before PyTorch:", "scratchvae" in sys.modules)
    sys.exit(0)

common.import_torch = probe
sys.argv = {argv!r}
runpy.run_path({script!r}, run_name="__main__")
print("the script never asked for PyTorch")
"""


@pytest.mark.parametrize("script,args", [
    ("bench_train.py", ["--worker", "torch", "conv-vae", "1", "2"]),
    ("bench_train.py", ["--worker", "torch", "pixelcnn", "1", "2", "0", '{"epoch_steps": 0}']),
    ("bench_train.py", ["--worker", "torch-quality", "vq-vae", "1", "2", "0",
                        '{"vq_init": "uniform", "vq_restart": 0}']),
    ("bench_train.py", ["--worker", "torch-products", "mlp-vae", "1", "1"]),
    ("bench_train.py", ["--worker", "torch-ftz", "conv-vae", "1", "2"]),
    ("bench_conv_layers.py", ["--worker", "torch", "2", "1"]),
    ("profile_step.py", ["--torch"]),
    ("profile_step.py", ["--torch", "--model", "iwae-1l", "--batch", "20", "--k", "5"]),
])
def test_pytorch_is_imported_before_scratchvae(script, args):
    path = os.path.join(ROOT, "benchmarks", script)
    code = PROBE.format(root=ROOT, argv=[path, *args], script=path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "scratchvae imported before PyTorch: False", result.stdout


def test_the_torch_ftz_worker_flushes_subnormals_and_the_plain_one_does_not():
    """--torch-ftz: the PyTorch twin under torch.set_flush_denormal(True), reported
    in its result; the plain torch kind leaves PyTorch's default."""
    pytest.importorskip("torch")
    script = os.path.join(ROOT, "benchmarks", "bench_train.py")
    for kind, flushed in (("torch-ftz", True), ("torch", False)):
        result = subprocess.run([sys.executable, script, "--worker", kind, "mlp-vae", "2", "1",
                                 "0", '{"epoch_steps": 2}'], capture_output=True, text=True,
                                cwd=ROOT)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout.strip().splitlines()[-1])
        assert out["flush_denormal"] is flushed and out["epoch_steps"] == 2
    probe = ("import torch; torch.set_flush_denormal(True); "
             "print(float(torch.tensor([1e-39]) * 1.0))")       # a subnormal float32
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True,
                          text=True).stdout.strip() == "0.0"


def test_import_torch_refuses_after_scratchvae():
    import scratchvae  # noqa: F401  (already imported by the test session, surely)
    from benchmarks.common import import_torch

    with pytest.raises(RuntimeError, match="import PyTorch before scratchvae"):
        import_torch(1)


def test_seed_table_refuses_a_run_of_another_model(tmp_path):
    """seed_table.py prints each row's test metric from the run directory it is
    given; a directory of another model must not put that model's metric in the row."""
    sys.path.insert(0, ROOT)
    from benchmarks.seed_table import _last_record

    (tmp_path / "config.json").write_text('{"model": "conv-vae", "beta": 1.0}')
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "test_nelbo": 110.0}\n')
    record, config = _last_record(str(tmp_path), "conv-vae")
    assert record["test_nelbo"] == 110.0 and config["model"] == "conv-vae"
    with pytest.raises(SystemExit, match="is a conv-vae run, expected vq-vae"):
        _last_record(str(tmp_path), "vq-vae")


def test_bench_train_threads_reach_scratchvae_workers():
    """``bench_train.py --threads N`` sets scratchvae's pools in its workers'
    environment, read by Numba (and OpenBLAS) when they load; without it the
    workers inherit the environment unchanged."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench_train import WORKER_ENV, _worker_env

    assert _worker_env() is WORKER_ENV
    env = _worker_env(1)
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["NUMBA_NUM_THREADS"] == "1"
    out = subprocess.run([sys.executable, "-c", "import numba; print(numba.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


@pytest.mark.parametrize("epoch_steps, stepped", [(0, list(range(10))), (4, [0, 1, 2, 3]),
                                                  (20, list(range(10)))])
def test_bench_train_times_the_first_epoch_steps_of_the_epoch(epoch_steps, stepped):
    """``--epoch-steps N`` steps through the first N batches of the epoch only
    (0, or more than the epoch holds: all of them) and says how many it timed."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench_train import _time

    seen = []
    result = _time(lambda xb, yb: seen.append(xb), [(i, i) for i in range(10)], (-1, -1),
                   steps=2, n_params=1, threads=1, epoch_steps=epoch_steps)
    assert seen == [-1] * 12 + stepped                   # 10 warm-up and 2 timed steps first
    assert result["epoch_steps"] == len(stepped) and result["n_batches"] == 10


def test_bench_train_times_epoch_two_after_untimed_epochs():
    """The engines' loops are timed on the `train` command's epoch (2): the epoch
    before it runs untimed, after the step timings."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench_train import _time

    class Epochs:                   # a fresh epoch per iteration, as BatchIterator
        count = 0

        def __len__(self):
            return 3

        def __iter__(self):
            Epochs.count += 1
            return iter([(Epochs.count, k) for k in range(3)])

    seen = []
    result = _time(lambda xb, yb: seen.append((xb, yb)), Epochs(), (0, -1), steps=2,
                   n_params=1, threads=1, epoch=2)
    assert seen == [(0, -1)] * 12 + [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert result["epoch_steps"] == 3


def test_bench_train_ratio_round_by_round():
    """Each round's epochs are paired: the mean of the rounds' ratios, its 95% Student-t
    interval and their range (here ratios 0.8, 0.9, 1.0: mean 0.9, half-width
    t(0.975, 2) * 0.1 / sqrt(3) = 0.248)."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench_train import round_ratio_row

    results = {"train": [{"epoch_s": s} for s in (8.0, 9.0, 12.0)],
               "torch": [{"epoch_s": s} for s in (10.0, 10.0, 12.0)]}
    row = round_ratio_row(results, "train", "torch", "`train`", "PyTorch")
    assert row[0] == "ratio `train` / PyTorch, round by round: mean [95% interval] (3 rounds)"
    assert row[3] == "0.90x [0.65, 1.15]" and row[4] == "0.80-1.00x"


def test_bench_train_keeps_every_rounds_epochs(tmp_path):
    """The round table: each round's epochs of the kinds that ran and their ratios to
    PyTorch's in that round; save_table writes it after the main table."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench_train import round_table
    from benchmarks.common import save_table

    results = {"train": [{"epoch_s": s} for s in (8.0, 9.0)],
               "ours": [{"epoch_s": s} for s in (7.5, 10.0)],
               "torch": [{"epoch_s": s} for s in (10.0, 12.5)]}
    header, rows = round_table(results, {"train": "`train`", "ours": "loop",
                                         "torch": "PyTorch", "torch-ftz": "ftz"})
    assert header == ["round", "`train` (s)", "loop (s)", "PyTorch (s)",
                      "`train` / PyTorch", "loop / PyTorch"]
    assert rows == [["1", "8.00", "7.50", "10.00", "0.800", "0.750"],
                    ["2", "9.00", "10.00", "12.50", "0.720", "0.800"]]
    path = tmp_path / "t.md"
    save_table(str(path), "main", ["a"], [["1"]], extra=[("rounds", header, rows),
                                                          ("more", ["b"], [["2"]])])
    text = path.read_text()
    assert text.index("## main") < text.index("## rounds") < text.index("## more")
    assert "| 2 | 9.00 | 10.00 | 12.50 | 0.720 | 0.800 |" in text


def test_bench_train_runs_the_train_command_and_reads_its_epoch(tmp_path):
    """The headline comes from the command users run: its epoch 2 as metrics.jsonl
    records it, and the threads and BLAS its header names."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench_train import TRAIN_EPOCHS, run_train_command

    result = run_train_command("mlp-vae", 1, str(tmp_path),
                               extra=["--train-limit", "512", "--test-limit", "128"])
    with open(tmp_path / "train-mlp-vae" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == TRAIN_EPOCHS
    assert result["epoch_s"] == records[-1]["train_seconds"] > 0
    assert result["threads"] == 1
    assert "OpenBLAS" in result["blas"] or "MKL" in result["blas"]


def test_train_overhead_times_the_command_and_the_loop_in_pairs():
    """benchmarks/train_overhead.py: both loops run on one model (a tiny training
    set here); the summary is the mean ratio with its Student-t interval."""
    sys.path.insert(0, ROOT)
    from benchmarks.common import paired_rows, paired_summary
    from benchmarks.train_overhead import measure

    results = measure("mlp-vae", 2, train_limit=384, log=lambda *a: None)
    assert len(results) == 2 and all(c > 0 and b > 0 for c, b in results)
    mean, (lo, hi) = paired_summary([(1.1, 1.0), (1.3, 1.0), (1.2, 1.0)])
    # ratios 1.1, 1.3, 1.2: sd 0.1, t_{0.975, 2} = 4.3027
    assert mean == pytest.approx(1.2)
    assert (lo, hi) == pytest.approx((1.2 - 4.3027 * 0.1 / 3 ** 0.5,
                                      1.2 + 4.3027 * 0.1 / 3 ** 0.5), abs=1e-4)
    rows = paired_rows([(1.1, 1.0), (1.3, 1.0), (1.2, 1.0)])
    assert rows[1] == ["2", "1.30", "1.00", "1.300"]
    assert rows[-1] == ["mean (95% interval)", "1.20", "1.00",
                        f"1.200 [{1.2 - 4.3027 * 0.1 / 3 ** 0.5:.3f}, "
                        f"{1.2 + 4.3027 * 0.1 / 3 ** 0.5:.3f}]"]


def test_bench_fusion_times_both_settings_on_one_model_and_sets_every_stack():
    """benchmarks/bench_fusion.py: each round times the fused and the separate step;
    the setting reaches every Sequential of the model (the conv CVAE has three)."""
    sys.path.insert(0, ROOT)
    from benchmarks import bench_fusion
    from scratchvae.models import build_model

    assert len(bench_fusion.stacks(build_model("conv-cvae"))) == 3
    seen = []
    real = bench_fusion.stacks

    def spying(model):
        found = real(model)
        seen.append([s.fuse_relu for s in found])   # as the previous timing left them
        return found
    bench_fusion.stacks = spying
    try:
        results = bench_fusion.measure("conv-vae", 2, 1, log=lambda *a: None)
    finally:
        bench_fusion.stacks = real
    assert len(results) == 2 and all(f > 0 and s > 0 for f, s in results)
    # round 1: fused then separate; round 2: separate then fused (each set on both stacks)
    assert seen == [[True, True], [True, True], [False, False], [False, False]]


def test_bench_train_products_are_the_mlp_steps_and_replay_alone():
    """--products: the 11 products of one mlp-vae step (forward, dX, dW of its linear
    layers; none for the images' gradient), in their layouts, replayed alone."""
    sys.path.insert(0, ROOT)
    from benchmarks import bench_train
    from benchmarks.common import product_layouts

    calls, convs, _ = bench_train.recorded_products("mlp-vae")
    assert convs == []
    assert [f"{a.shape[0]}x{a.shape[1]}x{b.shape[1]}" for a, b, _ in calls] == [
        "128x784x400", "128x400x40", "128x20x400", "128x400x784",     # forward
        "128x784x400", "784x128x400", "128x400x20", "400x128x20",     # decoder's backward
        "128x40x400", "40x128x400", "400x128x784"]                   # encoder's backward
    layouts = product_layouts(calls)
    assert layouts[0] == [128, 784, 400, False, True]      # x @ W.T: W read transposed
    assert any(row[3] for row in layouts)                  # dW = dY.T @ X: dY transposed
    for update in (False, True):                           # ours-products, ours-floor
        result = bench_train.worker_ours_products("mlp-vae", 2, update=update)
        assert result["products"] == 11 and result["step_ms"] > 0


def test_bench_train_products_of_a_conv_step_are_its_fused_kernels_calls():
    """--products for conv-vae: the step's nine fused conv kernel calls (forward,
    backward; the first layer's input gradient skipped) besides its linear layers'
    products, each with its geometry, chunks (per window class for the padded
    middle layers) and threads."""
    sys.path.insert(0, ROOT)
    from benchmarks import bench_train

    calls, convs, _ = bench_train.recorded_products("conv-vae")
    assert len(calls) == 12                         # 4 linear layers: forward, dX, dW
    assert [(c["kind"], c["N"] * c["P"], c["width"], c["O"] or c["D"] or c["C"])
            for c in convs] == [
        ("forward", 128 * 196, 16, 32), ("forward", 128 * 49, 512, 64),      # encoder
        ("transposed", 128 * 49, 512, 64), ("transposed", 128 * 196, 16, 32),  # decoder
        ("forward+weight", 128 * 196, 16, 32),                 # the last ConvT's backward
        ("forward+weight", 128 * 49, 512, 64),                 # the first ConvT's
        ("weight", 128 * 49, 512, 64), ("transposed", 128 * 49, 512, 64),   # Conv 32->64
        ("weight", 128 * 196, 16, 32)]                         # Conv 1->32: no dx
    assert all(c["threads"] >= 1 for c in convs)
    for c in convs:         # the padded middle layers go by window classes: nine of them
        if c["width"] == 512:
            counts, widths, chunks, runs = c["classes"]
            assert counts.tolist() == [1, 5, 1, 5, 25, 5, 1, 5, 1] and widths.max() == 512
            assert (chunks >= 1).all() and runs.tolist() == [96, 0, 96] * 3
        else:
            assert c["chunk"] >= 1 and "classes" not in c
    for update in (False, True):                               # ours-products, ours-floor
        result = bench_train.worker_ours_products("conv-vae", 2, update=update)
        assert result["products"] == 21 and result["conv_calls"] == 9
        assert result["step_ms"] > 0


def test_conv_products_replay_makes_the_recorded_products_chunk_by_chunk():
    """benchmarks/conv_products.py replays each record's BLAS calls on its own
    operands: the forward, weight and transposed products are those of the
    columns it made, over each thread's images and chunks."""
    sys.path.insert(0, ROOT)
    from benchmarks import conv_products as CP

    base = {"N": 5, "P": 3, "width": 4, "chunk": 2, "threads": 2, "dtype": np.float64}
    records = [dict(base, kind=CP.FORWARD_AND_WEIGHT, O=6, D=2, C=0),
               dict(base, kind=CP.TRANSPOSED, O=0, D=0, C=3)]
    run, buffers = CP.replay(records, np.random.default_rng(0))
    run()
    (cols, W, out, R, parts), (tcols, tW, _, tR, _) = buffers
    for t, (lo, hi) in enumerate([(0, 2), (2, 5)]):           # each thread's images
        chunks = [(n0, min(n0 + 2, hi)) for n0 in range(lo, hi, 2)]
        rows = [(n1 - n0) * 3 for n0, n1 in chunks]
        for (n0, n1), r in zip(chunks, rows):                 # the same columns each chunk
            np.testing.assert_allclose(out[n0 * 3:n1 * 3], cols[t, :r] @ W.T)
        np.testing.assert_allclose(parts[t], sum(R[n0 * 3:n1 * 3].T @ cols[t, :r]
                                                 for (n0, n1), r in zip(chunks, rows)))
        n0, n1 = chunks[-1]                                   # the last chunk's columns stay
        np.testing.assert_allclose(tcols[t, :rows[-1]], tR[n0 * 3:n1 * 3] @ tW)


def test_bench_train_products_refuses_the_prior():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train.py"),
                             "--model", "pixelcnn", "--products"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert ("--products times mlp-vae, conv-vae, conv-cvae, vq-vae, not pixelcnn"
            in result.stderr)


def test_profile_step_times_the_iwae_step_part_by_part(tmp_path):
    """profile_step.py --model iwae-1l: Burda et al.'s step over k samples, each
    layer's passes and what lies outside them, in a table."""
    out = tmp_path / "profile.md"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"),
                             "--model", "iwae-1l", "--batch", "3", "--k", "2", "--steps", "2",
                             "--warmup", "1", "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "## iwae-1l: one training step, layer by layer" in text and "batch 3;" in text
    assert "| decoder[4] Linear | backward |" in text and "| optimizer (Adam) |" in text


@pytest.mark.parametrize("args, expected", [
    (["--model", "conv-vae", "--k", "5"], "--k and --objective are options of --model iwae-1l"),
    (["--model", "iwae-1l", "--k", "0"], "--batch and --k take numbers >= 1"),
    (["--model", "conv-vae", "--out", "x.md"], "--out is an option of --model iwae-1l"),
])
def test_profile_step_refuses_options_of_another_model(args, expected):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"),
                             *args], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and expected in result.stderr


def test_bench_window_classes_times_both_settings_and_restores_the_classes():
    """benchmarks/bench_window_classes.py: each round times the step (and each product)
    with the window classes and over the full columns, and leaves the classes on."""
    sys.path.insert(0, ROOT)
    import kernels.conv_gemm as G
    from benchmarks import bench_window_classes as B

    seen = []
    real = B.use_classes

    def spying(on):
        seen.append(on)
        real(on)
    B.use_classes = spying
    try:
        results = B.measure_steps("vq-vae", 2, 1, log=lambda *a: None)
        timed = B.measure_products(1, 1, log=lambda *a: None)
    finally:
        B.use_classes = real
    assert len(results) == 2 and all(a > 0 and b > 0 for a, b in results)
    assert seen[:4] == [True, False, False, True] and G.BY_CLASSES
    assert [name for name, _, _ in timed] == [name for name, _, _ in B.products()]
    assert len(timed) == 7 and all(len(r) == 1 and r[0][0] > 0 for _, _, r in timed)
    # the multiply-adds over the in-image taps: 13.8% and 18% fewer than the full columns
    assert abs(timed[0][1] / (128 * 49 * 512 * 64) - 0.862) < 1e-3
    assert abs(timed[4][1] / (128 * 49 * 144 * 64) - 0.819) < 1e-3
