"""The rank benchmark (benchmarks/supernet_rank.py) end to end on a tiny truth table (synthetic corpus, 6
candidates, a few steps of everything: nothing here checks how well anything ranks), and its statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import planner
from support import load_benchmark, open_tiny_truth, small_truth_space

folder_hashes = load_benchmark("corpus").file_hashes  # every file below a folder, hashed
rank = load_benchmark("supernet_rank")
choices = load_benchmark("supernet_choices")
seeds = load_benchmark("supernet_seeds")
report = load_benchmark("supernet_rank_report")
ranking = load_benchmark("ranking")

ARGS = ["--dry", "--steps", "2", "--proxy-steps", "2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> dict:
    """A tiny table (12 runs), the benchmark on it, and the folder hashes of the table before it ran."""
    folder = tmp_path_factory.mktemp("rank")
    table = open_tiny_truth(folder / "truth", small_truth_space(folder / "small.yaml"))
    assert table.generate() == 12
    before = folder_hashes(table.out)
    out, work = folder / "rank.json", folder / "work"
    assert rank.main(["--truth", str(table.out), "--seed", "0", "--json", str(out), "--work", str(work), *ARGS]) == 0
    return {"table": table, "before": before, "json": out, "work": work, "result": json.loads(out.read_text())}


def _intervals(entry: dict) -> list[tuple[str, float, list]]:
    """Every ``(key, point, [lo, hi])`` of a metric entry."""
    return [(k, entry[k], entry[k + "_ci"]) for k in entry if k + "_ci" in entry]


def test_the_json_holds_every_statistic_and_intervals_hold_their_points(run: dict) -> None:
    result = run["result"]
    assert result["type"] == "planner-supernet-rank" and result["seed"] == 0
    t = result["truth"]
    assert t["records"] == 12 and t["candidates_complete"] == 6 == len(result["candidates"])
    assert t["complete_float"] == 3 and t["complete_compressed"] == 3
    assert result["supernet"]["step"] == 2 and result["supernet"]["train_seconds"] > 0
    for key in ("seconds_supernet", "seconds_supernet_loss", "seconds_proxy", "seconds_naswot",
                "seconds_supernet_training"):  # fmt: skip
        assert result[key] > 0, key
    assert set(result["groups"]) == {"all", "float", "compressed", "unsealed", "sealed"}
    assert set(result["groups"]["all"]) >= {"loss", "held", "held_nll"}  # the probe's cross-entropy: a metric
    assert "tau_supernet" in result["groups"]["all"]["held_nll"]  # scored by the supernet probe's cross-entropy
    entry = result["groups"]["all"]["loss"]
    for s in ("supernet", "supernet_loss", "proxy", "tse", "naswot", "params", "macs", "bops", "gt_seeds"):
        assert f"tau_{s}" in entry and f"tau_{s}_ci" in entry and f"rho_{s}_ci" in entry, s
    # continuous scores and truths: every one of these ranks (a NaN would be None here and fail)
    for s in ("supernet", "proxy", "tse", "naswot", "gt_seeds"):
        assert -1.0 <= entry[f"tau_{s}"] <= 1.0, s
    assert entry["n"] == 6 and set(entry["strata"]) <= {"q0", "q1", "q2", "q3"}
    assert set(entry["regret_supernet"]) == {"1", "3", "5"} and all(v >= 0 for v in entry["regret_supernet"].values())
    for s in ("supernet", "supernet_loss"):
        assert f"diff_{s}_params" in entry and f"diff_{s}_params_ci" in entry, s
    assert "held" in result["groups"]["all"] and "real" not in result["groups"]["all"]  # no real recordings here
    checked = 0
    for group in result["groups"].values():
        for m in ("loss", "held"):
            for key, v, (lo, hi) in _intervals(group[m]):
                if v is None:  # no ranking (constant values, fewer than 2): no interval either
                    assert lo is None and hi is None, key
                    continue
                assert lo is not None and lo <= v <= hi, (key, v, lo, hi)
                checked += 1
    assert checked > 40


def test_the_table_is_read_never_written(run: dict) -> None:
    assert folder_hashes(run["table"].out) == run["before"]


def test_supernet_scores_are_the_scorers_with_the_task_file(run: dict) -> None:
    from trainers import load_recipe
    from trainers.supernet import SupernetScorer

    work = run["work"]
    scorer = SupernetScorer(work / "supernet", load_recipe(work / "supernet.yaml"), task=work / "probe" / "held.yaml")
    records = {r["id"]: r for r in json.loads(run["json"].read_text())["candidates"]}
    plan = {c.id: c for c in run["table"].plan}
    for cid in ("c00", next(i for i in records if records[i]["variant"] != "float")):
        torch.manual_seed(0)  # as the benchmark scores (its seed)
        got = scorer.score(plan[cid].graph)
        # the same extraction, recalibration, held-out batches and probe, in the same order: equal
        assert got["supernet_loss"] == records[cid]["scores"]["supernet_loss"]
        assert got["probe_accuracy"] == records[cid]["scores"]["supernet_probe"]
    assert records["c00"]["scores"]["params"] == planner.estimate(plan["c00"].graph).params


def test_a_rerun_resumes_and_rescores_nothing(run: dict, tmp_path: Path) -> None:
    out = tmp_path / "again.json"
    table = run["table"]
    args = ["--truth", str(table.out), "--seed", "0", "--json", str(out), "--work", str(run["work"]), *ARGS]
    assert rank.main(args) == 0
    again = json.loads(out.read_text())
    assert all(c["cached"] for c in again["candidates"])
    assert again["groups"] == run["result"]["groups"]
    assert len(again["supernet"]["sessions"]) == 1  # nothing left to train: no second session


def test_skipped_scorers_are_absent_and_never_mix_with_a_full_run(run: dict, tmp_path: Path) -> None:
    """--skip probe --skip proxy (a second supernet seed's run): only the supernet's loss and the cost scorers,
    under their own cache fingerprint: the full run's cached lines are not reused, nor these by a full run."""
    out = tmp_path / "reduced.json"
    table = run["table"]
    args = ["--truth", str(table.out), "--seed", "0", "--json", str(out), "--work", str(run["work"]), *ARGS]
    assert rank.main([*args, "--skip", "probe", "--skip", "proxy"]) == 0
    reduced = json.loads(out.read_text())
    assert reduced["skipped"] == ["probe", "proxy"] and not any(c["cached"] for c in reduced["candidates"])
    for c in reduced["candidates"]:
        assert set(c["scores"]) == {"supernet_loss", "naswot", "params", "macs", "bops"}, c["scores"]
    full = {c["id"]: c["scores"]["supernet_loss"] for c in run["result"]["candidates"]}
    assert {c["id"]: c["scores"]["supernet_loss"] for c in reduced["candidates"]} == full
    assert "proxy" not in reduced["scorers"] and reduced.get("seconds_proxy") is None
    entry = reduced["groups"]["all"]["loss"]
    assert entry["tau_supernet_loss"] == run["result"]["groups"]["all"]["loss"]["tau_supernet_loss"]
    assert rank.main(args) == 0  # the full run again: its own cached lines, all of them
    assert all(c["cached"] for c in json.loads(out.read_text())["candidates"])


def test_two_supernet_seeds_are_compared_on_the_candidates_both_scored(run: dict, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    other = tmp_path / "seed3.json"
    table = run["table"]
    assert rank.main(["--truth", str(table.out), "--seed", "3", "--json", str(other), "--work", str(tmp_path / "w3"),
                      *ARGS, "--skip", "probe", "--skip", "proxy"]) == 0  # fmt: skip
    out = tmp_path / "seeds.json"
    assert seeds.main([str(run["json"]), str(other), "--json", str(out), "--resamples", "200"]) == 0
    result = json.loads(out.read_text())
    assert result["seeds"] == [0, 3] and result["candidates"] == 6
    entry = result["groups"]["all"]
    assert entry["candidates"] == 6 and -1 <= entry["tau_between"] <= 1
    lo, hi = entry["tau_between_ci"]
    assert lo <= entry["tau_between"] <= hi
    for m in ("loss", "held"):
        for s in (0, 3):
            lo, hi = entry[m][f"tau_seed{s}_ci"]
            assert lo <= entry[m][f"tau_seed{s}"] <= hi, (m, s)
        assert len(entry[m]["diff_0_3_ci"]) == 2
    own = run["result"]["groups"]["all"]["loss"]
    assert entry["loss"]["tau_seed0"] == pytest.approx(own["tau_supernet_loss"], abs=1e-12)  # the benchmark's own
    assert entry["loss"]["tau_params"] == pytest.approx(own["tau_params"], abs=1e-12)  # statistics, to rounding
    assert len(entry["loss"]["diff_0_params_ci"]) == len(entry["loss"]["diff_3_params_ci"]) == 2
    kinds = {c["block_name"] for c in run["result"]["candidates"]}
    blocks = {k: v for k, v in result["groups"].items() if k.startswith("block ")}
    assert set(blocks) == {f"block {k}" for k in kinds} and sum(v["candidates"] for v in blocks.values()) == 6
    assert "sealed" in result["groups"] and "loss" not in result["groups"]["sealed"]  # one sealed: no ranking
    assert "| all | 6 |" in capsys.readouterr().out
    assert seeds.main([str(run["json"]), str(run["json"])]) == 2
    assert "two or more different seeds or settings" in capsys.readouterr().err
    design = tmp_path / "design.json"
    doc = json.loads(run["json"].read_text())
    doc["settings"]["random"] += 1  # one seed, another sandwich: a design choice, named by what differs
    for c in doc["candidates"]:  # a newer result knows more metrics: the ones both know are compared
        c["truth_seeds"]["newer_metric"] = [1.0, 2.0]
    design.write_text(json.dumps(doc))
    assert seeds.main([str(run["json"]), str(design), "--json", str(out), "--resamples", "200"]) == 0
    r = json.loads(out.read_text())
    low, high = (f"0-random{k}" for k in (doc["settings"]["random"] - 1, doc["settings"]["random"]))
    assert r["labels"] == [low, high] and r["seeds"] == [0, 0]
    assert r["groups"]["all"]["loss"][f"tau_seed{low}"] == r["groups"]["all"]["loss"][f"tau_seed{high}"]
    assert f"supernets ['{low}', '{high}']" in capsys.readouterr().out
    doc = json.loads(other.read_text())
    doc["candidates"][0]["truth_seeds"]["loss"][0] += 1.0  # another table's truth
    other.write_text(json.dumps(doc))
    assert seeds.main([str(run["json"]), str(other)]) == 2
    assert "differ: they score different truth tables" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert seeds.main([str(run["json"]), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json: not readable as JSON" in err and "Traceback" not in err


def test_a_partitioned_supernet_is_a_setting_and_a_partition_the_space_lacks_is_refused(
    run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, work = run["table"], tmp_path / "parted"
    args = ["--truth", str(table.out), "--seed", "0", "--json", str(tmp_path / "p.json"), *ARGS, "--train-only"]
    assert rank.main([*args, "--work", str(work), "--partition", "block"]) == 0
    assert "partition: block" in (work / "supernet.yaml").read_text()
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["settings"]["partition"] == "block" and "partition" not in run["result"]["settings"]
    rows = [json.loads(line) for line in (work / "supernet" / "metrics.jsonl").read_text().splitlines()]
    assert any(k.startswith("largest[") for k in rows[-1]["layers"])
    capsys.readouterr()
    assert rank.main([*args, "--work", str(tmp_path / "never"), "--partition", "kind"]) == 2
    err = capsys.readouterr().err
    assert "--partition: 'kind' is not a choice of" in err and "Traceback" not in err
    assert not (tmp_path / "never").exists()


def test_a_trained_work_folder_is_not_pointed_at_another_table(run: dict, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The same table copied elsewhere: its recipe's paths (which the supernet's fingerprint holds) would differ,
    so the run is refused before its recipe file is rewritten."""
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(run["table"].out, moved)
    recipe = run["work"] / "supernet.yaml"
    before = recipe.read_bytes()
    args = ["--truth", str(moved), "--seed", "0", "--json", str(tmp_path / "x.json"), "--work", str(run["work"]), *ARGS]
    assert rank.main(args) == 2
    err = capsys.readouterr().err
    assert "give --data (--truth when it is the same table) the folder it names" in err and str(moved) in err
    assert "Traceback" not in err
    assert recipe.read_bytes() == before and not (tmp_path / "x.json").exists()


def _copy_table(run: dict, folder: Path) -> Path:
    import shutil

    shutil.copytree(run["table"].out, folder, ignore=shutil.ignore_patterns(".setup.lock"))
    return folder


def test_a_trained_supernet_scores_another_table_of_the_same_setup(run: dict, tmp_path: Path) -> None:
    """``--data`` is the table the supernet was trained on, ``--truth`` a table of the same setup (here a copy
    whose records say otherwise): the ranks are against the second table's records, the scores are the cached
    ones (the supernet is not retrained) and neither table nor the work folder's recipe is written."""
    other = _copy_table(run, tmp_path / "longer")
    lines = (other / "records.jsonl").read_text().splitlines()
    changed = []
    for line in lines:
        r = json.loads(line)
        r["loss"] = 10.0 - r["loss"]  # the other table's truth: the reverse order
        changed.append(json.dumps(r))
    (other / "records.jsonl").write_text("\n".join(changed) + "\n")
    before, recipe = folder_hashes(other), (run["work"] / "supernet.yaml").read_bytes()
    out = tmp_path / "other.json"
    args = ["--data", str(run["table"].out), "--truth", str(other), "--seed", "0", "--json", str(out),
            "--work", str(run["work"]), *ARGS]  # fmt: skip
    assert rank.main(args) == 0
    result, first = json.loads(out.read_text()), run["result"]
    assert result["truth_dir"] == str(other) and result["data_dir"] == first["data_dir"]
    assert result["supernet"]["sessions"] == first["supernet"]["sessions"]  # trained once, not again
    by_id = {c["id"]: c for c in first["candidates"]}
    for c in result["candidates"]:
        assert c["scores"] == by_id[c["id"]]["scores"]  # the score cache, reused
        assert c["truth"]["loss"] == pytest.approx(10.0 - by_id[c["id"]]["truth"]["loss"], abs=1e-12)
    t_new, t_old = result["groups"]["all"]["loss"]["tau_supernet"], first["groups"]["all"]["loss"]["tau_supernet"]
    assert t_new == pytest.approx(-t_old, abs=1e-12)  # every pair's order reversed, ties kept
    assert folder_hashes(other) == before and (run["work"] / "supernet.yaml").read_bytes() == recipe
    assert folder_hashes(run["table"].out) == run["before"]


def test_a_table_of_another_setup_is_refused_as_truth(run: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    other = _copy_table(run, tmp_path / "other")
    teacher = other / run["table"].setup.info["teacher"]["weights"]
    data = bytearray(teacher.read_bytes())
    data[-1] ^= 1
    teacher.write_bytes(bytes(data))
    out = tmp_path / "x.json"
    args = ["--data", str(run["table"].out), "--truth", str(other), "--seed", "0", "--json", str(out),
            "--work", str(run["work"]), *ARGS]  # fmt: skip
    assert rank.main(args) == 2
    err = capsys.readouterr().err
    assert f"{other / 'setup.json'}: teacher.weights:" in err and "is not the same bytes" in err
    assert "Traceback" not in err and not out.exists()


def test_errors_are_messages(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = run["table"]
    args = ["--json", str(tmp_path / "x.json"), "--work", str(tmp_path / "w"), *ARGS]
    assert rank.main(["--truth", str(table.out), "--seed", "101", *args]) == 2
    err = capsys.readouterr().err
    assert "--seed: 101 is one of the truth runs' seeds" in err and "Traceback" not in err
    assert rank.main(["--truth", str(tmp_path / "nowhere"), "--seed", "0", *args]) == 2
    assert "not a truth table" in capsys.readouterr().err


def test_the_design_choice_table_reads_every_setting_from_one_pass(run: dict, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """supernet_choices.py on the rank benchmark's supernet: every (recalibrate, batches) setting, on the unsealed
    candidates only; the default setting's loss is the rank benchmark's own supernet_loss, bit for bit."""
    out = tmp_path / "choices.json"
    table = run["table"]
    assert choices.main(["--truth", str(table.out), "--work", str(run["work"]), "--json", str(out), "--proxy", "1",
                         "--proxy-steps", "2", "--refine-steps", "4", "--resamples", "200"]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    unsealed = [c for c in run["result"]["candidates"] if not c["sealed"]]
    assert result["candidates"] == [c["id"] for c in unsealed] and len(unsealed) >= 3
    total = result["held_out_batches"]
    assert total >= 1 and result["default"] == {"recalibrate": 1, "batches": total}  # DRY's recalibrate
    settings = {(e["recalibrate"], e["batches"]) for e in result["table"] if not e["refine"]}
    assert {e["refine"] for e in result["table"]} == {0, 2, 4} and result["refine"]["steps"] == 4
    assert settings == {
        (r, n) for r in choices.RECALIBRATE for n in {*(b for b in choices.BATCHES if b < total), total}
    }
    for e in result["table"]:
        assert e["seconds"] > 0 and e["proxy_over_supernet"] > 0
        for m in ("loss", "held"):
            lo, hi = e[m]["tau_ci"]
            assert -1 <= lo <= e[m]["tau"] <= hi <= 1, (e, m)
    # the setting the supernet was trained to be scored with ranks exactly as the rank benchmark's score
    scorer = choices.SupernetScorer(run["work"] / "supernet", choices.load_recipe(run["work"] / "supernet.yaml"))
    archs = {r["id"]: r["arch"] for r in rank.truth_candidates(table.setup)[0]}
    for c in unsealed[:2]:
        p = choices._time_pass(scorer, planner.loads(archs[c["id"]]), 1)
        assert choices._loss(p, total) == pytest.approx(c["scores"]["supernet_loss"], rel=1e-12, abs=0)
    assert "| R | N |" in capsys.readouterr().out
    sealed = tmp_path / "sealed.json"
    args = ["--truth", str(table.out), "--work", str(run["work"]), "--proxy", "0", "--refine-steps", "0"]
    assert choices.main([*args, "--json", str(sealed), "--sealed"]) == 2  # the tiny table has one sealed candidate
    assert "holds 1 complete sealed candidates" in capsys.readouterr().err
    assert choices.main(["--truth", str(table.out), "--work", str(tmp_path / "none"), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds no trained supernet" in err and "Traceback" not in err


# -- the statistics --------------------------------------------------------------------------------------


def test_regret_by_hand() -> None:
    truth = np.array([3.0, 2.0, 1.0])
    assert report._regret(truth, np.array([1.0, 2.0, 3.0]), 1) == 2.0  # picks the worst
    assert report._regret(truth, np.array([1.0, 2.0, 3.0]), 3) == 0.0  # all three hold the best
    assert report._regret(truth, np.array([3.0, 2.0, 1.0]), 1) == 0.0
    assert report._random_regret(truth, 1) == pytest.approx(1.0, abs=1e-12)  # 3 - mean(3, 2, 1)
    assert report._random_regret(truth, 2) == pytest.approx(1 / 3, abs=1e-12)  # misses 3 in 1 pair of 3
    assert report._regret(truth, np.array([1.0, math.nan, 3.0]), 1) == 2.0  # a NaN score is left out


def test_vectorised_rho_and_paired_difference() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(40, 9)).astype(float)  # many ties
    b = rng.normal(size=(40, 9))
    for x, y, rho in zip(a, b, ranking.spearman_rho_rows(a, b)):
        assert rho == pytest.approx(ranking.spearman_rho(x, y), abs=1e-12)
    assert math.isnan(ranking.spearman_rho_rows(np.ones((1, 4)), b[:1, :4])[0])  # constant: NaN
    x = np.arange(15.0)
    y, z = x + rng.normal(0, 4, 15), x + rng.normal(0, 8, 15)
    # the vectorised intervals are the generic bootstrap of the same statistics (same resamples)
    want = ranking.bootstrap_ci(lambda i: ranking.spearman_rho(y[i], x[i]), 15, resamples=500)
    assert ranking.bootstrap_rho_ci(y, x, resamples=500) == pytest.approx(want, abs=1e-12)
    want = ranking.bootstrap_ci(lambda i: ranking.kendall_tau(y[i], x[i]) - ranking.kendall_tau(z[i], x[i]), 15,
                                resamples=500)  # fmt: skip
    assert ranking.bootstrap_tau_diff_ci(y, z, x, resamples=500) == pytest.approx(want, abs=1e-12)
