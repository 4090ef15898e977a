"""Where one training step of a scratchvae model spends its time: every layer's
forward and backward, the loss outside the layers, and the optimiser, timed
inside real training steps (batch 128, float32, random binary images).

Unlike bench_conv_layers.py, which times each convolution alone and warm,
this sees the step as training does: cold caches between layers, the
allocations of each step, the layout each layer hands to the next. A ReLU
that runs inside the convolution next to it (scratchvae/layers/dense.py,
Sequential) has no row of its own for that pass: its time is the convolution's.

    python benchmarks/profile_step.py [--model conv-vae|mlp-vae|vq-vae] [--steps 40] [--no-retain]
    python benchmarks/profile_step.py --torch     # the PyTorch twin under torch.profiler
    python benchmarks/profile_step.py --model iwae-1l --batch 20 --k 5   # Burda et al.'s step

``--model iwae-1l`` trains with the importance-weighted bound over ``--k`` samples
(``--objective``: iwae, dreg or elbo; default iwae) on ``--batch`` images (Burda
et al.'s is 20), Adam with eps 1e-4 as bench_iwae.py; the tables are saved as
``profile_iwae-1l_b<batch>_k<k>[_<objective>][_torch].md`` (the objective named
when it is not iwae), or to ``--out PATH``.

``--model pixelcnn`` profiles the gated PixelCNN prior instead (batch 128 of
random 7x7 maps of 128 codes; ``--conditional`` adds labels): each part of
a GatedLayer summed over the layers, the embedding, the head, the softmax
cross-entropy and Adam; ``--torch`` its twin, fused Adam as bench_train.py.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def _time_steps(loss, model, optimizer, count):
    """``count`` training steps (``loss()``, backward, optimiser step), each part's
    seconds per step in lists: keys 'step', 'loss (forward)', 'backward', 'optimizer'."""
    parts = {"step": [], "loss (forward)": [], "backward": [], "optimizer": []}
    for _ in range(count):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        float(loss()[0])
        t1 = time.perf_counter()
        model.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        for key, value in (("step", t3 - t0), ("loss (forward)", t1 - t0),
                           ("backward", t2 - t1), ("optimizer", t3 - t2)):
            parts[key].append(value)
    return parts


def _timed(module, name, times):
    """Wrap module.forward / module.backward to record their wall times."""
    forward, backward = module.forward, module.backward

    def fwd(*args, **kwargs):
        t0 = time.perf_counter()
        out = forward(*args, **kwargs)
        times.setdefault((name, "forward"), []).append(time.perf_counter() - t0)
        return out

    def bwd(*args, **kwargs):
        t0 = time.perf_counter()
        out = backward(*args, **kwargs)
        times.setdefault((name, "backward"), []).append(time.perf_counter() - t0)
        return out
    module.forward, module.backward = fwd, bwd


def _leaf_layers(module, prefix):
    """(name, layer) of every layer inside Sequential containers, in order."""
    layers = getattr(module, "layers", None)
    if layers is None:
        return [(prefix, module)]
    out = []
    for i, layer in enumerate(layers):
        out += _leaf_layers(layer, f"{prefix}[{i}]")
    return out


def _model_options(args):
    """(keyword arguments of the model, of its Adam) for ``args``: the iwae models'
    objective and samples, and bench_iwae.py's Adam eps; nothing for the others."""
    if not args.model.startswith("iwae"):
        return {}, {}
    return {"objective": args.objective, "n_samples": args.k}, {"eps": 1e-4}


def _images(batch):
    """``batch`` random binary images (batch, 1, 28, 28) float32."""
    return (np.random.default_rng(1).random((batch, 1, 28, 28)) > 0.5).astype(np.float32)


