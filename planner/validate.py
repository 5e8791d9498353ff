"""``planner validate``: checks any file the planner reads, whatever its kind, without running anything.

The kind is told by the file's top-level keys (:func:`detect_kind`): a search space has a ``study:`` section
or a ``choice``/``range``/``ref``/``tie`` marker somewhere; otherwise each kind has keys no other kind has at
the top level (a recipe ``data``, ``loss``, ``teacher``, ``engine``...; an architecture ``width``, ``layers``,
``frontend``...; a probe task ``train``, ``test``, ``kind``...; a study file of ``planner search --study-file``
``objectives``, ``n_trials``, ``sampler``...). A file whose keys point at several kinds, or
at none, is read as the likeliest and the report says which kind it was read as, and why.

Each kind goes through the same loader its command uses, so ``validate`` reports the errors that command
would, all at once, and then what the command would find next: the files a recipe names (teacher checkpoint
and architecture, manifests, labels, ``init``), the TSVs of a probe task, and for a search space the recipe
of a ``distill`` evaluator (loaded and checked the same way). Checkpoints are not read, only found.

A named file that does not exist is a warning (:attr:`Checked.warnings`): a shipped paper recipe names the
user's checkpoint and manifests, which ``validate`` cannot supply; ``strict=True`` (``--strict``) makes each
an error, as ``planner train`` does. A name that is a folder, or a teacher without weights, is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import ConfigError, FieldError

__all__ = ["FILE_KINDS", "Checked", "check_file", "detect_kind", "file_kind"]

FILE_KINDS = ("architecture", "space", "recipe", "task", "study")

_NAMES = {"architecture": "an architecture", "space": "a search space", "recipe": "a training recipe",
          "task": "a probe task", "study": "a study file"}  # fmt: skip

# Top-level keys of each kind (the init fields of ArchSpec, Recipe, ProbeTask and StudyConfig, the last for a
# study file apart from its space, planner search --study-file; tests/hostile/test_validate.py checks that these
# equal the dataclasses', so a new field cannot be forgotten here).
ARCHITECTURE_KEYS = frozenset({"name", "input", "width", "frontend", "layers", "reuse", "post", "heads",
                               "compression", "format"})  # fmt: skip
RECIPE_KEYS = frozenset({"data", "teacher", "init", "compression", "supernet", "loss", "optimizer", "schedule", "steps",
                         "engine", "logging", "checkpoint", "seed", "format"})  # fmt: skip
TASK_KEYS = frozenset({"train", "test", "kind", "features", "alphabet", "steps", "lr", "weight_decay", "batch_size",
                       "sample_rate", "max_seconds", "seed", "format"})  # fmt: skip
STUDY_KEYS = frozenset({"name", "bops", "objectives", "budgets", "sampler", "n_trials", "timeout", "storage", "seed", "seconds",
                        "evaluator", "heartbeat", "pruner", "hardware"})  # fmt: skip
_KEYS = {"architecture": ARCHITECTURE_KEYS, "recipe": RECIPE_KEYS, "task": TASK_KEYS, "study": STUDY_KEYS}
# the keys only one kind has: what tells the kinds apart
_OWN = {
    kind: keys - frozenset().union(*(k for other, k in _KEYS.items() if other != kind)) for kind, keys in _KEYS.items()
}

# How many candidates of a space are drawn and built: enough to catch a template that never yields a valid
# architecture (the search would mark every trial infeasible) while staying a sub-second check.
SPACE_SAMPLES = 16


@dataclass(frozen=True)
class Checked:
    """A file that passed: its kind, a one-line summary, and one ``FILE: field: PATH does not exist`` line
    per file it names that is missing (empty under ``strict``: those are errors then)."""

    kind: str
    summary: str
    warnings: tuple[str, ...] = ()


def _has_marker(data: Any) -> bool:
    from planner.search._space import _is_marker

    if _is_marker(data):
        return True
    if isinstance(data, dict):
        return any(_has_marker(v) for v in data.values())
    if isinstance(data, list):
        return any(_has_marker(v) for v in data)
    return False


def detect_kind(data: Any) -> tuple[str, str | None]:
    """The kind of a parsed YAML file (one of :data:`FILE_KINDS`) and, when its keys leave room for doubt,
    a note saying which kind it was read as and why (else ``None``)."""
    if not isinstance(data, dict):
        return "architecture", None  # the architecture loader reports what a top level should be
    if "study" in data or _has_marker(data):
        return "space", None
    keys = {k for k in data if isinstance(k, str)}
    own = {kind: sorted(keys & names) for kind, names in _OWN.items()}
    ranked = sorted(own, key=lambda kind: (-len(own[kind]), FILE_KINDS.index(kind)))
    best = ranked[0]
    if not own[best]:
        # only keys several kinds share (name, format, compression, steps, seed) or none the planner knows:
        # steps or seed make it a recipe or a task, read as a recipe (its errors then name the missing data:)
        best = "recipe" if keys & {"steps", "seed"} else "architecture"
        return best, (f"read as {_NAMES[best]}: none of its keys tells its kind (an architecture has width and "
                      "layers; a recipe data and loss or teacher; a probe task train and test; a study file "
                      "objectives and n_trials)")  # fmt: skip
    others = [kind for kind in ranked[1:] if own[kind]]
    if not others:
        return best, None
    why = "; ".join(
        f"{', '.join(own[kind])} {'is' if len(own[kind]) == 1 else 'are'} {_NAMES[kind]}'s" for kind in others
    )
    return best, f"read as {_NAMES[best]} (by its keys {', '.join(own[best])}), though {why}"


def file_kind(data: Any) -> str:
    """The kind of a parsed YAML file: one of :data:`FILE_KINDS` (see :func:`detect_kind`)."""
    return detect_kind(data)[0]


def _errors(err: ConfigError, default_source: str) -> list[tuple[str, FieldError]]:
    return [(err.source or default_source, e) for e in err.errors]


class _Report:
    """Errors of one validation, each with the file it is in (a recipe a study names is another file);
    ``files``: whether the files the document names are looked for; ``strict``: a missing one is an error
    (else a warning)."""

    def __init__(self, path: str, files: bool = True, strict: bool = False) -> None:
        self.path = path
        self.files = files
        self.strict = strict
        self.errors: list[tuple[str, FieldError]] = []
        self._missing: list[tuple[str, str, str]] = []  # (file, field, message) of each warning

    @property
    def warnings(self) -> list[str]:
        """One ``FILE: field: PATH does not exist (warning ...)`` line per missing named file."""
        return [f"{src}: {where}: {message}" for src, where, message in self._missing]

    def missing(self, source: str, where: str, path: str, via: str | None = None, hint: str = "") -> None:
        """``path``, named by ``source`` at ``where``, does not exist: an error under ``strict``, else a warning."""
        message = f"{path} does not exist{hint}" + (f" ({via})" if via is not None else "")
        if self.strict:
            self.errors.append((source, FieldError(where, message)))
        else:
            self._missing.append((source, where, f"{message} (warning: planner train refuses it; "
                                                 "--strict makes this an error)"))  # fmt: skip

    def add(self, err: ConfigError, via: str | None = None) -> None:
        """Adds the errors of ``err``; ``via``: how the validated file names the file they are in."""
        found = _errors(err, self.path)
        if via is not None:
            found = [(src, FieldError(e.path, f"{e.message} ({via})")) for src, e in found]
        self.errors += found

    def raise_if_any(self, note: str | None) -> None:
        if not self.errors:
            return
        # one ConfigError holds one source: each line names its own file (a recipe a study names is another);
        # the warnings follow the errors, so that a refused file still shows every file it lacks
        lines = [FieldError(f"{src}: {e.path}" if e.path else src, e.message) for src, e in self.errors]
        lines += [FieldError(f"{src}: {where}", message) for src, where, message in self._missing]
        if note is not None:
            lines.append(FieldError(self.path, f"({note})"))
        raise ConfigError(lines)


def _check_recipe_file(path: str, report: _Report, via: str | None = None) -> Any:
    """Loads a recipe and checks the files it names; its errors go into ``report`` (None if it does not load)."""
    from trainers.recipe import load_recipe, recipe_files

    try:
        recipe = load_recipe(path)
    except ConfigError as err:
        report.add(err, via)
        return None
    if not report.files:
        return recipe
    errors = []
    for where, named in recipe_files(recipe):  # as trainers.recipe.check_recipe_files, missing files apart
        named = os.path.normpath(named) if named is not None else None
        if named is None:
            errors.append(FieldError(where, "a teacher needs its weights (a torch.save'd state dict)"))
        elif os.path.isdir(named):
            errors.append(FieldError(where, f"{named} is a folder, not a file"))
        elif not os.path.isfile(named):
            report.missing(path, where, named, via)
    if errors:
        report.add(ConfigError(errors, path), via)
    teacher = recipe.teacher
    arch = recipe.resolve(teacher.arch) if teacher is not None and teacher.arch is not None else None
    if arch is not None and os.path.isfile(arch):
        from planner.ir import load

        try:
            graph = load(arch)
        except ConfigError as err:
            report.add(err, f"the teacher.arch of {path}")
        else:
            from trainers.teacher import teacher_rate_error

            mismatch = teacher_rate_error(graph, recipe)
            if mismatch is not None:
                report.add(ConfigError([FieldError("teacher.arch", mismatch)], path), via)
    return recipe


def _check_space(path: str, data: Any, report: _Report) -> str | None:
    from planner.search import load_space, sample_space, study_from_dict

    try:
        space = load_space(path)
    except ConfigError as err:
        report.add(err)
        space = None
    study = "no study section (planner search uses the defaults)"
    if isinstance(data, dict) and "study" in data:  # checked even when the space is not: every mistake at once
        try:
            cfg = study_from_dict(data["study"], path, path="study")
        except ConfigError as err:
            report.add(err)
        else:
            study = f"study {cfg.name!r}, {len(cfg.objectives)} objective(s), evaluator {cfg.evaluator.kind}"
            _check_evaluator_files(path, cfg, report)
    if space is None:
        return None
    samples = sample_space(space, SPACE_SAMPLES, seed=0)
    valid = [s for s in samples if s.graph is not None]
    if not valid:
        first = samples[0].error or "invalid"
        report.add(ConfigError([FieldError("", f"none of {SPACE_SAMPLES} sampled candidates is a valid architecture; "
                                               f"the first fails with: {first}")], path))  # fmt: skip
        return None
    return (f"search space, {len(space.domains())} domains, {study}; "
            f"{len(valid)}/{SPACE_SAMPLES} sampled candidates build")  # fmt: skip


def _check_study(path: str, data: Any, report: _Report) -> str | None:
    """A study file apart from its space (``planner search SPACE --study-file FILE``), read as search reads it."""
    from planner.search import study_from_dict

    try:
        cfg = study_from_dict(data, path, path="")
    except ConfigError as err:
        report.add(err)
        return None
    _check_evaluator_files(path, cfg, report, where="evaluator")
    return f"study file, study {cfg.name!r}, {len(cfg.objectives)} objective(s), evaluator {cfg.evaluator.kind}"


def _check_evaluator_files(path: str, cfg: Any, report: _Report, where: str = "study.evaluator") -> None:
    """The files a study's evaluator names: the ``distill`` and ``supernet`` evaluators' recipe (read as the
    search reads it, relative to the working directory), and through it the teacher and the manifests; the
    ``supernet`` evaluator's run folder (found, not read) and probe task."""
    kind = cfg.evaluator.kind
    kwargs = cfg.evaluator.kwargs()
    recipe_path = kwargs.get("recipe") if kind in ("distill", "supernet") else None
    if recipe_path is None or not report.files:
        return
    if kind == "supernet":
        folder = kwargs.get("checkpoint")
        for name in ("supernet.json", "supernet.safetensors"):
            if folder is not None and not os.path.isfile(os.path.join(folder, name)):
                report.missing(path, f"{where}.checkpoint", os.path.join(folder, name),
                               hint=" (train it with planner supernet train SPACE --recipe RECIPE --out FOLDER)")  # fmt: skip
        task = kwargs.get("task")
        if task is not None and not os.path.isfile(task):
            report.missing(path, f"{where}.task", task, hint=" (relative paths are read from the working directory)")
    if os.path.isdir(recipe_path):
        report.add(ConfigError([FieldError(f"{where}.recipe", f"{recipe_path} is a folder, not a file (relative "
                                                              "paths are read from the working directory)")], path))  # fmt: skip
        return
    if not os.path.isfile(recipe_path):
        report.missing(
            path, f"{where}.recipe", recipe_path, hint=" (relative paths are read from the working directory)"
        )
        return
    via = f"the recipe of {path}: {where}"
    recipe = _check_recipe_file(recipe_path, report, via)
    if recipe is not None and recipe.data.valid is None:
        report.add(
            ConfigError([FieldError("data.valid", f"the {kind} evaluator needs a held-out manifest")], recipe_path), via
        )


