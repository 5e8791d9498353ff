"""``planner validate``: checks any file the planner reads, whatever its kind, without running anything.

The kind is told by the file's top-level keys (:func:`file_kind`): a search space has a ``study:`` section
or a ``choice``/``range``/``ref``/``tie`` marker somewhere; a training recipe has a ``teacher`` or an
``engine``; a probe task has ``train`` and ``test`` TSVs; anything else is an architecture. Each kind goes
through the same loader its command uses, so ``validate`` reports exactly the errors that command would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from planner.errors import ConfigError, FieldError

__all__ = ["FILE_KINDS", "Checked", "check_file", "file_kind"]

FILE_KINDS = ("architecture", "space", "recipe", "task")

# How many candidates of a space are drawn and built: enough to catch a template that never yields a valid
# architecture (the search would mark every trial infeasible) while staying a sub-second check.
SPACE_SAMPLES = 16


@dataclass(frozen=True)
class Checked:
    """A file that passed: its kind and a one-line summary."""

    kind: str
    summary: str


def _has_marker(data: Any) -> bool:
    from planner.search._space import _is_marker

    if _is_marker(data):
        return True
    if isinstance(data, dict):
        return any(_has_marker(v) for v in data.values())
    if isinstance(data, list):
        return any(_has_marker(v) for v in data)
    return False


def file_kind(data: Any) -> str:
    """The kind of a parsed YAML file: one of :data:`FILE_KINDS`."""
    if not isinstance(data, dict):
        return "architecture"  # the architecture loader reports what a top level should be
    if "study" in data or _has_marker(data):
        return "space"
    if "teacher" in data or "engine" in data:
        return "recipe"
    if "train" in data and "test" in data and "layers" not in data:
        return "task"
    return "architecture"


def _check_space(path: str) -> Checked:
    from planner.search import load_space, sample_space, study_from_dict

    space = load_space(path)
    study = "no study section (planner search uses the defaults)"
    if space.study is not None:
        cfg = study_from_dict(space.study, path, path="study")
        study = f"study {cfg.name!r}, {len(cfg.objectives)} objective(s), evaluator {cfg.evaluator.kind}"
    samples = sample_space(space, SPACE_SAMPLES, seed=0)
    valid = [s for s in samples if s.graph is not None]
    if not valid:
        first = samples[0].error or "invalid"
        raise ConfigError([FieldError("", f"none of {SPACE_SAMPLES} sampled candidates is a valid architecture; "
                                          f"the first fails with: {first}")], path)  # fmt: skip
    return Checked("space", f"search space, {len(space.domains())} domains, {study}; "
                            f"{len(valid)}/{SPACE_SAMPLES} sampled candidates build")  # fmt: skip


def _check_recipe(path: str) -> Checked:
    from trainers.recipe import load_recipe

    recipe = load_recipe(path)
    return Checked("recipe", f"training recipe, {recipe.loss.kind} loss, {recipe.steps} steps on {recipe.engine}")


def _check_task(path: str) -> Checked:
    from trainers.evaluate import load_task

    task, _ = load_task(path)
    return Checked("task", f"{task.kind} probe task")


def _check_architecture(path: str) -> Checked:
    from planner.ir import load

    graph = load(path)
    return Checked("architecture", f"{graph.name}, {graph.param_count:,} parameters")


def check_file(path: str | os.PathLike[str]) -> Checked:
    """Loads ``path`` with the loader of its kind.

    Raises:
        ConfigError: every problem, as ``FILE: field.path: message`` (unreadable files included).
    """
    from planner.ir.io import read_yaml

    path = str(path)
    kind = file_kind(read_yaml(path))
    check = {"space": _check_space, "recipe": _check_recipe, "task": _check_task}.get(kind, _check_architecture)
    return check(path)
