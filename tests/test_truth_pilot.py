"""The truth pilot (benchmarks/truth_pilot.py): a few of a table's candidates at other settings, appended and
resumed like the table's own runs, on a tiny table (synthetic corpus, 2 steps: nothing here checks learning)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from support import load_benchmark, open_tiny_truth, small_truth_space

folder_hashes = load_benchmark("corpus").file_hashes  # every file below a folder, hashed
pilot = load_benchmark("truth_pilot")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory, one_thread: None):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("pilot")
    return open_tiny_truth(folder / "truth", small_truth_space(folder / "small.yaml"))


def test_runs_each_setting_once_and_resumes(table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    records = tmp_path / "pilot.jsonl"
    before = folder_hashes(table.out)
    args = ["--table", str(table.out), "--ids", "c00", "c01", "--lr", "0.001", "0.003", "--steps", "2", "3",
            "--records", str(records)]  # fmt: skip
    assert pilot.main([*args, "--part", "0/2"]) == 0
    assert len(pilot.read_pilot(records)) == 4  # every other of the 8 runs
    assert pilot.main(args) == 0
    got = pilot.read_pilot(records)
    keys = [pilot.pilot_key(r) for r in got]
    batch = table.setup.recipe.data.batch_seconds  # the recipe's, when not given
    assert sorted(keys) == sorted((i, 101, lr, n, batch) for i in ("c00", "c01") for lr in (0.001, 0.003)
                                  for n in (2, 3))  # fmt: skip
    for r in got:
        assert r["type"] == "planner-truth-pilot" and r["table"] == str(table.out)
        assert r["curve"][-1][0] == r["steps"] and math.isfinite(r["loss"]) and r["diverged"] is None
        assert set(r["probe"]) >= {"held_out", "held_out_nll"}
    text = records.read_bytes()
    assert pilot.main(args) == 0  # all done: nothing is run or written again
    assert records.read_bytes() == text and folder_hashes(table.out) == before  # the table is only read
    capsys.readouterr()
    assert pilot.main(["--records", str(records), "--report"]) == 0
    out = capsys.readouterr().out
    rows = pilot.summarize(got)
    assert [(r["lr"], r["steps"], r["runs"]) for r in rows] == [(0.001, 2, 2), (0.001, 3, 2), (0.003, 2, 2),
                                                                (0.003, 3, 2)]  # fmt: skip
    assert out.count("c00") == 4 and f"lr 0.0030, 3 steps of {batch:g} s: 2 runs (0 diverged, " in out
    one = ["--table", str(table.out), "--ids", "c00", "--lr", "0.001", "--steps", "2", "--records", str(records)]
    assert pilot.main([*one, "--batch-seconds", str(batch / 2)]) == 0  # another training batch: a run of its own
    (other,) = [r for r in pilot.read_pilot(records) if r["batch_seconds"] == batch / 2]
    (same,) = [r for r in got if pilot.pilot_key(r)[:4] == ("c00", 101, 0.001, 2)]
    assert other["curve"][0] == same["curve"][0]  # the same held-out batches: the same loss before training
    assert other["loss"] != same["loss"]  # (the tiny corpus holds one batch of the recipe's size)


def test_the_last_quarter_gain() -> None:
    record = {"steps": 8, "loss": 1.0, "curve": [[0, 4.0], [4, 3.0], [6, 2.0], [8, 1.0]], "batch_seconds": 4.0}
    assert pilot.last_quarter_gain(record) == 0.5  # (L(6) - L(8)) / L(6)
    assert math.isnan(pilot.last_quarter_gain({**record, "loss": None}))  # diverged: NaN, so a check on it fails
    rows = pilot.summarize([{**record, "lr": 0.1, "id": "c00", "seed": 1, "probe": None, "seconds": {"total": 1}}])
    assert rows[0]["plateaued"] == 0.0 and rows[0]["median_gain"] == 0.5 and rows[0]["stuck"] == 0
    flat = {**record, "lr": 0.1, "id": "c01", "seed": 1, "probe": None, "seconds": {"total": 1}, "loss": 3.9,
            "curve": [[0, 4.0], [6, 3.9], [8, 3.9]]}  # fmt: skip
    (row,) = pilot.summarize([flat])
    assert (
        row["stuck"] == 1 and row["plateaued"] == 1.0 and row["plateaued_learning"] is None
    )  # collapsed: not converged


def test_errors_name_the_field_and_write_nothing(table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    records = tmp_path / "pilot.jsonl"
    base = ["--table", str(table.out), "--records", str(records), "--lr", "0.001", "--steps", "2"]
    assert pilot.main([*base, "--ids", "c00", "c99"]) == 2
    err = capsys.readouterr().err
    assert "ids: c99 not float candidates of this table" in err and "Traceback" not in err
    assert pilot.main([*base, "--ids", "c00-int8"]) == 2  # a variant: the pilot trains floats only
    assert "c00-int8 not float candidates" in capsys.readouterr().err
    assert pilot.main(["--table", str(table.out), "--records", str(records), "--ids", "c00", "--lr", "nan",
                       "--steps", "2"]) == 2  # fmt: skip
    assert "must be positive numbers" in capsys.readouterr().err
    assert pilot.main(["--records", str(records), "--ids", "c00"]) == 2
    assert "give --table, --ids, --lr and --steps" in capsys.readouterr().err
    assert not records.exists()
    records.write_text(json.dumps({"type": "planner-truth-record", "format": 1, "id": "c00", "seed": 1}) + "\n")
    assert pilot.main(["--records", str(records), "--report"]) == 2  # a table's record is not a pilot record
    assert "not a planner-truth-pilot object" in capsys.readouterr().err