def _check_recipe(path: str, data: Any, report: _Report) -> str | None:
    recipe = _check_recipe_file(path, report)
    if recipe is None:
        return None
    return f"training recipe, {recipe.loss.kind} loss, {recipe.steps} steps on {recipe.engine.kind}"


def _check_task(path: str, data: Any, report: _Report) -> str | None:
    from trainers.evaluate import load_task

    try:
        task, base = load_task(path)
    except ConfigError as err:
        report.add(err)
        return None
    missing = []
    for name in ("train", "test") if report.files else ():
        value = getattr(task, name)
        file = Path(os.path.normpath(Path(value) if os.path.isabs(value) else base / value))
        if file.is_dir():
            missing.append(FieldError(name, f"{file} is a folder, not a file"))
        elif not file.is_file():
            report.missing(path, name, str(file))
    if missing:
        report.add(ConfigError(missing, path))
    return f"{task.kind} probe task"


def _check_architecture(path: str, data: Any, report: _Report) -> str | None:
    from planner.ir import load

    try:
        graph = load(path)
    except ConfigError as err:
        report.add(err)
        return None
    return f"{graph.name}, {graph.param_count:,} parameters"


_CHECKS = {"architecture": _check_architecture, "space": _check_space, "recipe": _check_recipe, "task": _check_task,
           "study": _check_study}  # fmt: skip


def check_file(path: str | os.PathLike[str], files: bool = True, strict: bool = False) -> Checked:
    """Loads ``path`` with the loader of its kind and checks the files it names.

    Args:
        path: the file.
        files: look for the files the document names (``False``: its contents only, e.g. a recipe written
            for another machine).
        strict: a named file that does not exist is an error (default: a warning in the result).

    Example:
        >>> check_file("studies/hubert-base.yaml").summary
        'hubert-base, 94,370,944 parameters'

    Raises:
        ConfigError: every problem, as ``FILE: field.path: message`` (unreadable files included; missing
            named files under ``strict``), and last, where the file's keys left its kind in doubt, which kind
            it was read as.
    """
    from planner.config import read_yaml

    path = str(path)
    data = read_yaml(path)
    kind, note = detect_kind(data)
    report = _Report(path, files, strict)
    summary = _CHECKS[kind](path, data, report)
    report.raise_if_any(note)  # a check that returns no summary has reported why
    return Checked(kind, summary if note is None else f"{summary}; {note}", tuple(report.warnings))