def profile_torch(model_name, steps, warmup, threads, batch=128, options=({}, {})):
    """The PyTorch twin's step under torch.profiler: mean ms per step of each
    aten op (self time), the largest first. ``options``: :func:`_model_options`."""
    from benchmarks.common import import_torch
    torch = import_torch(threads)
    from torch.profiler import ProfilerActivity, profile

    from scratchvae.twins import fastest_adam
    from scratchvae.twins.models import MODELS

    torch.manual_seed(0)
    model = MODELS[model_name](**options[0])
    optimizer, _ = fastest_adam(model.parameters(), **options[1])
    x = torch.from_numpy(_images(batch))

    def step():
        optimizer.zero_grad()
        loss = model.loss(x)[0]
        loss.item()
        loss.backward()
        optimizer.step()
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - t0) / steps
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    rows = [["whole step (profiled, wall)", f"{1e3 * wall:.2f}", ""]]
    rows += [[e.key, f"{e.self_cpu_time_total / 1e3 / steps:.2f}", f"{e.count // steps}"]
             for e in events[:15]]
    return rows


PIXELCNN_PARTS = ("v_pad", "v_conv", "h_pad", "h_conv", "link", "v_gate", "h_gate", "res",
                  "skip", "v_class", "h_class")


def _prior_batch(conditional):
    """128 random code maps (128, 7, 7) of 128 codes and labels (or None)."""
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 128, size=(128, 7, 7))
    return codes, (rng.integers(0, 10, size=128) if conditional else None)


def profile_torch_prior(steps, warmup, threads, conditional):
    """profile_torch for the PixelCNN twin (fused Adam, as bench_train.py)."""
    from benchmarks.common import import_torch
    torch = import_torch(threads)
    from torch.profiler import ProfilerActivity, profile

    from scratchvae.twins import fastest_adam
    from scratchvae.twins.models import PRIORS

    torch.manual_seed(0)
    model = PRIORS["pixelcnn"](n_classes=10 if conditional else 0)
    optimizer, _ = fastest_adam(model.parameters())
    codes, labels = _prior_batch(conditional)
    z = torch.from_numpy(codes)
    y = None if labels is None else torch.from_numpy(labels)

    def step():
        optimizer.zero_grad()
        loss = model.loss(z, y)[0]
        loss.item()
        loss.backward()
        optimizer.step()
    for _ in range(warmup):
        step()
    walls = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        walls.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    rows = [["whole step (median, unprofiled)", f"{1e3 * float(np.median(walls)):.2f}", ""]]
    rows += [[e.key, f"{e.self_cpu_time_total / 1e3 / steps:.2f}", f"{e.count // steps}"]
             for e in events[:20]]
    return rows


def profile_prior(steps, warmup, conditional):
    """Rows (part, pass, ms) of the PixelCNN prior's step: medians over the steps,
    each GatedLayer part summed over the layers."""
    from scratchvae import losses
    from scratchvae.models.pixelcnn import pixelcnn
    from scratchvae.optimizers import Adam

    model = pixelcnn(n_classes=10 if conditional else 0, rng=np.random.default_rng(0))
    optimizer = Adam(model.parameters(), lr=1e-3)
    codes, labels = _prior_batch(conditional)
    times = {}
    for i, layer in enumerate(model.layers):
        for part in PIXELCNN_PARTS:
            module = getattr(layer, part)
            if module is not None:
                _timed(module, f"layer[{i}].{part}", times)
    _timed(model.embedding, "embedding", times)
    for i, module in enumerate(model.head):
        _timed(module, f"head[{i}] {type(module).__name__}", times)
    for name in ("softmax_cross_entropy_forward", "softmax_cross_entropy_backward"):
        function = getattr(losses, name)

        def timed(*args, _function=function, _name=name):
            t0 = time.perf_counter()
            out = _function(*args)
            times.setdefault(("softmax CE", _name.rsplit("_", 1)[1]), []).append(
                time.perf_counter() - t0)
            return out
        setattr(losses, name, timed)
    parts = _time_steps(lambda: model.loss(codes, labels), model, optimizer, warmup + steps)

    def per_step_ms(values):
        """The median over the steps of each step's total (values: calls in order)."""
        per_step = np.asarray(values).reshape(warmup + steps, -1).sum(axis=1)
        return 1e3 * float(np.median(per_step[warmup:]))
    by_part = {}
    for (name, direction), values in times.items():
        part = name.split(".", 1)[1] if name.startswith("layer[") else name
        by_part.setdefault((part, direction), []).append(np.asarray(values))
    summed = {key: per_step_ms(np.stack(v, axis=1)) for key, v in by_part.items()}
    in_parts = {d: sum(v for (_, dd), v in summed.items() if dd == d)
                for d in ("forward", "backward")}
    rows = [["whole step", "", f"{per_step_ms(parts['step']):.2f}"],
            ["loss forward", "", f"{per_step_ms(parts['loss (forward)']):.2f}"],
            ["  of which outside the parts (sums, checks)", "",
             f"{per_step_ms(parts['loss (forward)']) - in_parts['forward']:.2f}"],
            ["backward", "", f"{per_step_ms(parts['backward']):.2f}"],
            ["  of which outside the parts (sums, zeros)", "",
             f"{per_step_ms(parts['backward']) - in_parts['backward']:.2f}"],
            ["optimizer (Adam)", "", f"{per_step_ms(parts['optimizer']):.2f}"]]
    rows += [[part, direction, f"{ms:.2f}"] for (part, direction), ms in
             sorted(summed.items(), key=lambda kv: (kv[0][1] == "backward", -kv[1]))]
    return rows


