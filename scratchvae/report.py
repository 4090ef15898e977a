"""A markdown report of trained runs: one table, a row per run.

``python -m scratchvae report --runs DIR1 DIR2 ... --out report.md`` writes one
table with a row per run:

    run, model, parameters, epochs,
    test -ELBO (the last epoch's, one z sample per image),
    IW-NLL: the importance-weighted estimate of -log p(x) with K samples
      (Burda et al. 2015; scratchvae.metrics.iw_nll) on the first N test
      images, +- its standard error over those images (VAE family only),
    recon BCE: -log p(x | z) in nats per image as recorded by the trainer
      (VAEs: one z ~ q(z|x); VQ-VAE: through the codes),
    MSE: per-pixel squared error of the reconstructions of the whole test
      set (decoded posterior mean, or through the codes),
    perplexity and codes used (VQ-VAE),
    a PixelCNN prior's run is the row "vq-vae + pixelcnn": parameters of both,
      test -ELBO = the VQ-VAE's recon + the prior's NLL of the code map
      (scratchvae.prior), and the FD / IS of the pair's samples,
    FD and IS: with a trained classifier, the Fréchet distance on its
      features and its Inception score of N samples of a model that
      samples (scratchvae.quality; a conditional model draws the labels
      in turn), beside the floor and ceiling of the classifier's data set,
    cond. acc.: with a trained classifier, the share of a CVAE's
      class-conditional samples that it labels as the class asked for,
    test acc.: a classifier run's accuracy on the test set,
    seconds per epoch (mean of the runs' ``train_seconds``: training only,
      on whatever machine and load it ran).

All numbers are nats per image (28 x 28) unless named otherwise.
"""
import os

import numpy as np

from .backend import to_numpy
from .figures import report_figures
from .files import atomic_write_text
from .metrics import iw_nll
from .plots import reconstruct
from .prior import evaluate_prior
from .quality import classifier_reference, load_classifier, run_quality, run_sampler
from .rundir import load_data, load_run, read_metrics

#: (key, header) of the table's columns, in order
COLUMNS = [
    ("run", "run"),
    ("model", "model"),
    ("parameters", "parameters"),
    ("epochs", "epochs"),
    ("test_nelbo", "test −ELBO"),
    ("iw_nll", "IW-NLL"),
    ("recon_bce", "recon BCE"),
    ("mse", "MSE"),
    ("perplexity", "perplexity"),
    ("codes_used", "codes used"),
    ("fd", "FD"),
    ("is", "IS"),
    ("cond_accuracy", "cond. acc."),
    ("test_accuracy", "test acc."),
    ("seconds_per_epoch", "s/epoch"),
]


def _quiet(*args, **kwargs):
    pass


# --------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------

def reconstruction_mse(model, x, labels=None, batch_size=500):
    """Mean over all pixels of (reconstruction - x)^2 for host images x."""
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        yb = None if labels is None else labels[start:start + batch_size]
        total += float(((reconstruct(model, xb, yb) - xb) ** 2).sum())
    return total / x.size


def conditional_accuracy(sampler, classifier, per_class=100, seed=0, batch_size=500):
    """Share of class-conditional samples that ``classifier.predict`` labels as
    the class they were drawn for: per_class samples of every class k = 0..K-1
    from ``sampler(n, rng, labels)`` (scratchvae.quality.run_sampler; K its
    ``n_classes``). Returns (accuracy, per-class accuracies (K,))."""
    rng = np.random.default_rng(seed)
    K = sampler.n_classes
    labels = np.repeat(np.arange(K), per_class)
    predicted = []
    for start in range(0, labels.size, batch_size):
        yb = labels[start:start + batch_size]
        images = classifier.xp.asarray(sampler(yb.size, rng, yb))
        predicted.append(np.asarray(to_numpy(classifier.predict(images))))
    correct = np.concatenate(predicted) == labels
    return float(correct.mean()), correct.reshape(K, per_class).mean(axis=1)


