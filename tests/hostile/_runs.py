"""Shared pieces of the run-folder and export cases: a tiny trained run, planted pickles."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

import planner
from support import DATA, make_corpus, recipe_text, save_tiny_teacher, ta_teacher_yaml
from trainers import loads_recipe, train

STUDENT = DATA / "tiny-student.yaml"


class Planted:
    """A pickle that creates ``marker`` when it is unpickled with ``weights_only=False`` (``__reduce__`` calls
    ``open(marker, "w")``); a safe reader refuses it before that call."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path) -> Path:
    """Replaces ``path`` by a torch file that looks like a state dict and carries a :class:`Planted` object."""
    path.unlink(missing_ok=True)
    torch.save({"model": {"weight": torch.zeros(1)}, "extra": Planted(marker)}, path)
    return path


def setup_corpus(root: Path, steps: int = 2, **extra: str) -> Path:
    """A corpus, a tiny teacher and a recipe (``root/recipe.yaml``, returned): ``steps`` steps, a checkpoint
    after every step, all kept."""
    manifest = make_corpus(root)
    save_tiny_teacher(root / "teacher.pt")
    body = {"steps": str(steps), "checkpoint": "{every: 1, keep: 5}", **extra}
    recipe = root / "recipe.yaml"
    teacher = body.pop("teacher", ta_teacher_yaml(root / "teacher.pt"))
    recipe.write_text(recipe_text(teacher, manifest, **body))
    return recipe


def trained(root: Path, steps: int = 2, **extra: str) -> tuple[Path, Path]:
    """``(run folder, recipe file)`` of a finished tiny run under ``root``."""
    recipe = setup_corpus(root, steps, **extra)
    run = root / "run"
    train(planner.load(STUDENT), loads_recipe(recipe.read_text(), str(recipe), base_dir=str(root)), run, log=None)
    return run, recipe


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest
