"""Damaged or crafted run files are errors naming the file, never tracebacks, hangs or
memory exhaustion (config.json checked against TrainConfig's schema, a checkpoint's
members checked from their headers before any array is read), and a diverging run
shows the engine's message, not NumPy's warnings. Tiny runs of the bundled sample."""
import io
import json
import os
import shutil
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

from scratchvae import rundir
from scratchvae.cli import main
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


# --------------------------------------------------------------------------
# crafted run files: every command says `error: ...`, naming the file, exit 1
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch mlp-vae run of the bundled sample, copied for each test."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(TrainConfig(**TINY), str(run), progress=False, log=_quiet)
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _commands(run, tmp_path):
    run = str(run)
    return [["evaluate", "--checkpoint", run, "--iw-k", "0"],
            ["sample", "--checkpoint", run, "--out", str(tmp_path / "s.png")],
            ["train", "--resume", run, "--epochs", "2", "--no-progress"],
            ["plot", "samples", "--run", run, "--out", str(tmp_path / "p.png")],
            ["report", "--runs", run, "--iw-k", "0", "--out", str(tmp_path / "r.md")]]


def _every_command_fails(run, tmp_path, capsys, needle, commands=None, file="checkpoint.npz"):
    """Each command exits 1, its last line ``error: ...`` naming ``run/file`` and
    holding ``needle``, no traceback, nothing written."""
    before = sorted(os.listdir(run))
    for argv in commands or _commands(run, tmp_path):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and needle in last, (argv, last)
        assert str(run / file) in last, (argv, last)
        assert "Traceback" not in err
    assert sorted(os.listdir(run)) == before
    assert not any(p.suffix in (".png", ".md") for p in tmp_path.iterdir())


def _edit_config(run, **changes):
    config = json.loads((run / "config.json").read_text())
    config.update(changes)
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes,needle", [
    (dict(batch_size=32.0), "batch_size must be an integer, got 32.0"),
    (dict(likelihood="poisson"), "likelihood must be one of bernoulli, gaussian, "
                                 "gaussian-learned, got 'poisson'"),
    (dict(dataset="../../etc"), "dataset must be one of mnist, fashion-mnist, got '../../etc'"),
    (dict(seed=True), "seed must be an integer, got True"),          # bool is not int
    (dict(binarize=1), "binarize must be true or false, got 1"),
    (dict(lr=float("nan")), "lr must be a finite number, got nan"),
    (dict(lr="0.01"), "lr must be a finite number, got '0.01'"),
    (dict(epochs=-3), "epochs must be >= 1, got -3"),
    (dict(vq_decay=1.5), "vq_decay must be in (0, 1), got 1.5"),
    (dict(download="maybe"), "download must be one of auto, yes, no, got 'maybe'"),
    (dict(model=["mlp-vae"]), "model must be a string, got ['mlp-vae']"),
    (dict(colour="red"), "unknown configuration keys ['colour']"),
])
def test_a_config_json_against_the_schema(run, tmp_path, capsys, changes, needle):
    _edit_config(run, **changes)
    commands = _commands(run, tmp_path) + [["plot", "curves", "--run", str(run), "--out",
                                            str(tmp_path / "c.png")]]
    _every_command_fails(run, tmp_path, capsys,
                         f"{run / 'config.json'} is not a usable training configuration: "
                         f"invalid training configuration: {needle}"
                         if "unknown" not in needle else needle, commands, "config.json")


@pytest.mark.parametrize("text,needle", [
    ("[1, 2]", "expected a JSON object of configuration fields, got a list"),
    ("[" * 100_000, "is not valid JSON"),             # nested past Python's recursion limit
    (b"\xff\xfe{}", "is not valid JSON"),              # not UTF-8
], ids=["list", "nested", "not-utf8"])
def test_a_config_json_that_is_no_object(run, tmp_path, capsys, text, needle):
    path = run / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    _every_command_fails(run, tmp_path, capsys, needle, file="config.json")


def test_a_config_json_that_is_a_directory(run, tmp_path, capsys):
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    _every_command_fails(run, tmp_path, capsys, "expected a readable file", file="config.json")


