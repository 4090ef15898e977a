"""A directory the user names is never passed over.

``--data-dir`` (``data_dir=``) is the only place looked: missing, not a
directory, empty or incomplete, it is an error naming what is missing, for
``load_dataset``, ``train`` and ``data``, even when the set is found
elsewhere. ``$SCRATCHVAE_DATA`` must be a directory, and a set it holds in part
is an error; a set it lacks entirely is looked for further (the variable names
a directory of several sets). A saved run's recorded directory is looked at
first and passed over if the data have moved. With nothing named, the search
and the fall-back to the bundled sample stay (tests/test_data.py).

The data sets here are test_data.py's tiny stand-in for MNIST.
"""
import json
import os

import pytest
from test_data import RUN, _quiet, _same_as_tiny, isolated, tiny  # noqa: F401 (fixtures)

from scratchvae import data
from scratchvae.data import DataNotFoundError

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"]


@pytest.fixture
def elsewhere(tmp_path, tiny, monkeypatch):  # noqa: F811 (the fixture imported above)
    """A complete set in the cache and under $SCRATCHVAE_DATA: what a skipped
    --data-dir would silently use."""
    tiny(data.cache_dir() / "mnist")
    monkeypatch.setenv("SCRATCHVAE_DATA", str(tiny(tmp_path / "env" / "mnist").parent))
    return tmp_path


def _partial(tiny, directory, keep):  # noqa: F811
    d = tiny(directory)
    for name in FILES[keep:]:
        (d / (name + ".gz")).unlink()
    return d


@pytest.mark.parametrize("case", ["missing", "file", "empty", "2 of 4", "3 of 4 flat"])
def test_an_explicit_data_dir_must_hold_every_file(tmp_path, tiny, elsewhere, case):  # noqa: F811
    root = tmp_path / "named"
    if case == "file":
        root.write_text("not a directory")
    elif case == "empty":
        root.mkdir()
    elif case == "2 of 4":
        _partial(tiny, root / "mnist", 2)
    elif case == "3 of 4 flat":
        _partial(tiny, root, 3)
    said = {"missing": "does not exist", "file": "is not a directory",
            "empty": f"holds none of its files (neither in {root / 'mnist'} nor in {root})",
            "2 of 4": f"is incomplete: {root / 'mnist'} holds 2 of its 4 files, missing "
                      f"t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]",
            "3 of 4 flat": f"is incomplete: {root} holds 3 of its 4 files, missing "
                           f"t10k-labels-idx1-ubyte[.gz]"}[case]
    for download in ("auto", False, True):
        with pytest.raises(DataNotFoundError) as err:
            data.load_dataset("mnist", data_dir=root, download=download, log=None)
        msg = str(err.value)
        assert msg.startswith(f"mnist not found: --data-dir {root} {said}."), msg
        assert "only place looked" in msg and "t10k-labels-idx1-ubyte[.gz]" in msg
    with pytest.raises(DataNotFoundError, match="only place looked"):
        data.locate_dataset("mnist", data_dir=root)


def test_a_complete_explicit_data_dir_is_used(tmp_path, tiny, elsewhere):  # noqa: F811
    flat = tiny(tmp_path / "flat", gz=False)
    directory, places = data.locate_dataset("mnist", data_dir=flat)
    assert directory == flat and places[-1] == f"{flat} (--data-dir: all files found)"
    _same_as_tiny(data.load_dataset("mnist", data_dir=flat, log=None))


def test_train_and_data_commands_refuse_an_incomplete_data_dir(tmp_path, tiny, elsewhere,
                                                               capsys):  # noqa: F811
    from scratchvae.cli import main

    root = _partial(tiny, tmp_path / "named" / "mnist", 2).parent
    run = tmp_path / "run"
    for argv in (["data", "--data-dir", str(root)],
                 ["train", "--data-dir", str(root), "--out", str(run), "--epochs", "1",
                  "--no-progress"]):
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error: mnist not found: --data-dir {root} is "
                                       f"incomplete"), captured.err
        assert "missing t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]" in captured.err
        assert "Traceback" not in captured.err
    assert not (run / "checkpoint.npz").exists()


def test_scratchvae_data_must_be_a_directory_and_never_hold_a_set_in_part(
        tmp_path, tiny, monkeypatch):  # noqa: F811
    tiny(data.cache_dir() / "mnist")               # what a skipped variable would fall to
    monkeypatch.setenv("SCRATCHVAE_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataNotFoundError, match=r"^mnist not found: \$SCRATCHVAE_DATA "
                                                r".*typo does not exist\.(?s:.*)unset"):
        data.load_dataset("mnist", log=None)
    partial = _partial(tiny, tmp_path / "env" / "mnist", 1)
    monkeypatch.setenv("SCRATCHVAE_DATA", str(partial.parent))
    with pytest.raises(DataNotFoundError, match=r"holds 1 of its 4 files, missing "
                                                r"train-labels-idx1-ubyte\[.gz\]"):
        data.load_dataset("mnist", log=None)
    # a set the variable's directory lacks entirely: found further on (here the cache)
    monkeypatch.setenv("SCRATCHVAE_DATA", str(tmp_path / "other-sets"))
    (tmp_path / "other-sets" / "fashion-mnist").mkdir(parents=True)
    ds = data.load_dataset("mnist", log=None)
    assert ds.source == str(data.cache_dir() / "mnist")


def test_nothing_named_still_falls_back_to_the_sample(tmp_path):
    ds = data.load_dataset("mnist", log=None)
    assert ds.is_sample


def test_a_saved_run_finds_its_moved_data_elsewhere(tmp_path, tiny, monkeypatch):  # noqa: F811
    """The data_dir a run records is where the set was found, not a name the user
    gave: when the set has moved, evaluate and --resume find it through the search."""
    from scratchvae.rundir import evaluate_run
    from scratchvae.config import TrainConfig
    from scratchvae.train import train

    tiny(tmp_path / "data")
    run = tmp_path / "run"
    history = train(TrainConfig(**{**RUN, "batch_size": 8, "eval_batch_size": 10,
                                   "data_dir": str(tmp_path / "data")}),
                    str(run), progress=False, log=_quiet)
    os.rename(tmp_path / "data", tmp_path / "moved")
    monkeypatch.setenv("SCRATCHVAE_DATA", str(tmp_path / "moved"))
    assert evaluate_run(str(run), log=_quiet)["test_nelbo"] == pytest.approx(
        history[-1]["test_nelbo"], rel=1e-12)
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(tmp_path / "data")
