"""Figure 2: the influence of the latent dimension Z on the test negative ELBO.

Trains the MLP VAE with Z in {2, 5, 10, 20, 50} (runs/fig-mlp-vae-z<Z>, reused
when already there) and plots the test -ELBO, its reconstruction and KL terms
and the number of active units against Z.

    python examples/fig_latent_dim.py                    # 5 epochs each
    python examples/fig_latent_dim.py --epochs 20 --z 2 10 50
    python examples/fig_latent_dim.py --run runs/a runs/b ...   # reuse trained runs
"""
import argparse
import os

from scratchvae import plots
from scratchvae.figures import add_script_args, script_run

OUT = "docs/figures/latent_dim.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_script_args(parser, epochs=5)
    parser.add_argument("--z", type=int, nargs="+", default=[2, 5, 10, 20, 50],
                        help="latent dimensions (default 2 5 10 20 50)")
    parser.add_argument("--run", nargs="+", default=None, metavar="DIR",
                        help="plot these trained runs instead of training")
    args = parser.parse_args(argv)
    runs = args.run or [script_run(args, f"fig-mlp-vae-z{z}", model="mlp-vae", latent_dim=z)
                        for z in args.z]
    results = plots.latent_sweep_results(runs)
    epochs = sorted({r["epoch"] for r in results})
    data = "MNIST sample" if args.sample else "MNIST"
    title = (f"MLP VAE on {data}: test −ELBO against the latent dimension "
             f"({'/'.join(map(str, epochs))} epoch{'s' if epochs != [1] else ''} each)")
    out = plots.plot_latent_dim(results, args.out or OUT, title=title)
    for r in results:
        print(f"Z = {r['latent_dim']:3d}: test -ELBO {r['test_nelbo']:.2f} "
              f"(recon {r['test_recon']:.2f}, KL {r['test_kl']:.2f})  [{r['run']}]")
    print(f"saved {os.path.abspath(out)}")
    return out


if __name__ == "__main__":
    main()
