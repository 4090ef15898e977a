"""Is a quality gap to PyTorch the engine's, or the luck of the draw?

For each seed, scratchvae and its PyTorch twin train the same model from the
*same* initial weights (drawn by scratchvae, copied into the twin), on the same
shuffled batches, with the same reparameterisation noise eps (one NumPy
generator each, seeded alike), and are evaluated on the test set with the same
noise. Only the arithmetic differs (our ops and kernels against autograd and
oneDNN/MKL), so the two runs of a seed agree for the first hundreds of steps and
then drift apart as float32 round-off grows. Over several seeds the paired
differences show whether one engine trains systematically better. Prints a
table and saves it to benchmarks/results/.

    python benchmarks/paired_quality.py --model mlp-vae --seeds 10 11 12 13 14 15

Each run is a fresh process with one thread; the two runs of a seed go side by
side. One run on its own (prints a JSON line): --worker ours|torch MODEL SEED EPOCHS
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

BATCH = 128
MODELS = ("mlp-vae", "conv-vae", "conv-cvae")  # the VAE twins


def twin_parameters_in_our_order(twin):
    """The twin's parameters in the order of our model's ``parameters()``."""
    if hasattr(twin, "features"):   # conv-cvae: ours holds the conv features first
        return [p for m in (twin.features, twin.encoder, twin.decoder) for p in m.parameters()]
    if hasattr(twin, "codebook"):   # vq-vae: nn.Module lists its own parameter first
        return [*twin.encoder.parameters(), twin.codebook, *twin.decoder.parameters()]
    return list(twin.parameters())


def twin_with_weights_of(ours, model_name):
    """The PyTorch twin of ``model_name`` holding a copy of ``ours``' weights
    (same layouts: the parameters line up one to one, in order). A pixelcnn
    twin takes the sizes of ``ours`` (codes, channels, layers, kernel, classes)."""
    import torch
    from benchmarks.torch_models import MODELS, PRIORS

    if model_name in PRIORS:
        twin = PRIORS[model_name](num_codes=ours.num_codes, channels=ours.channels,
                                  layers=ours.n_layers, kernel=ours.kernel,
                                  n_classes=ours.n_classes)
    else:
        twin = MODELS[model_name]()
    with torch.no_grad():
        for p, q in zip(twin_parameters_in_our_order(twin), ours.parameters(), strict=True):
            if tuple(p.shape) != tuple(q.data.shape):
                raise ValueError(f"{model_name}: parameters do not line up "
                                 f"({tuple(p.shape)} vs {tuple(q.data.shape)})")
            p.copy_(torch.from_numpy(np.asarray(q.data)))
    return twin


def worker(engine, model_name, seed, epochs):
    from benchmarks.common import mnist_arrays
    from scratchvae import data
    from scratchvae.models import DEFAULT_LATENT_DIM, build_model
    from scratchvae.rundir import seed_sequences

    # the trainer's seeding: weights, batch order, training and evaluation noise
    init_rng, shuffle_rng, noise_rng, eval_rng = map(np.random.default_rng, seed_sequences(seed))
    (xtr, ytr), (xte, yte) = mnist_arrays()
    ours = build_model(model_name, latent_dim=DEFAULT_LATENT_DIM[model_name], rng=init_rng)
    z_dim = DEFAULT_LATENT_DIM[model_name]

    def eps(rng, n):
        return rng.standard_normal(size=(1, n, z_dim), dtype=np.float32)

    if engine == "ours":
        from scratchvae.optimizers import Adam
        opt = Adam(ours.parameters(), lr=1e-3)
        for _ in range(epochs):
            for xb, yb in data.iterate_batches(xtr, ytr, BATCH, rng=shuffle_rng):
                opt.zero_grad()
                float(ours.loss(xb, eps=eps(noise_rng, len(xb)), labels=yb)[0])
                ours.backward()
                opt.step()
        total = sum(float(ours.loss(xte[i:i + 1000], eps=eps(eval_rng, 1000),
                                    labels=yte[i:i + 1000], training=False)[1]["nelbo"]) * 1000
                    for i in range(0, len(xte), 1000))
        return {"test_nelbo": total / len(xte)}

    import torch
    torch.set_num_threads(1)
    twin = twin_with_weights_of(ours, model_name)
    from benchmarks.common import fastest_adam
    opt, _ = fastest_adam(torch, twin.parameters())
    for _ in range(epochs):
        for xb, yb in data.iterate_batches(xtr, ytr, BATCH, rng=shuffle_rng):
            opt.zero_grad()
            loss = twin.loss(torch.from_numpy(xb), torch.from_numpy(yb),
                             eps=torch.from_numpy(eps(noise_rng, len(xb))[0]))[0]
            loss.backward()
            opt.step()
    with torch.no_grad():
        total = sum(float(twin.loss(torch.from_numpy(xte[i:i + 1000]),
                                    torch.from_numpy(yte[i:i + 1000]),
                                    eps=torch.from_numpy(eps(eval_rng, 1000)[0]))[0]) * 1000
                    for i in range(0, len(xte), 1000))
    return {"test_nelbo": total / len(xte)}


def main():
    from benchmarks.common import cpu_info, save_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp-vae", choices=MODELS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14, 15])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        engine, model_name, seed, epochs = args.worker
        print(json.dumps(worker(engine, model_name, int(seed), int(epochs))))
        return

    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("paired_quality.py compares with PyTorch: install torch first")
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    rows, diffs = [], []
    for seed in args.seeds:
        procs = {e: subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", e,
                                      args.model, str(seed), str(args.epochs)],
                                     stdout=subprocess.PIPE, text=True, env=env)
                 for e in ("ours", "torch")}
        res = {}
        for e, p in procs.items():
            out, _ = p.communicate()
            if p.returncode:
                raise SystemExit(f"the {e} run of seed {seed} failed (exit {p.returncode})")
            res[e] = json.loads(out.strip().splitlines()[-1])["test_nelbo"]
        diffs.append(res["ours"] - res["torch"])
        rows.append([seed, f"{res['ours']:.3f}", f"{res['torch']:.3f}", f"{diffs[-1]:+.3f}"])
        print(f"seed {seed}: scratchvae {res['ours']:.3f}, PyTorch {res['torch']:.3f}", flush=True)
    d = np.array(diffs)
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    rows.append(["mean", "", "", f"{d.mean():+.3f} ± {se:.3f} (s.e.)"])
    notes = [f"{cpu_info()}; one thread per run; batch {BATCH}, Adam 1e-3, {args.epochs} epochs; "
             f"test negative ELBO (nats) with the same evaluation noise for both engines."]
    save_table(os.path.join(HERE, "results", f"paired_quality_{args.model}.md"),
               f"{args.model}: scratchvae and PyTorch from identical weights, batches and noise",
               ["seed", "scratchvae", "PyTorch", "difference"], rows, notes)


if __name__ == "__main__":
    main()
