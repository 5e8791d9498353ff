"""The distillation-proxy evaluator inside ``planner search``: intermediate values, pruning, budgets."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import planner
import trainers
from planner.errors import ConfigError
from planner.search import SearchOptions, loads_space, run_search, study_from_dict
from support import recipe_text, ta_teacher_yaml

SPACE = """
format: 1
name: distill-space
input: {kind: waveform, sample_rate: 16000}
width: 32
frontend:
  - kind: conv_extractor
    conv_layers: [[16, 10, 5], [16, 4, 4], [32, 4, 4], [32, 2, 2]]
    output_norm: true
    projection: true
  - kind: mask_embedding
  - {kind: conv_pos_embedding, kernel: 8, groups: 4}
  - kind: layer_norm
layers:
  - kind: transformer
    repeat: 2
    heads: {choice: [1, 2, 4]}
    ffn: {choice: [8, 32, 512]}
heads:
  - {kind: projection_heads, width: 48}
study:
  name: distill
  objectives: [{metric: distill_loss}]
  budgets: {params: BUDGET}
  sampler: {kind: random}
  pruner: {kind: median, n_startup_trials: 2}
  n_trials: 8
  seed: 1
  evaluator: {kind: distill, recipe: RECIPE, steps: 4, eval_every: 1, eval_batches: 1}
"""


def _space(tmp_path: Path, recipe: Path, budget: int) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("RECIPE", str(recipe)).replace("BUDGET", str(budget)))
    return path


def _budget() -> int:
    """A budget between the FFN widths 32 and 512, so some candidates are infeasible."""
    text = SPACE.split("study:")[0]
    small = planner.loads(text.replace("{choice: [1, 2, 4]}", "2").replace("{choice: [8, 32, 512]}", "32"))
    large = planner.loads(text.replace("{choice: [1, 2, 4]}", "2").replace("{choice: [8, 32, 512]}", "512"))
    return (small.param_count + large.param_count) // 2


def test_distill_evaluator_reports_prunes_and_never_trains_infeasible(
    tmp_path: Path, corpus: Path, ta_teacher_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = tmp_path / "recipe.yaml"
    data = f"{{train: [{corpus}], valid: {corpus}, batch_seconds: 1.0, max_seconds: 0.5, min_seconds: 0.1}}"
    recipe.write_text(recipe_text(ta_teacher_yaml(ta_teacher_file), corpus, data=data))
    budget = _budget()
    trained: list[int] = []
    real = trainers.distill_proxy

    def recording(graph, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        trained.append(graph.param_count)
        yield from real(graph, *args, **kwargs)

    monkeypatch.setattr(trainers, "distill_proxy", recording)
    study = run_search(str(_space(tmp_path, recipe, budget)),
                       SearchOptions(storage=str(tmp_path / "s.journal"), progress=False))  # fmt: skip
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert len(trials) == 8
    infeasible = [t for t in trials if t.user_attrs.get("cost", {}).get("params", 0) > budget]
    assert infeasible, "the budget should exclude the widest FFN"
    # over budget: never materialized nor trained, no intermediate values
    assert all(not t.intermediate_values and t.state == optuna.trial.TrialState.COMPLETE for t in infeasible)
    assert trained and max(trained) <= budget
    feasible = [t for t in trials if t not in infeasible]
    # each feasible architecture is trained once; a repeat is answered from its earlier trial
    evaluated = [t for t in feasible if "repeat_of" not in t.user_attrs]
    assert len(trained) == len(evaluated) == len({t.user_attrs["arch_key"] for t in feasible})
    # every trained candidate reported its held-out loss step by step; the median pruner stopped some
    assert all(t.intermediate_values for t in evaluated)
    assert optuna.trial.TrialState.PRUNED in states
    done = [t for t in evaluated if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.values[0] == t.intermediate_values[4] for t in done)


def test_distill_options_are_validated() -> None:
    bad = SPACE.replace("steps: 4", "steps: 0").replace("RECIPE", "r.yaml").replace("BUDGET", "1000")
    with pytest.raises(ConfigError, match=r"study\.evaluator\.steps: 0 must be at least 1"):
        study_from_dict(loads_space(bad, "space.yaml").study, "space.yaml")
    multi = SPACE.replace("[{metric: distill_loss}]", "[{metric: distill_loss}, {metric: params}]")
    with pytest.raises(ConfigError, match=r"study\.pruner: Optuna prunes single-objective studies only"):
        study_from_dict(
            loads_space(multi.replace("RECIPE", "r.yaml").replace("BUDGET", "1000"), "space.yaml").study, "space.yaml"
        )
