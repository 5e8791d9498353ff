"""Re-probing a truth table's saved float weights (benchmarks/truth_reprobe.py), on a tiny table: the probe
reproduces each record's accuracy exactly, adds its cross-entropy, resumes, and its report reads rank results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import load_benchmark, open_tiny_truth, small_truth_space

folder_hashes = load_benchmark("corpus").file_hashes  # every file below a folder, hashed
reprobe = load_benchmark("truth_reprobe")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory, one_thread: None):  # noqa: ANN201
    folder = tmp_path_factory.mktemp("reprobe")
    t = open_tiny_truth(folder / "truth", small_truth_space(folder / "small.yaml"))
    assert t.generate() == 12
    return t


def test_the_probe_is_reproduced_and_its_cross_entropy_added(table, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001  # fmt: skip
    records = tmp_path / "reprobe.jsonl"
    before = folder_hashes(table.out)
    assert reprobe.main(["--table", str(table.out), "--records", str(records)]) == 0
    rows = reprobe.read_reprobe(records)
    floats = {(r["id"], r["seed"]): r for r in (json.loads(x) for x in (table.out / "records.jsonl").open())
              if r["variant"] == "float"}  # fmt: skip
    assert {(r["id"], r["seed"]) for r in rows} == set(floats)  # every float run; no variant (no weights kept)
    for r in rows:
        original = floats[(r["id"], r["seed"])]["probe"]
        assert r["same_accuracy"] and r["probe"]["held_out"] == original["held_out"]
        assert r["probe"]["held_out_nll"] == original["held_out_nll"]  # the probe is deterministic
    text = records.read_bytes()
    assert reprobe.main(["--table", str(table.out), "--records", str(records)]) == 0  # all done: nothing again
    assert records.read_bytes() == text and folder_hashes(table.out) == before  # the table is only read
    rank = tmp_path / "rank.json"
    cands = [{"id": i, "scores": {"supernet_loss": float(k), "params": float(-k), "macs": 1.0}}
             for k, i in enumerate(sorted({r["id"] for r in rows}))]  # fmt: skip
    rank.write_text(json.dumps({"candidates": cands}))
    out = tmp_path / "report.json"
    capsys.readouterr()
    args = ["--table", str(table.out), "--records", str(records), "--report", "--rank", str(rank), "--json", str(out)]
    assert reprobe.main(args) == 0
    report = json.loads(out.read_text())
    g = report["groups"]["float"]
    assert report["same_accuracy"] == report["runs"] == 6 and g["candidates"] == 3
    assert g["ceiling_nll"]["n"] == 3 and g["rank"]["rank.json"]["supernet_loss"]["n"] == 3
    assert g["rank"]["rank.json"]["macs"]["tau"] is None  # constant scores: no statistic, so a check on it fails
    assert "noise ceiling: accuracy" in capsys.readouterr().out


def test_a_broken_rank_result_is_a_message(table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    bad = tmp_path / "rank.json"
    bad.write_text("{")
    args = ["--table", str(table.out), "--records", str(tmp_path / "r.jsonl"), "--report", "--rank", str(bad)]
    assert reprobe.main(args) == 2
    err = capsys.readouterr().err
    assert f"{bad}: candidates: not a supernet_rank.py result" in err and "Traceback" not in err