def test_a_config_json_asking_for_a_huge_model(run, capsys):
    """Sizes within the schema but beyond memory end in an error, not a traceback."""
    _edit_config(run, latent_dim=10**9)      # a 400 x 2e9 weight: terabytes
    assert main(["evaluate", "--checkpoint", str(run), "--iw-k", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory") and "Traceback" not in err


def test_a_metrics_record_without_its_losses_is_named(run, tmp_path, capsys):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    del records[-1]["train_loss"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["plot", "curves", "--run", str(run), "--out", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err
    assert "metrics.jsonl: the record of epoch 1 lacks a number for train_loss" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------
# crafted checkpoints
# --------------------------------------------------------------------------

def _members(run):
    """key -> array of the run's checkpoint (meta decoded to a dict)."""
    with np.load(run / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(bytes(arrays.pop("meta")).decode())


def _write(run, arrays, header):
    arrays = dict(arrays, meta=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    np.savez(run / "checkpoint.npz", **arrays)


def _npy_bytes(shape, dtype, payload):
    """An .npy member: a header claiming ``shape`` of ``dtype``, then ``payload`` bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


def _replace_member(run, key, data, compress=zipfile.ZIP_STORED):
    """Rewrite the checkpoint with member ``key`` holding the raw bytes ``data``."""
    path = run / "checkpoint.npz"
    with zipfile.ZipFile(path) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    members[key + ".npy"] = data
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content, compress_type=compress if name == key + ".npy"
                       else zipfile.ZIP_STORED)


def _drop_meta(run, entry):
    arrays, header = _members(run)
    del header["meta"][entry]
    _write(run, arrays, header)


def _set_meta(run, **changes):
    arrays, header = _members(run)
    header["meta"].update(changes)
    _write(run, arrays, header)


WEIGHT = "model/encoder.layers.1.weight"     # (400, 784) float32


def _huge_header(run):   # a member claiming 10**12 float32 elements, holding 16 bytes
    _replace_member(run, WEIGHT, _npy_bytes((10**6, 10**6), np.float32, bytes(16)))


def _wrong_shape(run):   # a plain member of another shape
    arrays, header = _members(run)
    arrays[WEIGHT] = np.zeros((400, 783), np.float32)
    _write(run, arrays, header)


def _object_member(run):
    _replace_member(run, WEIGHT, _npy_bytes((1,), np.dtype(object), bytes(8)))


def _foreign_member(run):
    _replace_member(run, "../../evil", b"x")


def _nan_weight(run):
    arrays, header = _members(run)
    arrays[WEIGHT] = arrays[WEIGHT].copy()
    arrays[WEIGHT][0, 0] = np.nan
    _write(run, arrays, header)


def _bad_list(run):
    arrays, header = _members(run)
    header["optim"]["exp_avg"] = {"list": 10**12}
    _write(run, arrays, header)


@pytest.mark.parametrize("damage,needle", [
    (lambda run: _drop_meta(run, "epoch"), "its epoch is None, not an integer >= 1"),
    (lambda run: _set_meta(run, epoch="1"), "its epoch is '1', not an integer >= 1"),
    (lambda run: _drop_meta(run, "noise_rng"), "noise_rng is not the state of a NumPy PCG64 "
                                               "generator (KeyError"),
    (lambda run: _set_meta(run, shuffle_rng={"bit_generator": "PCG64", "has_uint32": 0,
                                             "uinteger": 0,
                                             "state": {"state": -1, "inc": 1}}),
     "shuffle_rng is not the state of a NumPy PCG64 generator (OverflowError"),
    (lambda run: _set_meta(run, shuffle_rng="MT19937"), "shuffle_rng is not the state"),
    (lambda run: _drop_meta(run, "config"), "its meta has no 'config' entry"),
    (_huge_header, f"member {WEIGHT}.npy claims shape (1000000, 1000000) of float32 "
                   f"(4,000,000,000,000 bytes) but holds 16 bytes"),
    (_wrong_shape, f"{WEIGHT} is (400, 783) of float32, expected (400, 784) of float32"),
    (_object_member, f"member {WEIGHT}.npy holds object, not a numeric array"),
    (_foreign_member, "unexpected member '../../evil.npy'"),
    (_nan_weight, f"{WEIGHT[len('model/'):]} hold NaN or infinite values"),
], ids=["no-epoch", "text-epoch", "no-noise-rng", "negative-rng-state", "rng-not-a-state",
        "no-config", "huge-header", "wrong-shape", "object-dtype", "foreign-member", "nan"])
def test_a_crafted_checkpoint(run, tmp_path, capsys, damage, needle):
    damage(run)
    _every_command_fails(run, tmp_path, capsys, needle)


def test_a_crafted_optimiser_list_is_refused_by_resume(run, tmp_path, capsys):
    _bad_list(run)        # only --resume reads the optimiser's state
    t = time.perf_counter()
    _every_command_fails(run, tmp_path, capsys, "optimiser entry 'exp_avg' claims a list of "
                         "1000000000000 arrays", [_commands(run, tmp_path)[2]])
    assert time.perf_counter() - t < 5


def test_a_zip_bomb_is_refused_before_it_is_read(run, tmp_path, capsys):
    """A compressed member declaring 200 MB (a model of 2.6 MB): refused from the zip's
    directory, quickly, without allocating it."""
    _replace_member(run, WEIGHT, _npy_bytes((50_000_000,), np.float32, bytes(200_000_000)),
                    compress=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(run / "checkpoint.npz") as z:
        info = z.getinfo(WEIGHT + ".npy")
    assert info.compress_size < 1_000_000 and info.file_size > 200_000_000
    tracemalloc.start()
    t = time.perf_counter()
    _every_command_fails(run, tmp_path, capsys, f"member {WEIGHT}.npy is compressed")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - t < 30 and peak < 50_000_000


def test_reading_a_checkpoint_takes_about_the_memory_of_the_state(run):
    """Peak memory of reading a run's checkpoint for its model: the model's arrays
    (plus the state they are checked against), not the optimiser's moments too."""
    from scratchvae.config import make_model

    model = make_model(rundir.read_config(str(run)), np.random.default_rng(0))
    nbytes = sum(a.nbytes for a in model.state_dict().values())
    tracemalloc.start()
    state, _, _ = rundir.read_checkpoint(str(run), model)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sum(a.nbytes for a in state.values()) == nbytes
    assert peak < 2.2 * nbytes, (peak, nbytes)
