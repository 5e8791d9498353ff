"""The truth table (benchmarks/truth.py): its plan, its runs and records, resume, parts, torn lines, the
stability report and the shared rank statistics, on a tiny synthetic corpus and a reduced space (a few
steps: nothing here checks how well anything trains). The real generation is marked slow."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import planner
from planner.errors import ConfigError
from support import TRUTH_PLAN, TRUTH_TINY, load_benchmark, open_tiny_truth, small_truth_space

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "searchspaces" / "supernet-small.yaml"

truth = load_benchmark("truth")
ranking = load_benchmark("ranking")
records_mod = load_benchmark("truth_records")
plan_mod = load_benchmark("truth_plan")

TINY, PLAN = TRUTH_TINY, TRUTH_PLAN
_small_space, _open = small_truth_space, open_tiny_truth


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory, one_thread: None):  # noqa: ANN201
    """A tiny table, generated in two parts (3 floats and 3 variants of one of them, 2 seeds: 12 runs)."""
    folder = tmp_path_factory.mktemp("truth")
    space = _small_space(folder / "small.yaml")
    t = _open(folder / "out", space)
    assert t.generate((0, 2)) == 6  # part 0 first: its variants' parent weights are its own runs
    assert t.generate((1, 2)) == 6
    return t, space


# -- plan ------------------------------------------------------------------------------------------------


def test_plan_is_stratified_distinct_deterministic(tmp_path: Path) -> None:
    space = _small_space(tmp_path / "small.yaml")
    plan = plan_mod.plan_candidates(space, n=12, parents=4, sealed=0.25, seed=3)
    floats = [c for c in plan if c.variant == "float"]
    assert len(floats) == 12 and len({planner.dumps(c.graph) for c in plan}) == len(plan) == 12 + 3 * 4
    assert all(c.values["weight_bits"] == "fp32" and c.values["sparsity"] == "none" for c in floats)
    assert Counter(c.block for c in floats) == {0: 4, 1: 4, 2: 4}  # 12 over 12 strata: one each
    assert Counter(c.quartile for c in floats) == {0: 3, 1: 3, 2: 3, 3: 3}
    assert sum(c.sealed for c in floats) == 3  # 25% of 12
    variants = [c for c in plan if c.variant != "float"]
    parents = {c.parent for c in variants}
    assert len(parents) == 4 and sum(floats[int(p[1:])].sealed for p in parents) == 1  # round(0.25 * 4)
    for c in variants:
        p = next(f for f in floats if f.id == c.parent)
        assert c.sealed == p.sealed and c.stratum == p.stratum and c.id.startswith(p.id + "-")
        assert {k: v for k, v in c.values.items() if k not in ("weight_bits", "sparsity")} == {
            k: v for k, v in p.values.items() if k not in ("weight_bits", "sparsity")}  # fmt: skip
        assert c.graph.param_count == p.graph.param_count  # compression changes storage, not the parameter count
    assert {c.variant for c in variants} == {"int8", "int4", "2:4"}
    again = plan_mod.plan_candidates(space, n=12, parents=4, sealed=0.25, seed=3)
    assert [c.summary() for c in again] == [c.summary() for c in plan]
    assert [c.summary() for c in plan_mod.plan_candidates(space, 12, 4, 0.25, seed=4)] != [c.summary() for c in plan]
    with pytest.raises(ConfigError, match="candidates: 49 asked; the float space holds 48"):
        plan_mod.plan_candidates(space, n=49)


@pytest.mark.slow
def test_plan_of_the_shipped_space() -> None:
    plan = plan_mod.plan_candidates(SPACE)
    floats = [c for c in plan if c.variant == "float"]
    assert len(floats) == 40 and len(plan) == 70
    assert min(Counter(c.block for c in floats).values()) >= 13
    assert Counter(c.quartile for c in floats) == {0: 10, 1: 10, 2: 10, 3: 10}
    assert sum(c.sealed for c in floats) == 10 and sum(c.sealed for c in plan if c.variant != "float") == 6


# -- generation ------------------------------------------------------------------------------------------


def test_records_of_both_parts(table) -> None:  # noqa: ANN001
    t, _ = table
    records = records_mod.read_records(t.records)
    keys = [(r["id"], r["seed"]) for r in records]
    runs = [(c.id, s) for c, s in t.runs()]
    assert len(runs) == 12 and sorted(keys) == sorted(runs)
    assert keys[:6] == [k for k in runs[0::2]] and keys[6:] == runs[1::2]  # part 0 wrote first, in its order
    assert runs[:2] == [("c00", 101), ("c00", 102)]  # candidate-major, floats first
    assert [c.variant for c, _ in t.runs()[6:]] == ["int8"] * 2 + ["int4"] * 2 + ["2:4"] * 2
    for r in records:
        steps = TINY["qat_steps"] if r["variant"] != "float" else TINY["steps"]
        assert r["steps"] == steps and [s for s, _ in r["curve"]] == truth.eval_steps(steps, 1) == [0, 1, 2]
        assert r["loss"] == r["curve"][-1][1] and all(math.isfinite(v) and v > 0 for _, v in r["curve"])
        assert r["diverged"] is None and 0.0 <= r["probe"]["held_out"] <= 1.0 and r["probe"]["real"] is None
        assert 0.0 < r["probe"]["held_out_nll"] < float("inf") and r["probe"]["real_nll"] is None
        assert planner.loads(r["arch"]).param_count == r["params"] > 0 and r["macs"] > 0
        assert r["git"]["commit"] and isinstance(r["git"]["dirty"], bool) and r["threads"] == 1
        assert set(r["seconds"]) == {"total", "train", "eval", "probe"}
        if r["variant"] == "float":
            assert r["init"] is None and (t.out / "weights" / f"{r['id']}-s{r['seed']}.pt").is_file()
        else:
            assert r["init"] == f"weights/{r['parent']}-s{r['seed']}.pt"
            assert r["arch"] != next(p["arch"] for p in records if p["id"] == r["parent"])  # its compression section
    by = {(r["id"], r["seed"]): r for r in records}
    assert by[("c00", 101)]["curve"] != by[("c00", 102)]["curve"]  # the seeds train differently
    saved = json.loads((t.out / "candidates.json").read_text())
    assert [c["id"] for c in saved["candidates"]] == [c.id for c in t.plan]


def test_variant_starts_from_its_parent(table) -> None:  # noqa: ANN001
    t, _ = table
    records = {(r["id"], r["seed"]): r for r in records_mod.read_records(t.records)}
    var = next(c for c in t.plan if c.variant == "int8")
    state = torch.load(t.out / "weights" / f"{var.parent}-s101.pt", weights_only=True)
    torch.manual_seed(101)  # as the run built it
    student = planner.materialize(var.graph)
    truth.load_checkpoint_(student, state)
    recipe = truth.run_recipe(t.setup.recipe, var.graph, t.setup.teacher.num_layers, seed=truth.EVAL_SEED,
                              steps=TINY["qat_steps"], lr=t.settings["qat_lr"])  # fmt: skip
    evaluator = truth.Distiller(var.graph, t.setup.teacher, recipe)
    start = truth.held_out_loss(student, evaluator, truth.held_out_batches(t.setup, recipe, var.graph))
    # the variant's step-0 point is its parent's weights under int8 fake quantization (same ops, same order)
    assert records[(var.id, 101)]["curve"][0][1] == start


def test_resume_skips_done_runs_and_redoes_a_torn_one(table) -> None:  # noqa: ANN001
    t, space = table
    before = t.records.read_bytes()
    again = _open(t.out, space)
    assert again.generate((0, 1)) == 0 and t.records.read_bytes() == before  # everything is there
    lines = before.split(b"\n")[:-1]
    last = json.loads(lines[-1])
    torn = b"\n".join(lines[:-1]) + b"\n" + lines[-1][: len(lines[-1]) // 2]  # killed while writing the last
    t.records.write_bytes(torn)
    assert len(records_mod.read_records(t.records)) == 11  # the torn line is not a record
    assert again.generate((0, 1)) == 1
    after = records_mod.read_records(t.records)
    assert len(after) == 12 and t.records.read_bytes().endswith(b"\n")
    assert [(r["id"], r["seed"]) for r in after] == [(json.loads(x)["id"], json.loads(x)["seed"]) for x in lines]
    redone = after[-1]
    assert redone["curve"] == last["curve"] and redone["probe"] == last["probe"]  # the same run, repeated exactly


def test_records_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    assert records_mod.append_record(path, {"id": "c00", "seed": 1, "loss": 0.5})
    assert not records_mod.append_record(path, {"id": "c00", "seed": 1, "loss": 0.7})  # that run is there
    with pytest.raises(ValueError):
        records_mod.append_record(path, {"id": "c01", "seed": 1, "loss": float("nan")})  # NaN is not JSON
    path.write_text(path.read_text() + "{not json\n" + path.read_text())
    with pytest.raises(ConfigError, match=r"records.jsonl: line 2: .*not a record"):
        records_mod.read_records(path)


def test_settings_and_corpus_are_the_tables(table, tmp_path: Path) -> None:  # noqa: ANN001
    t, space = table
    with pytest.raises(
        ConfigError, match=r"setup.json: training.steps: the table was made with 2, this call asks for 3"
    ):
        _open(t.out, space, steps=3)
    with pytest.raises(ConfigError, match=r"setup.json: corpus.kind: the table was made with 'synthetic'"):
        truth.open_table(t.out, corpus="espeak", space=space)
    info = json.loads((t.out / "setup.json").read_text())
    assert info["type"] == "planner-truth-setup" and info["training"]["seeds"] == [101, 102]
    assert info["teacher"]["steps"] == 2 and 0.0 <= info["teacher"]["held_out_accuracy"] <= 1.0
    state = torch.load(t.out / "teacher.pt", weights_only=True)  # data, not pickle
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    corpus = t.out / "corpus"
    moved = tmp_path / "corpus"
    corpus.rename(moved)  # missing: re-made, and it hashes as setup.json says
    _open(t.out, space)
    assert sorted(p.name for p in corpus.rglob("*.wav")) == sorted(p.name for p in moved.rglob("*.wav"))
    wav = sorted(corpus.rglob("*.wav"))[0]
    wav.write_bytes(wav.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(ConfigError, match=r"setup.json: corpus.files: 1 differ .*delete corpus/"):
        _open(t.out, space)
    wav.write_bytes((moved / wav.relative_to(corpus)).read_bytes())


def test_report(table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    t, _ = table
    result = truth.report(t.out)
    counts = result["counts"]
    assert counts["all"] == {"candidates": 6, "runs_planned": 12, "runs_done": 12, "candidates_complete": 6,
                             "diverged": 0}  # fmt: skip
    assert counts["float"]["candidates"] == counts["compressed"]["candidates"] == 3
    assert counts["sealed"]["candidates"] + counts["unsealed"]["candidates"] == 6
    kinds = {c.summary()["block_name"] for c in t.plan}
    assert {g for g in counts if g.startswith("block ")} == {f"block {k}" for k in kinds}  # one group per kind
    assert sum(counts[f"block {k}"]["candidates"] for k in kinds) == 6
    records = {(r["id"], r["seed"]): r for r in records_mod.read_records(t.records)}
    ids = [c.id for c in t.plan]
    a = [records[(i, 101)]["loss"] for i in ids]
    b = [records[(i, 102)]["loss"] for i in ids]
    entry = result["seed_tau"]["all"]["loss"]
    assert entry["n"] == 6 and entry["tau"] == pytest.approx(ranking.kendall_tau(a, b), abs=1e-12)
    assert entry["ci"][0] <= entry["tau"] <= entry["ci"][1] or entry["tau"] in (-1.0, 1.0)
    half = result["half_tau"]["all"]["101"]
    expect = ranking.kendall_tau([records[(i, 101)]["curve"][1][1] for i in ids], a)  # T/2 = step 1
    assert half["tau"] == pytest.approx(expect, abs=1e-12)
    gains = [(r["curve"][1][1] - r["curve"][2][1]) / r["curve"][1][1] for r in records.values()]  # 3T/4 = step 1
    assert result["plateau"]["all"]["fraction"] == pytest.approx(np.mean([g <= 0.03 for g in gains]), abs=1e-12)
    assert result["metric_tau"]["all"]["loss_vs_real"]["tau"] is None  # no real recordings in this corpus
    assert truth.main(["--report", str(t.out), "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "noise ceiling" in text and "12 /   12 runs" in text
    assert json.loads((tmp_path / "r.json").read_text())["seed_tau"] == json.loads(json.dumps(result["seed_tau"]))


def test_report_against_another_table_of_the_plan(table, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001  # fmt: skip
    """A longer table of the same plan (here a copy whose losses are reversed): tau between the tables per
    metric; a table of another plan, or another architecture under an id, is refused."""
    import shutil

    t, _ = table
    other = tmp_path / "longer"
    shutil.copytree(t.out, other, ignore=shutil.ignore_patterns("weights"))
    lines = [json.loads(x) for x in (other / "records.jsonl").read_text().splitlines()]
    (other / "records.jsonl").write_text("".join(json.dumps({**r, "loss": 10.0 - r["loss"]}) + "\n" for r in lines))
    result = truth.report(t.out, other)
    groups = result["against"]["groups"]
    assert groups["all"]["n"] == 6 and groups["all"]["loss"]["tau"] == -1.0  # every pair reversed
    assert groups["all"]["held"]["tau"] == (1.0 if groups["all"]["held"]["tau"] is not None else None)
    records = {(r["id"], r["seed"]): r for r in lines}
    a, b = ([records[(c.id, s)]["loss"] for c in t.plan] for s in (101, 102))
    ceiling = groups["all"]["ceiling"]["loss"]
    assert ceiling["here"]["tau"] == pytest.approx(ranking.kendall_tau(a, b), abs=1e-12)
    assert ceiling["other"]["tau"] == ceiling["here"]["tau"] and ceiling["diff"]["tau"] == 0.0  # both seeds reversed
    assert ceiling["diff"]["ci"] == [0.0, 0.0]
    assert truth.main(["--report", str(t.out), "--against", str(other)]) == 0
    text = capsys.readouterr().out
    assert f"tau between this table and {other}" in text and f"noise ceiling of {other} on these" in text
    # a table whose seed 101 alone is reversed: its seeds disagree as much as these agree, on the same candidates
    (other / "records.jsonl").write_text("".join(json.dumps({**r, "loss": 10.0 - r["loss"]} if r["seed"] == 101
                                                            else r) + "\n" for r in lines))  # fmt: skip
    ceiling = truth.report(t.out, other)["against"]["groups"]["all"]["ceiling"]["loss"]
    tau = ranking.kendall_tau(a, b)
    assert ceiling["other"]["tau"] == pytest.approx(-tau, abs=1e-12)
    assert ceiling["diff"]["tau"] == pytest.approx(2 * tau, abs=1e-12)
    # paired: each resample's difference is 2 x its own tau, so the interval is twice the ceiling's own
    assert ceiling["diff"]["ci"] == pytest.approx([2 * x for x in ceiling["here"]["ci"]], abs=1e-12)
    bad = lines[0] | {"arch": "format: 1\nname: other\n", "loss": 1.0}
    (other / "records.jsonl").write_text(json.dumps(bad) + "\n")
    assert truth.main(["--report", str(t.out), "--against", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"{other / 'records.jsonl'}: records: {bad['id']}: another architecture" in err and "Traceback" not in err
    info = json.loads((other / "setup.json").read_text())
    info["plan"]["seed"] = 7
    (other / "setup.json").write_text(json.dumps(info))
    assert truth.main(["--report", str(t.out), "--against", str(other)]) == 2
    assert f"{other / 'setup.json'}: plan:" in capsys.readouterr().err


def test_cli_errors_are_messages(table, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    t, space = table
    args = ["--out", str(t.out), "--space", str(space), "--corpus", "synthetic", "--steps", "5", "--setup-only"]
    assert truth.main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "training.steps" in err and "Traceback" not in err
    assert truth.main(["--report", str(t.out / "nowhere")]) == 2
    assert "not a truth table" in capsys.readouterr().err


# -- shared pieces ---------------------------------------------------------------------------------------


def test_vectorised_tau_equals_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(50, 9)).astype(float)  # many ties
    b = rng.integers(0, 4, size=(50, 9)).astype(float)
    rows = ranking.kendall_tau_rows(a, b)
    for x, y, tau in zip(a, b, rows):
        s = n_x = n_y = 0
        for i in range(9):
            for j in range(i + 1, 9):
                dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
                s, n_x, n_y = s + dx * dy, n_x + (dx != 0), n_y + (dy != 0)
        want = s / math.sqrt(n_x * n_y) if n_x and n_y else float("nan")
        assert (math.isnan(tau) and math.isnan(want)) or tau == pytest.approx(want, abs=1e-12)
    assert math.isnan(ranking.kendall_tau([1, float("nan"), 3], [1, 2, 3]))  # NaN fails, never agrees
    assert math.isnan(ranking.spearman_rho([1, float("nan"), 3], [1, 2, 3]))


def test_bootstrap_intervals() -> None:
    x = np.arange(20.0)
    assert ranking.bootstrap_tau_ci(x, x) == (1.0, 1.0)
    assert ranking.bootstrap_tau_ci(x, -x) == (-1.0, -1.0)
    rng = np.random.default_rng(1)
    y = x + rng.normal(0, 6, size=20)
    lo, hi = ranking.bootstrap_tau_ci(x, y)
    assert lo < ranking.kendall_tau(x, y) < hi
    # the vectorised tau interval is the generic bootstrap of kendall_tau (same resamples)
    assert (lo, hi) == pytest.approx(ranking.bootstrap_ci(lambda i: ranking.kendall_tau(x[i], y[i]), 20), abs=1e-12)
    assert all(math.isnan(v) for v in ranking.bootstrap_tau_ci([1.0], [2.0]))
    assert all(math.isnan(v) for v in ranking.bootstrap_ci(lambda i: float("nan"), 10))  # NaN statistic: NaN bounds


def test_classification_probe_scores_further_sets_with_the_same_probe(table) -> None:  # noqa: ANN001
    t, _ = table
    from trainers.evaluate import ProbeTask, classification_probe

    c = t.plan[0]
    student = planner.materialize(c.graph).eval()
    labels = t.setup.labels
    task = ProbeTask(train="train.tsv", test="test.tsv", features="last", steps=5, seed=0)
    res = classification_probe(student, c.graph, task, labels["train"], labels["held"], t.setup.classes,
                               also={"again": labels["held"], "train": labels["train"]})  # fmt: skip
    assert res["also"]["again"] == {"accuracy": res["accuracy"], "nll": res["nll"], "chance": res["chance"],
                                    "n_test": res["n_test"]}  # fmt: skip
    assert 0.0 < res["nll"] < float("inf")  # NaN fails too
    assert res["also"]["train"]["accuracy"] == res["train_accuracy"]


# -- the real table --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_setup_and_first_candidate(tmp_path: Path, one_thread: None) -> None:
    """The espeak corpus with the real recordings, the default teacher, and the first candidate's two runs at
    the full length (about 10 minutes on one thread)."""
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    t = truth.open_table(tmp_path / "truth")
    info = t.setup.info
    assert info["corpus"]["train_utterances"] == 240 and info["corpus"]["held_utterances"] == 80
    assert info["teacher"]["held_out_accuracy"] > 0.5  # chance is 0.05
    for cand, seed in t.runs()[:2]:
        r = t.run_one(cand, seed)
        assert r["curve"][-1][0] == 2000 and r["loss"] < r["curve"][0][1]
        assert r["probe"]["held_out"] > 0.05 and (not t.setup.labels["real"] or r["probe"]["real"] is not None)