def main():
    from benchmarks.common import cpu_info, save_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="conv-vae",
                        choices=["mlp-vae", "conv-vae", "vq-vae", "pixelcnn", "iwae-1l"])
    parser.add_argument("--batch", type=int, default=128, help="images per step (default 128)")
    parser.add_argument("--k", type=int, default=1, help="iwae-1l: samples per image")
    parser.add_argument("--objective", choices=["iwae", "dreg", "elbo"], default="iwae",
                        help="iwae-1l: the training objective (default iwae)")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help="iwae-1l and batch other than 128: save the table to PATH "
                             "(default benchmarks/results/profile_<model>_b<batch>...md)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-retain", action="store_true",
                        help="leave glibc's malloc at its defaults (no retain_freed_memory)")
    parser.add_argument("--torch", action="store_true",
                        help="profile the PyTorch twin instead (needs PyTorch)")
    parser.add_argument("--conditional", action="store_true",
                        help="pixelcnn: the class-conditional prior (10 classes)")
    args = parser.parse_args()
    if args.conditional and args.model != "pixelcnn":
        parser.error("--conditional is an option of --model pixelcnn")
    if args.batch < 1 or args.k < 1:
        parser.error("--batch and --k take numbers >= 1")
    if args.model != "iwae-1l" and (args.k != 1 or args.objective != "iwae"):
        parser.error("--k and --objective are options of --model iwae-1l")
    if args.model == "pixelcnn" and args.batch != 128:
        parser.error("--batch: the pixelcnn profile takes batch 128")
    options = _model_options(args)
    table = args.model     # the name of the saved table
    if args.model == "iwae-1l":
        table += f"_b{args.batch}_k{args.k}" + ("" if args.objective == "iwae"
                                                  else f"_{args.objective}")
    elif args.batch != 128:
        table += f"_b{args.batch}"
    if args.out and table == args.model:
        parser.error("--out is an option of --model iwae-1l and of a --batch other than 128")
    if args.model == "pixelcnn":
        name = "pixelcnn" + ("_conditional" if args.conditional else "")
        if args.torch:
            threads = os.cpu_count() or 1
            rows = profile_torch_prior(args.steps, args.warmup, threads, args.conditional)
            notes = [f"{cpu_info()}; {threads} threads; batch 128 random 7x7 maps of 128 "
                     f"codes; float32; fused Adam; the whole step's median over {args.steps} "
                     f"steps after {args.warmup}, then torch.profiler over {args.steps} more: "
                     f"self CPU time of each op, per step."]
            save_table(os.path.join(HERE, "results", f"profile_{name}_torch.md"),
                       f"{name}, PyTorch twin: one training step by op",
                       ["op", "ms per step (self)", "calls per step"], rows, notes)
            return
        from benchmarks.common import threads_in_use
        from scratchvae.backend import retain_freed_memory
        if not args.no_retain:
            retain_freed_memory()
        rows = profile_prior(args.steps, args.warmup, args.conditional)
        notes = [f"{cpu_info()}; {threads_in_use()} threads; batch 128 random 7x7 maps of 128 "
                 f"codes; float32; median over {args.steps} steps after "
                 f"{args.warmup} of each part's time per step, summed over the layers; glibc malloc "
                 f"{'at its defaults' if args.no_retain else 'with retain_freed_memory()'}."]
        save_table(os.path.join(HERE, "results", f"profile_{name}.md"),
                   f"{name}: one training step, part by part", ["part", "pass", "ms"],
                   rows, notes)
        return

    if args.torch:
        # nothing of scratchvae or Numba is imported in this process, so that
        # scratchvae's thread pool and BLAS settings do not reach PyTorch's
        threads = os.cpu_count() or 1
        rows = profile_torch(args.model, args.steps, args.warmup, threads, args.batch, options)
        notes = [f"{cpu_info()}; {threads} threads; batch {args.batch}; float32; "
                 f"torch.profiler over {args.steps} steps after {args.warmup}; self CPU time "
                 f"of each op, per step (the profiler adds its own overhead)."]
        save_table(args.out or os.path.join(HERE, "results", f"profile_{table}_torch.md"),
                   f"{args.model}, PyTorch twin: one training step by op",
                   ["op", "ms per step (self)", "calls per step"], rows, notes)
        return

    from benchmarks.common import threads_in_use
    from scratchvae.backend import retain_freed_memory
    from scratchvae.models import DEFAULT_LATENT_DIM, build_model
    from scratchvae.optimizers import Adam

    if not args.no_retain:
        retain_freed_memory()
    rng = np.random.default_rng(0)
    model = build_model(args.model, latent_dim=DEFAULT_LATENT_DIM[args.model], rng=rng,
                        **options[0])
    optimizer = Adam(model.parameters(), lr=1e-3, **options[1])
    x = _images(args.batch)

    times = {}
    layers = _leaf_layers(model.encoder, "encoder") + _leaf_layers(model.decoder, "decoder")
    for name, layer in layers:
        _timed(layer, f"{name} {type(layer).__name__}", times)
    parts = _time_steps(lambda: model.loss(x, rng=rng, check_inputs=False),  # as train() runs it
                        model, optimizer, args.warmup + args.steps)

    def median_ms(values):
        return 1e3 * float(np.median(values[args.warmup:]))

    layer_rows = [[name, direction, f"{median_ms(v):.3f}"] for (name, direction), v in
                  sorted(times.items(), key=lambda kv: kv[0][1] == "backward")]
    in_layers = {d: sum(median_ms(v) for (_, dd), v in times.items() if dd == d)
                 for d in ("forward", "backward")}
    rows = [["whole step", "", f"{median_ms(parts['step']):.3f}"],
            ["loss forward (layers + sampler + likelihood)", "",
             f"{median_ms(parts['loss (forward)']):.3f}"],
            ["  of which outside the layers", "",
             f"{median_ms(parts['loss (forward)']) - in_layers['forward']:.3f}"],
            ["backward", "", f"{median_ms(parts['backward']):.3f}"],
            ["  of which outside the layers", "",
             f"{median_ms(parts['backward']) - in_layers['backward']:.3f}"],
            ["optimizer (Adam)", "", f"{median_ms(parts['optimizer']):.3f}"]] + layer_rows
    notes = [f"{cpu_info()}; {threads_in_use()} threads; batch {args.batch}; float32; median of "
             f"{args.steps} steps after {args.warmup}; glibc malloc "
             f"{'at its defaults' if args.no_retain else 'with retain_freed_memory()'}."]
    suffix = "_no-retain" if args.no_retain else ""
    save_table(args.out or os.path.join(HERE, "results", f"profile_{table}{suffix}.md"),
               f"{args.model}: one training step, layer by layer", ["part", "pass", "ms"],
               rows, notes)


if __name__ == "__main__":
    main()
