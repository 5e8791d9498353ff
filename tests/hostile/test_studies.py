"""Hostile and careless ``study:`` sections: each is refused with the file and the field, before any trial.

Every case runs ``planner search SPACE --storage S`` on a space whose study section carries one mistake (or
several, reported at once) and asserts the refusal, and that the study storage was neither created nor
changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.support import STUDY_SPACE, refused, snapshot

# (the study lines replaced, the replacement, the field paths the message must name)
CASES = [
    ("sampler: {kind: random}", "sampler: {kind: tpe, population_size: 50}", ["study.sampler.population_size", "tpe"]),
    ("sampler: {kind: random}", "sampler: {kind: nsga2, n_startup_trials: 5}", ["study.sampler.n_startup_trials"]),
    ("sampler: {kind: random}", "sampler: {kind: cmaes}", ["study.sampler.kind", "nsga2"]),
    ("sampler: {kind: random}", "sampler: {kind: random, multivariate: true}", ["study.sampler.multivariate"]),
    ("seed: 0", "pruner: {kind: median, min_resource: 2}\n  seed: 0", ["study.pruner.min_resource", "median"]),
    ("seed: 0", "pruner: {kind: hyperband, n_warmup_steps: 3}\n  seed: 0", ["study.pruner.n_warmup_steps"]),
    ("evaluator: capacity", "evaluator: {kind: capacity, batch: 4}", ["study.evaluator.batch", "capacity"]),
    ("evaluator: capacity", "evaluator: {kind: naswot, recipe: r.yaml}", ["study.evaluator.recipe", "naswot"]),
    ("evaluator: capacity", "evaluator: {kind: naswot, batch: 1}", ["study.evaluator.batch"]),
    ("evaluator: capacity", "evaluator: {kind: nope}", ["study.evaluator.kind", "capacity"]),
    ("seed: 0", "seed: -1", ["study.seed"]),
    ("seed: 0", "seed: 4294967296", ["study.seed"]),
    ("n_trials: 2", "n_trials: 0", ["study.n_trials"]),
    ("n_trials: 2", "n_trials: -5", ["study.n_trials"]),
    ("n_trials: 2", "n_trials: 100000000000", ["study.n_trials"]),
    ("seed: 0", "seed: 0\n  seconds: .nan", ["study.seconds"]),
    ("seed: 0", "seed: 0\n  timeout: .inf", ["study.timeout"]),
    ("seed: 0", "seed: 0\n  budgets: {params: -1}", ["study.budgets.params"]),
    ("seed: 0", "seed: 0\n  heartbeat: {interval: 5, grace: 5}", ["study.heartbeat.grace"]),
    ("seed: 0", "seed: 0\n  storage: ''", ["study.storage"]),
]


@pytest.mark.parametrize("old, new, names", CASES)
def test_study_mistake_is_refused(cli, tmp_path: Path, old: str, new: str, names: list[str]) -> None:
    space = tmp_path / "space.yaml"
    assert old in STUDY_SPACE
    space.write_text(STUDY_SPACE.replace(old, new))
    store = tmp_path / "s.journal"
    before = snapshot(tmp_path)
    result = cli(["search", space, "--storage", store])
    refused(result, names=[str(space), *names], code=2)
    assert snapshot(tmp_path) == before  # no storage created, nothing written
    assert not store.exists()


def test_every_mistake_of_the_study_at_once(cli, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    text = STUDY_SPACE.replace("sampler: {kind: random}", "sampler: {kind: tpe, population_size: 50}")
    text = text.replace("n_trials: 2", "n_trials: 0").replace("seed: 0", "seed: -1\n  budgets: {parms: 1}")
    space.write_text(text)
    result = cli(["search", space, "--storage", tmp_path / "s.journal"])
    refused(
        result, names=["study.sampler.population_size", "study.n_trials", "study.seed", "study.budgets.parms"], code=2
    )
    assert len([line for line in result.err.splitlines() if line.startswith(str(space))]) == 4


def test_cross_field_mistakes_at_once(cli, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    text = STUDY_SPACE.replace("objectives: [{metric: params}]", "objectives: [{metric: params}, {metric: nope}]")
    text = text.replace("seed: 0", "seed: 0\n  pruner: median")
    space.write_text(text)
    result = cli(["search", space, "--storage", tmp_path / "s.journal"])
    refused(result, names=["study.objectives[1].metric", "study.pruner"], code=2)


def test_validate_agrees_with_search(cli, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(STUDY_SPACE.replace("sampler: {kind: random}", "sampler: {kind: tpe, population_size: 50}"))
    refused(cli(["validate", space]), names=[str(space), "study.sampler.population_size"], code=2)
