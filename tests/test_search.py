"""Search spaces, studies, the Optuna adapter and the Pareto export (fast: the capacity evaluator only)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import planner
from planner.errors import ConfigError
from planner.search import load_space, loads_space, sample_space
from planner.search._cost import price
from support import SMALL, run_study

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "searchspaces").glob("*.yaml"))


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(SMALL)
    return p


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_sample_validates_and_round_trips(path: Path) -> None:
    space = load_space(path)
    for s in sample_space(space, 25, seed=1):
        assert s.error is None, s.error
        assert planner.loads(planner.dumps(s.graph)) == s.graph


def test_sampling_is_reproducible(tiny: Path) -> None:
    space = load_space(tiny)
    a = [space.sample(random.Random(7)) for _ in range(3)]
    b = [space.sample(random.Random(7)) for _ in range(3)]
    assert a == b
    assert [s.values for s in sample_space(space, 5, seed=0)] == [s.values for s in sample_space(space, 5, seed=0)]


def test_conditions_ties_and_sub_mappings() -> None:
    space = loads_space(
        """
name: t
width: 64
frontend: [{kind: conv_extractor, conv_layers: [[32, 10, 5]], projection: true}]
layers:
  - choice:
      - {kind: transformer, heads: 4, ffn: {ref: f}}
      - {kind: conformer, heads: 4, ffn: {ref: f}, kernel: {choice: [3, 5]}}
    name: block
  - {kind: transformer, heads: 4, ffn: {choice: [64, 128], name: f}}
