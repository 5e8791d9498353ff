"""The proxy rank-agreement benchmark (benchmarks/proxy_rank.py): its rank statistics, its candidates from the
shipped space, and its whole measurement on a tiny synthetic corpus (no timing is checked)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import planner
from support import load_benchmark
from trainers import load_recipe

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "searchspaces" / "proxy-small.yaml"


pr = load_benchmark("proxy_rank")


@pytest.mark.parametrize(
    ("a", "b", "tau"),
    [
        ([1, 2, 3], [10, 20, 30], 1.0),
        ([1, 2, 3], [3, 2, 1], -1.0),
        ([1, 2, 3], [1, 3, 2], 1 / 3),  # 2 concordant, 1 discordant of 3 pairs
        ([1, 2, 3, 4], [2, 1, 4, 3], 2 / 6),  # 4 concordant, 2 discordant
        # a ties (1, 2): 5 concordant pairs, none discordant; tau-b = 5 / sqrt(5 * 6)
        ([1, 2, 2, 3], [1, 3, 2, 4], 5 / math.sqrt(30)),
        # a ties (0, 1), b ties (2, 3): (0,2) (0,3) (1,2) (1,3) concordant; tau-b = 4 / sqrt(5 * 5)
        ([1, 1, 2, 3], [5, 6, 7, 7], 4 / 5),
        # two discordant pairs, one pair tied in both: -2 / sqrt(2 * 2)
        ([0.5, 0.5, 0.1], [2.0, 2.0, 9.0], -1.0),
    ],
)  # fmt: skip
def test_kendall_tau_hand_computed(a: list[float], b: list[float], tau: float) -> None:
    assert pr.kendall_tau(a, b) == pytest.approx(tau, abs=1e-12)
    assert pr.kendall_tau(b, a) == pytest.approx(tau, abs=1e-12)  # symmetric


def test_kendall_tau_constant_and_bad_input() -> None:
    assert math.isnan(pr.kendall_tau([1, 1, 1], [1, 2, 3]))  # no ranking to agree with
    with pytest.raises(ValueError, match="same length"):
        pr.kendall_tau([1, 2], [1, 2, 3])


@pytest.mark.parametrize(
    ("a", "b", "rho"),
    [
        ([1, 2, 3], [1, 3, 2], 0.5),  # 1 - 6 * 2 / (3 * 8)
        ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], -1.0),
        # average ranks [1, 2.5, 2.5, 4] vs [1, 3, 2, 4]: 4.5 / sqrt(4.5 * 5)
        ([1, 2, 2, 3], [1, 3, 2, 4], 4.5 / math.sqrt(22.5)),
    ],
)  # fmt: skip
def test_spearman_hand_computed(a: list[float], b: list[float], rho: float) -> None:
    assert pr.spearman_rho(a, b) == pytest.approx(rho, abs=1e-12)


def test_candidates_are_distinct_deterministic_samples_of_the_space() -> None:
    picks = pr.sample_candidates(SPACE, 12, seed=0)
    texts = [planner.dumps(g) for _, _, g in picks]
    assert len(set(texts)) == 12
    assert [i for i, _, _ in picks] == [i for i, _, _ in pr.sample_candidates(SPACE, 12, seed=0)]
    assert [i for i, _, _ in picks] == sorted(i for i, _, _ in picks)  # first distinct draws, in order
    for _, _, g in picks:  # one projection head to the teacher's width, on the last layer
        (head,) = [n for n in g.nodes("heads") if n.kind == "projection_heads"]
        assert head.config.width == 64
        assert head.config.layer_indices(len(g.nodes("layers"))) == [len(g.nodes("layers")) - 1]


def test_too_few_distinct_architectures_is_an_error(tmp_path: Path) -> None:
    space = tmp_path / "two.yaml"
    text = SPACE.read_text().split("study:")[0]
    text = text.replace("{choice: [16, 32, 48, 64], name: width}", "{choice: [16, 32], name: width}")
    for old, new in [("repeat: {range: [1, 4], name: depth}", "repeat: {range: [1, 1], name: depth}"),
                     ("{choice: [1, 2, 4], name: heads}", "1"), ("{choice: [32, 64, 128, 256], name: ffn}", "32"),
                     ("{choice: [3, 7], name: kernel}", "3")]:  # fmt: skip
        text = text.replace(old, new)
    space.write_text(text)
    assert len(pr.sample_candidates(space, 6, seed=0)) == 6  # 2 widths x 3 blocks
    with pytest.raises(ValueError, match="only 6 distinct valid architectures"):
        pr.sample_candidates(space, 7, seed=0)


def test_shipped_space_runs_its_capacity_study(tmp_path: Path) -> None:
    from planner.search import SearchOptions, run_search

    study = run_search(str(SPACE), SearchOptions(storage=str(tmp_path / "s.journal"), progress=False, n_trials=5))
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)


def test_benchmark_on_three_candidates(tmp_path: Path, one_thread: None) -> None:
    result = pr.benchmark(tmp_path, corpus="synthetic", candidates=3, seed=0, proxy_steps=(1, 2), factor=2,
                          teacher_steps=2, synthetic_utterances=12)  # fmt: skip
    assert result["corpus"] == "synthetic" and result["train_utterances"] == 12
    assert result["held_out_utterances"] == 6
    assert result["teacher"]["layers"] == 3 and 0.0 <= result["teacher"]["held_out_accuracy"] <= 1.0
    rows = result["candidates"]
    assert [r["index"] for r in rows] == [i for i, _, _ in pr.sample_candidates(SPACE, 3, seed=0)]
    for r in rows:
        assert sorted(r["loss"]) == sorted(r["seconds"]) == [1, 2, 4]  # N = 1, 2 and 2 N = 2, 4, each run once
        assert all(math.isfinite(v) and v > 0 for v in r["loss"].values())
    table = {(a["proxy"], a["reference"]): a for a in result["agreement"]}
    assert set(table) == {("1 steps", "2 steps"), ("2 steps", "4 steps"), ("1 steps", "4 steps"),
                          ("params", "4 steps"), ("naswot", "4 steps")}  # fmt: skip
    for n, ref in [(1, 2), (2, 4), (1, 4)]:
        a, b = [r["loss"][n] for r in rows], [r["loss"][ref] for r in rows]
        row = table[(f"{n} steps", f"{ref} steps")]
        assert row["kendall_tau"] == pr.kendall_tau(a, b) and row["spearman"] == pr.spearman_rho(a, b)
        assert any(math.isclose(row["kendall_tau"], v) for v in (-1.0, -1 / 3, 1 / 3, 1.0))  # 3 pairs, no ties
        assert row["proxy_s"] == sorted(r["seconds"][n] for r in rows)[1]  # the median of three
    params = table[("params", "4 steps")]
    assert params["kendall_tau"] == pr.kendall_tau([-r["params"] for r in rows], [r["loss"][4] for r in rows])
    assert result["tau_null_sd"] == pytest.approx(math.sqrt(2 * 11 / (9 * 3 * 2)))
    base = load_recipe(tmp_path / "distill.yaml")  # the recipe the benchmark wrote, as a user would load it
    assert base.teacher is not None and base.teacher.kind == "architecture"
    for _, _, graph in pr.sample_candidates(SPACE, 3, seed=0):  # each distils the teacher's last layer
        recipe = pr.candidate_recipe(base, graph, 3)
        assert recipe.loss.layers == ((len(graph.nodes("layers")) - 1, 2),) and recipe.loss.weights == (1.0,)