def summarize_run(run_dir, iw_k=100, iw_images=1000, classifier=None, cond_per_class=100,
                  seed=0, device="cpu", log=_quiet, progress=False, reference=None,
                  quality_samples=10000):
    """One row of the report (a dict keyed by COLUMNS' keys; missing = n/a).

    ``classifier``: a trained Classifier model (or None) for the conditional
    accuracy of a CVAE, and with ``reference`` (scratchvae.quality.classifier_reference)
    for the FD and IS of ``quality_samples`` samples of a model that samples.
    ``iw_k`` = 0 skips the IW-NLL.
    """
    config, model, meta = load_run(run_dir, device=device)
    records = read_metrics(run_dir, int(meta["epoch"]))   # the epochs of that checkpoint
    last = records[-1] if records else {}
    row = {"run": os.path.basename(os.path.normpath(run_dir)), "model": config.model,
           "parameters": model.num_parameters(), "epochs": int(meta["epoch"])}
    if config.model not in ("vq-vae", "classifier") and config.beta != 1.0:
        row["model"] += f" (β={config.beta:g})"
    seconds = [r["train_seconds"] for r in records if "train_seconds" in r]
    if seconds:
        row["seconds_per_epoch"] = float(np.mean(seconds))
    if config.model == "classifier":
        if "test_accuracy" in last:
            row["test_accuracy"] = last["test_accuracy"]
        return row
    if config.model == "pixelcnn":   # VQ-VAE + prior: the pair's -ELBO and its VQ's recon
        log(f"{run_dir}: the VQ-VAE + prior -ELBO on the test set")
        pair = evaluate_prior(run_dir, device=device, log=log)
        _, vq, _ = load_run(config.vq_run, device=device)
        row.update(model="vq-vae + pixelcnn" + (" (cond.)" if config.conditional else ""),
                   parameters=row["parameters"] + vq.num_parameters(),
                   test_nelbo=pair["test_nelbo"], recon_bce=pair["test_recon"])
    for key, name in (("test_nelbo", "test_nelbo"), ("test_recon", "recon_bce"),
                      ("perplexity", "perplexity"), ("codes_used", "codes_used")):
        if key in last:
            row[name] = last[key]
    if config.model != "pixelcnn":
        _, _, (xte, yte) = load_data(config, log=log, progress=False)
        log(f"{run_dir}: reconstruction MSE on {len(xte)} test images")
        row["mse"] = reconstruction_mse(model, xte, yte)
    if iw_k and hasattr(model, "log_importance_weights"):
        n = min(iw_images, len(xte)) if iw_images else len(xte)
        log(f"{run_dir}: IW-NLL with K={iw_k} on {n} test images")
        res = iw_nll(model, xte[:n], labels=yte[:n], k=iw_k, chunk=min(iw_k, 50),
                     batch_size=100, rng=np.random.default_rng(seed), progress=progress)
        row.update(iw_nll=res["iw_nll"], iw_nll_se=res["iw_nll_se"], iw_k=iw_k, iw_images=n)
    sampler = _sampler(config, model) if classifier is not None else None
    if sampler is not None and reference is not None:
        log(f"{run_dir}: FD and IS of {quality_samples} samples")
        row.update(run_quality(config, sampler, classifier, reference, quality_samples,
                               seed=seed))
    if sampler is not None and sampler.n_classes:
        acc, per_class = conditional_accuracy(sampler, classifier, cond_per_class, seed=seed)
        row["cond_accuracy"] = acc
        row["cond_accuracy_per_class"] = [float(a) for a in per_class]
    return row


def _sampler(config, model):
    """The run's sampler (scratchvae.quality.run_sampler), None for a model that cannot sample."""
    try:
        return run_sampler(config, model)
    except ValueError:
        return None


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------

