"""Shared helpers of the benchmark scripts: data, timing, thread counts, tables."""
import os
import platform
import time

import numpy as np


def mnist_arrays():
    """(x_train, y_train), (x_test, y_test) of the full MNIST set: images float32
    in [0, 1], shape (N, 1, 28, 28); labels int64. Benchmarks never use the
    bundled sample."""
    from scratchvae import data
    ds = data.load_dataset("mnist", download="auto", allow_sample=False)
    return ((data.images_to_float(ds.train_images), ds.train_labels.astype(np.int64)),
            (data.images_to_float(ds.test_images), ds.test_labels.astype(np.int64)))


def training_step(model, optimizer, rng):
    """``step(xb, yb)``: one Adam step of a scratchvae model as the CPU ``train`` loop
    runs it (unchecked uint8-range images, the loss read back to the host)."""
    def step(xb, yb):
        optimizer.zero_grad()
        loss, _ = model.loss(xb, rng=rng, labels=yb, check_inputs=False)
        float(loss)
        model.backward()
        optimizer.step()
    return step


def sample_times(fn, repeats, warmup=3):
    """Wall times of ``repeats`` calls of fn() in seconds, after ``warmup`` calls."""
    return sample_times_after(lambda: None, fn, repeats, warmup)


def sample_times_after(prepare, fn, repeats, warmup=3):
    """Wall times of ``repeats`` calls of fn() in seconds, each after an untimed
    prepare(), following ``warmup`` untimed rounds of both."""
    for _ in range(warmup):
        prepare()
        fn()
    times = []
    for _ in range(repeats):
        prepare()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def record_products(run_once):
    """The matrix products of one call of ``run_once()`` (a training step): (a, b, out)
    for every call of the linear layers' ``matmul`` (scratchvae.ops.linear), the
    operands as the step handed them over, ``out=`` included. The floor under a step:
    it cannot take less than its products."""
    from scratchvae.ops import linear

    calls, matmul = [], linear.matmul

    def recording(a, b, out=None):
        result = matmul(a, b, out=out)
        calls.append((a, b, out))
        return result
    linear.matmul = recording
    try:
        run_once()
    finally:
        linear.matmul = matmul
    return calls


def replay_products(calls, optimizer=None):
    """A function that runs the recorded ``calls`` back to back on kernels.gemm.matmul,
    then, given an ``optimizer``, its ``step()`` on the gradients the recorded step
    left: the floor under a step that must also update its parameters."""
    from kernels.gemm import matmul

    def products():
        for a, b, out in calls:
            matmul(a, b, out=out)
        if optimizer is not None:
            optimizer.step()
    return products


def product_layouts(calls):
    """The recorded products as [M, K, N, a transposed, b transposed] rows (JSON), for a
    PyTorch process, which must not import scratchvae, to rebuild them."""
    return [[a.shape[0], a.shape[1], b.shape[1], not a.flags.c_contiguous,
             not b.flags.c_contiguous] for a, b, _ in calls]


def torch_products(torch, layouts):
    """A function that runs ``torch.mm`` over operands of the shapes and transposes of
    ``layouts`` (:func:`product_layouts`), a transposed operand as a ``.t()`` view."""
    def operand(rows, cols, transposed):
        t = torch.randn(cols, rows) if transposed else torch.randn(rows, cols)
        return t.t() if transposed else t
    pairs = [(operand(m, k, ta), operand(k, n, tb)) for m, k, n, ta, tb in layouts]

    def products():
        for a, b in pairs:
            torch.mm(a, b)
    return products


def import_torch(threads):
    """PyTorch, set to ``threads`` threads, for a process that times PyTorch.

    Refuses when scratchvae is already imported. A process that times
    PyTorch must not share the cores with scratchvae's thread pool: once its
    kernels have run, Numba's threads spin between launches and every BLAS
    library of the process is set to one thread (kernels/gemm.py). Importing
    PyTorch before anything of scratchvae is the simple rule that keeps such a
    process clean (benchmarks/RESULTS.md, 2026-11-22: a PyTorch imported after
    a scratchvae that set OMP_WAIT_POLICY=PASSIVE trained 1.5-2x slower).
    """
    import sys
    if "scratchvae" in sys.modules:
        raise RuntimeError("import PyTorch before scratchvae in a process that times PyTorch: "
                           "scratchvae's thread pool and BLAS settings must not reach it")
    import torch
    torch.set_num_threads(threads)
    return torch


def torch_or_none():
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: comparison columns are skipped")
        return None
    return torch


def threads_in_use():
    """The CPU threads scratchvae uses (Numba's pool; BLAS uses as many)."""
    try:
        import numba
        return numba.get_num_threads()
    except ImportError:
        return os.cpu_count() or 1


def cpu_info():
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_table(path, title, header, rows, notes=(), extra=None):
    """Print a markdown table and save it to ``path``; ``extra``: more tables after
    it, one (title, header, rows) or a list of them."""
    parts = [f"## {title}", "", markdown_table(header, rows), ""]
    parts += [f"{n}" for n in notes] + [""]
    for title2, header2, rows2 in ([extra] if isinstance(extra, tuple) else extra or []):
        parts += [f"## {title2}", "", markdown_table(header2, rows2), ""]
    text = "\n".join(parts)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def settings_in_turns(step, use, rounds, steps, names=("a", "b"), log=print):
    """[(a ms, b ms)]: the median of ``steps`` calls of ``step()`` under each of two
    settings, ``use(True)`` (a) and ``use(False)`` (b), round by round in one process,
    the order alternating (a first in even rounds), so that both see the same state
    and machine minute; one untimed call after each switch, 5 before the first."""
    def median_step(setting):
        use(setting)
        step()                                       # the other setting's caches go
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(times))

    for _ in range(5):
        step()
    results = []
    for r in range(rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        times = {setting: median_step(setting) for setting in order}
        results.append((times[True], times[False]))
        log(f"round {r + 1}: {names[0]} {times[True]:.2f} ms, {names[1]} {times[False]:.2f} "
            f"ms, ratio {times[True] / times[False]:.3f}")
    return results


def paired_summary(results):
    """(mean of the ratios a / b over the pairs (a, b), its 95% Student-t interval)."""
    from scipy import stats

    ratios = np.array([a / b for a, b in results])
    mean = float(ratios.mean())
    if len(ratios) < 2:
        return mean, (float("nan"), float("nan"))
    half = stats.t.ppf(0.975, len(ratios) - 1) * ratios.std(ddof=1) / np.sqrt(len(ratios))
    return mean, (mean - half, mean + half)


def paired_rows(results):
    """Table rows of the pairs (a, b): one per pair (its number, a, b, a / b), then the
    means of a and b and the mean ratio with its 95% interval (:func:`paired_summary`)."""
    mean, (lo, hi) = paired_summary(results)
    rows = [[str(i + 1), f"{a:.2f}", f"{b:.2f}", f"{a / b:.3f}"]
            for i, (a, b) in enumerate(results)]
    rows.append(["mean (95% interval)", f"{np.mean([a for a, _ in results]):.2f}",
                 f"{np.mean([b for _, b in results]):.2f}", f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"])
    return rows
