"""Damaged or crafted run files are errors naming the file, never tracebacks, hangs or
memory exhaustion (config.json checked against TrainConfig's schema, a checkpoint's
members checked from their headers before any array is read), and a diverging run
shows the engine's message, not NumPy's warnings. Tiny runs of the bundled sample."""
import warnings

import pytest

from scratchvae.config import TrainConfig
from scratchvae.train import TrainingDiverged, train

TINY = dict(epochs=1, batch_size=32, train_limit=256, test_limit=64, use_sample=True,
            eval_batch_size=64)


def _quiet(*args, **kwargs):
    pass


# --------------------------------------------------------------------------
# a diverging run: the engine's message, no RuntimeWarning ahead of it
# --------------------------------------------------------------------------

def test_a_diverging_run_raises_no_numpy_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TrainingDiverged, match="training stopped: the loss became nan"):
            train(TrainConfig(**{**TINY, "lr": 1e6}), str(tmp_path / "run"), progress=False,
                  log=_quiet)
    assert [str(w.message) for w in caught] == []
