"""benchmarks/iwae_table.py: one command per row of Burda et al.'s Table 1 (the
commands of every row, dry), and a tiny row trained, resumed to more stages and
recorded."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import iwae_table  # noqa: E402

PROTOCOL = ("--binarize --batch-size 20 --lr 1e-3 --adam-eps 1e-4 --lr-schedule iwae "
            "--epochs 3280 --device cpu")


@pytest.mark.parametrize("row, model, objective", [
    ("vae-1l-k1", "iwae-1l", ""), ("vae-1l-k5", "iwae-1l", " --k 5"),
    ("vae-1l-k50", "iwae-1l", " --k 50"), ("iwae-1l-k5", "iwae-1l", " --objective iwae --k 5"),
    ("iwae-1l-k50", "iwae-1l", " --objective iwae --k 50"), ("vae-2l-k1", "iwae-2l", ""),
    ("vae-2l-k5", "iwae-2l", " --k 5"), ("vae-2l-k50", "iwae-2l", " --k 50"),
    ("iwae-2l-k5", "iwae-2l", " --objective iwae --k 5"),
    ("iwae-2l-k50", "iwae-2l", " --objective iwae --k 50")])
def test_the_dry_run_prints_the_commands_of_each_row(tmp_path, capsys, row, model, objective):
    assert set(iwae_table.ROWS) == set(iwae_table.PAPER) and len(iwae_table.ROWS) == 10
    out = tmp_path / "runs"
    assert iwae_table.main([row, "--out", str(out), "--dry-run"]) == 0
    train, evaluate = capsys.readouterr().out.strip().splitlines()
    run = out / row
    assert train.endswith(f" -m scratchvae train --model {model}{objective} {PROTOCOL} "
                          f"--out {run}"), train
    assert evaluate.endswith(f" -m scratchvae evaluate --checkpoint {run} --iw-k 5000 "
                             f"--device cpu --json"), evaluate
    assert not out.exists()
    assert iwae_table.main([row, "--out", str(out), "--stages", "4", "--dry-run"]) == 0
    assert "--epochs 40 " in capsys.readouterr().out


def test_the_stages_give_the_epochs_of_the_schedule():
    from scratchvae.schedules import iwae_epochs
    assert [iwae_table.schedule_epochs(i) for i in range(1, 9)] == [
        iwae_epochs(i) for i in range(1, 9)] == [1, 4, 13, 40, 121, 364, 1093, 3280]
    with pytest.raises(SystemExit):
        iwae_table.main(["vae-1l-k1", "--stages", "9", "--dry-run"])
    with pytest.raises(SystemExit):
        iwae_table.main(["vae-3l-k1", "--dry-run"])


def test_a_tiny_row_is_trained_resumed_and_recorded(tmp_path, capsys):
    out, table = tmp_path / "runs", tmp_path / "table"
    tiny = ["--out", str(out), "--table", str(table), "--sample", "--train-limit", "40",
            "--test-limit", "10", "--iw-k", "10", "--no-progress"]
    assert iwae_table.main(["vae-1l-k1", "--stages", "1", *tiny]) == 0
    assert "$ " in capsys.readouterr().out
    run = out / "vae-1l-k1"
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["lr_schedule"], config["adam_eps"], config["batch_size"],
            config["binarize"], config["epochs"]) == ("iwae-1l", "iwae", 1e-4, 20, True, 1)
    # the next stage: the run resumes to 4 epochs
    assert iwae_table.main(["vae-1l-k1", "--stages", "2", *tiny, "--dry-run"]) == 0
    assert f"train --resume {run} --epochs 4 --no-progress" in capsys.readouterr().out
    assert iwae_table.main(["vae-1l-k1", "--stages", "2", *tiny]) == 0
    records = json.loads((tmp_path / "table.json").read_text())
    assert [(r["row"], r["stages"], r["epochs"]) for r in records] == [
        ("vae-1l-k1", 1, 1), ("vae-1l-k1", 2, 4)]
    r = records[1]
    assert r["paper"] == 86.76 and r["iw_k"] == 10 and r["iw_images"] == 10
    assert r["test_nll"] > 0 and r["train_seconds"] > 0 and r["eval_seconds"] > 0
    md = (tmp_path / "table.md").read_text()
    assert "| vae-1l-k1 | iwae-1l | elbo | 1 | 2 (4) | " in md and "| 86.76 |" in md
    # trained already: evaluated again, its line replaced
    assert iwae_table.main(["vae-1l-k1", "--stages", "2", *tiny, "--dry-run"]) == 0
    assert "has trained 4 epochs: no training" in capsys.readouterr().out
    # a run of another row in its place stops the script
    os.rename(run, out / "vae-1l-k5")
    with pytest.raises(SystemExit, match="not row vae-1l-k5"):
        iwae_table.main(["vae-1l-k5", *tiny, "--dry-run"])