""",
        "t.yaml",
    )
    labels = [d.label for d in space.domains()]
    assert labels.index("block") < labels.index("layers[0].choice[1].kernel")
    frozen = space.freeze({"block": "transformer", "f": 128})
    assert frozen["layers"][0] == {"kind": "transformer", "heads": 4, "ffn": 128}
    frozen = space.freeze({"block": "conformer", "f": 64, "layers[0].choice[1].kernel": 5})
    assert frozen["layers"][0]["kernel"] == 5 and frozen["layers"][0]["ffn"] == 64
    planner.from_dict(frozen)


@pytest.mark.parametrize(("body", "where"), [
    ("width: {choice: []}", "bad.yaml: width.choice: expected a non-empty list"),
    ("width: {range: [128, 64], step: 32}", "bad.yaml: width.range: low 128 is greater than high 64"),
    ("width: {choice: [64], steps: 2}", "bad.yaml: width.steps: unknown key in a choice"),
    ("width: {ref: nowhere}", "bad.yaml: width.ref: no domain is named 'nowhere'"),
    ("width: {choice: [64], when: {nope: 1}}", "bad.yaml: width.when.nope: no domain has this path or name"),
    ("width: 64\nwidht: {choice: [1, 2]}", "bad.yaml: widht: unknown field"),
])  # fmt: skip
def test_bad_space_names_file_and_field(body: str, where: str) -> None:
    text = "name: b\n" + body + "\nframe: 1\n" if False else "name: b\n" + body + (
        "\nfrontend: [{kind: conv_extractor, conv_layers: [[32, 10, 5]], projection: true}]"
        "\nlayers: [{kind: transformer, heads: 2, ffn: 64}]\n")  # fmt: skip
    if "width:" not in body:
        text += "width: 64\n"
    with pytest.raises(ConfigError) as info:
        loads_space(text, "bad.yaml")
    assert where in str(info.value), str(info.value)


def test_bad_study_names_field(tiny: Path) -> None:
    from planner.search import SearchOptions, resolve_study

    bad = tiny.parent / "bad.yaml"
    bad.write_text(SMALL.replace("budgets: {params: 300000}", "budgets: {parms: 1}"))
    with pytest.raises(ConfigError, match=r"bad.yaml: study.budgets.parms: unknown field"):
        resolve_study(load_space(bad), SearchOptions())


def test_search_budget_export_and_repricing(tiny: Path, tmp_path: Path) -> None:
    from planner.search import export_pareto

    study = run_study(tiny, f"sqlite:///{tmp_path / 's.db'}")
    assert len(study.trials) == 8
    doc = export_pareto(study, tmp_path / "export")
    assert doc["points"]
    assert (tmp_path / "export" / "pareto.csv").exists()
    assert (tmp_path / "export" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "export" / "pareto.html").read_text()
    assert "plotly.min.js" in html and "infeasible: over a budget" in html  # infeasible trials drawn apart
    assert json.loads((tmp_path / "export" / "pareto.json").read_text()) == doc
    for p in doc["points"]:
        assert p["cost"]["params"] <= 300000
        graph = planner.load(tmp_path / "export" / p["architecture"])
        assert price(graph, 1.0) == p["cost"]  # exact: same integer formulas
    for t in study.trials:
        if t.user_attrs.get("cost", {}).get("params", 0) > 300000:
            assert t.user_attrs["feasible"] is False and max(t.user_attrs["constraints"]) > 0


def test_same_seed_same_trials(tiny: Path, tmp_path: Path) -> None:
    a = run_study(tiny, str(tmp_path / "a.journal"))
    b = run_study(tiny, str(tmp_path / "b.journal"))
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


def test_resume_reaches_the_trial_count(tiny: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    run_study(tiny, url, n_trials=3)
    study = run_study(tiny, url, n_trials=5)
    assert len(study.trials) == 5


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_exact_count(tiny: Path, tmp_path: Path, kind: str) -> None:
    url = str(tmp_path / "w.journal") if kind == "journal" else f"sqlite:///{tmp_path / 'w.db'}"
    study = run_study(tiny, url, n_trials=6, workers=2)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == 6 and len(set(numbers)) == 6


def test_cli_sample(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from planner.cli import main

    assert main(["sample", str(tiny), "-n", "3", "--seed", "0", "--out", str(tmp_path / "s")]) == 0
    assert len(list((tmp_path / "s").glob("sample-*.yaml"))) == 3
    assert main(["sample", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err


def test_cli_pareto_export_writes_both_plots(tiny: Path, tmp_path: Path) -> None:
    from planner.cli import main

    url = f"sqlite:///{tmp_path / 'p.db'}"
    run_study(tiny, url, n_trials=6)
    assert main(["pareto", "--study", "tiny", "--storage", url, "--export", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 0
    assert (tmp_path / "out" / "pareto.html").stat().st_size > 0


def test_no_future_warning_from_constraints(tiny: Path, tmp_path: Path) -> None:
    import warnings

    for sampler in ("tpe", "nsga2"):
        space = tmp_path / f"{sampler}.yaml"
        space.write_text(SMALL.replace("{kind: tpe, n_startup_trials: 4}", sampler))
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            study = run_study(space, str(tmp_path / f"{sampler}.journal"), n_trials=4)
        assert all(set(t.constraints) == {"invalid", "budget.params"} for t in study.trials)


def _evaluator(path: Path) -> str:
    from planner.search import study_from_dict

    space = load_space(path)
    return "capacity" if space.study is None else study_from_dict(space.study, str(path), path="study").evaluator.kind


# every shipped space whose study is cost-only runs as a whole here (the others train or score networks)
CAPACITY_SPACES = [p.name for p in SPACES if _evaluator(p) == "capacity"]


@pytest.mark.parametrize("name", CAPACITY_SPACES)
def test_shipped_capacity_space_runs(name: str, tmp_path: Path) -> None:
    study = run_study(ROOT / "searchspaces" / name, str(tmp_path / "s.journal"), n_trials=5)
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)


@pytest.mark.slow
@pytest.mark.parametrize("name", CAPACITY_SPACES)
def test_shipped_capacity_space_full_study(name: str, tmp_path: Path) -> None:
    from planner.search import export_pareto

    study = run_study(ROOT / "searchspaces" / name, str(tmp_path / "s.journal"))  # the file's 20 trials
    assert len(study.trials) == 20
    assert export_pareto(study, tmp_path / "out")["points"]


def test_a_budget_no_candidate_meets_gives_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from planner.cli import main

    space = tmp_path / "impossible.yaml"
    space.write_text(
        SMALL.replace("budgets: {params: 300000}", "budgets: {params: 1000}").replace("n_trials: 8", "n_trials: 4")
    )
    code = main(["search", str(space), "--storage", str(tmp_path / "s.journal")])
    err = capsys.readouterr().err
    assert code == 1
    assert "no candidate met the budgets: params <= 1000 (the smallest of 4 candidates:" in err
    assert "Traceback" not in err