def _cell(row, key):
    if key not in row:
        return "–"
    v = row[key]
    if key == "iw_nll":
        return f"{v:.2f} ± {row['iw_nll_se']:.2f}"
    if key == "parameters":
        return f"{v:,}"
    if key == "mse":
        return f"{v:.4f}"
    if key in ("cond_accuracy", "test_accuracy"):
        return f"{100 * v:.1f}%"
    if key == "seconds_per_epoch":
        return f"{v:.1f}"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def markdown_table(rows):
    """The rows (dicts from summarize_run) as a GitHub markdown table."""
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |",
             "|" + "|".join("---" if k in ("run", "model") else "---:" for k, _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, k) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def write_report(runs, out, iw_k=100, iw_images=1000, classifier_dir=None, cond_per_class=100,
                 figures=False, seed=0, device="cpu", log=print, progress=False,
                 quality_samples=10000):
    """Summarise ``runs`` into the markdown file ``out``; returns the rows.

    ``quality_samples``: samples per model for FD and IS (with ``classifier_dir``;
    0 skips them), and training images for the FD floor.

    ``figures``: also draw the figures of :func:`scratchvae.figures.report_figures`
    beside ``out`` and link them from the report.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("report: expected at least one run directory")
    classifier, clf_row, reference = None, None, None
    if classifier_dir:
        classifier = load_classifier(classifier_dir, device)
        clf_row = summarize_run(classifier_dir, device=device)
        if quality_samples:
            log(f"FD floor and IS ceiling of {classifier_dir}'s data set")
            reference = classifier_reference(classifier_dir, classifier, quality_samples,
                                              seed=seed, log=log)
    rows = []
    for run in runs:
        log(f"summarising {run}")
        rows.append(summarize_run(run, iw_k=iw_k, iw_images=iw_images, classifier=classifier,
                                  cond_per_class=cond_per_class, seed=seed, device=device,
                                  log=log, progress=progress, reference=reference,
                                  quality_samples=quality_samples))
    iw = [r for r in rows if "iw_nll" in r]
    lines = ["# scratchvae: trained runs", "",
             markdown_table(rows), "",
             "- Nats per image unless named otherwise; test −ELBO and recon BCE as recorded "
             "after the last epoch; MSE per pixel over the test set; s/epoch is the mean "
             "training time of an epoch (machine and load as they were)."]
    if iw:
        sizes = sorted({(r["iw_k"], r["iw_images"]) for r in iw})
        lines.append("- IW-NLL: importance-weighted estimate of −log p(x) (Burda et al. 2015) with "
                     + "; ".join(f"K = {k} samples on the first {n} test images" for k, n in sizes)
                     + ", ± one standard error over the images.")
    if reference is not None:
        lines.append(
            f"- FD: Fréchet distance on the project classifier's features (its penultimate "
            f"layer; classifier {classifier_dir}) between {quality_samples} samples of the "
            f"model and the {reference['dataset']} test set, ||mu1 − mu2||² + "
            f"Tr(S1 + S2 − 2 (S1 S2)^½); it is not comparable with published Inception FIDs. "
            f"IS: the classifier-based Inception score exp E[KL(p(y|x) ‖ p(y))] of the same "
            f"samples (conditional models draw the labels in turn). Floor: the FD between the "
            f"test set and {reference['floor_images']:,} training images, "
            f"{reference['fd_floor']:.2f}; ceiling: the test set's IS, "
            f"{reference['is_ceiling']:.2f}.")
    if clf_row is not None:
        acc = clf_row.get("test_accuracy")
        lines.append(f"- cond. acc.: share of {cond_per_class} samples per class that the "
                     f"classifier {classifier_dir} labels as the class asked for"
                     + (f" (its accuracy on real test images: {100 * acc:.2f}%)."
                        if acc is not None else "."))
    for r in rows:
        if "cond_accuracy_per_class" in r:
            lines.append(f"- {r['run']}, conditional accuracy per class: " + ", ".join(
                f"{k}: {100 * a:.0f}%" for k, a in enumerate(r["cond_accuracy_per_class"])) + ".")
    if figures:
        lines += ["", "## Figures", ""]
        for name in report_figures(runs, rows, out, seed, device):
            lines += [f"![{name}]({name})", ""]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return rows


__all__ = ["COLUMNS", "summarize_run", "markdown_table", "write_report", "conditional_accuracy",
           "reconstruction_mse", "load_classifier"]
