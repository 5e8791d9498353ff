"""``train_supernet``: trains a space's supernet into a run folder, as ``planner train`` trains a student.

The run machinery is ``planner train``'s (:func:`trainers.run.run_job`): the folder is claimed and locked,
checkpoints are written and resumed exactly (the shared tensors, the optimizer, the RNG and the batch
stream's position; the candidates of a step are drawn from ``(seed, step)``), held-out losses are logged
and the best kept in ``best/``, on the recipe's engine (torch or DeepSpeed, one process or many). What
differs is the student, a :class:`~trainers.supernet.Supernet`, and the loss, a
:class:`~trainers.supernet.SandwichLoss`. The folder holds, besides the run's own files::

    space.yaml                the space (as given)
    supernet.safetensors      the shared tensors by slot key (at the end; best/ holds the best held-out one)
    supernet.json             the slot table (shapes, centre-cropped dims), the cover's fingerprint, the step
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import torch
from safetensors.torch import load_file, save_file

from planner.errors import CheckpointError, ConfigError, FieldError, SupernetError
from planner.files import write_text_atomic, writing
from trainers.recipe import Recipe, SupernetConfig, recipe_error
from trainers.run import Built, RunIdentity, TrainResult, run_job
from trainers.supernet.bank import SlotShape, Supernet
from trainers.supernet.sandwich import CandidateSampler, SandwichLoss
from trainers.teacher import load_teacher
from trainers.train import build_stream, build_valid

__all__ = ["SUPERNET_FORMAT", "load_supernet", "train_supernet", "write_supernet"]

SUPERNET_FORMAT = 1
_WEIGHTS, _INFO = "supernet.safetensors", "supernet.json"


def write_supernet(folder: Path, supernet: Supernet, info: dict[str, Any]) -> None:
    """Writes ``supernet.safetensors`` and ``supernet.json`` into ``folder`` (each atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{_WEIGHTS}.{os.getpid()}.tmp"
    with writing(tmp):
        save_file({k: t.detach().cpu().contiguous() for k, t in supernet.shared_state().items()}, str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / _WEIGHTS)
    slots = {k: {"shape": list(s.shape), "kernel_dims": list(s.kernel_dims)} for k, s in supernet.slots.items()}
    write_text_atomic(folder / _INFO, json.dumps({"format": SUPERNET_FORMAT, **info, "slots": slots}, indent=1) + "\n")


def load_supernet(folder: str | os.PathLike[str]) -> tuple[Supernet, dict[str, Any]]:
    """The supernet a run folder (or its ``best/``) holds, and its ``supernet.json``.

    Raises:
        SupernetError: the folder holds no finished supernet (names the file and the fix).
        CheckpointError: the weights cannot be read as data.
    """
    folder = Path(folder)
    info_path, weights = folder / _INFO, folder / _WEIGHTS
    if not info_path.is_file() or not weights.is_file():
        raise SupernetError(f"{folder}: no {_INFO} and {_WEIGHTS}: not a finished supernet run (train one with "
                            "planner supernet train SPACE --recipe R --out DIR; an unfinished run resumes with the "
                            "same command)")  # fmt: skip
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if (
            not isinstance(info, dict)
            or info.get("format") != SUPERNET_FORMAT
            or not isinstance(info.get("slots"), dict)
        ):
            raise ValueError(f"not a format-{SUPERNET_FORMAT} supernet description")
        slots = {k: SlotShape(tuple(int(n) for n in v["shape"]), tuple(int(d) for d in v["kernel_dims"]))
                 for k, v in info["slots"].items()}  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SupernetError(f"{info_path}: unreadable ({err})") from None
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from None
    net = Supernet(slots)
    try:
        net.load_shared_state(state)
    except SupernetError as err:
        raise SupernetError(f"{weights}: {err}") from None
    return net, info


def _fingerprint(sampler: CandidateSampler, cfg: SupernetConfig) -> str:
    h = hashlib.sha256(str(sampler.fingerprint()).encode())  # type: ignore[attr-defined]
    h.update(json.dumps([cfg.random, cfg.cover] + ([cfg.partition] if cfg.partition is not None else [])).encode())
    return h.hexdigest()[:16]


def train_supernet(sampler: CandidateSampler, recipe: Recipe, out: str | os.PathLike[str], *, space_text: str,
                   name: str, log: TextIO | None = sys.stderr, on_step: Any = None) -> TrainResult:  # fmt: skip
    """Trains the supernet of ``sampler``'s space with ``recipe`` (its ``supernet`` section) into ``out``.

    Args:
        sampler: the space's candidates (``planner.search.SpaceSampler``: its cover shapes the tensors).
        recipe: a distillation recipe; ``supernet:`` sets the sandwich (default :class:`SupernetConfig`).
        out: the run folder (resumed when it holds this run).
        space_text: the space file's text (written as ``space.yaml``).
        name: the space's name (``run.json``'s ``arch``).

    Raises:
        ConfigError: the recipe does not fit (not distillation; its teacher or data).
        RunConflictError, CheckpointError, DivergedError, WriteError: as :func:`trainers.train`.
    """
    if recipe.loss.kind != "layer_to_layer":
        raise ConfigError([FieldError("loss.kind", f"a supernet is trained by distillation (layer_to_layer), not "
                                                   f"{recipe.loss.kind}")], recipe.source)  # fmt: skip
    cfg = recipe.supernet or SupernetConfig()
    if getattr(sampler, "partition", None) != cfg.partition:
        raise recipe_error(recipe, "supernet.partition", f"the space's sampler is partitioned by "
                           f"{getattr(sampler, 'partition', None)!r}, the recipe says {cfg.partition!r}: build the "
                           "sampler with the recipe's partition (SpaceSampler(..., partition=...))")  # fmt: skip
    identity = RunIdentity(kind="planner-supernet-run", name=name, fingerprint=_fingerprint(sampler, cfg),
                           claim_files={"space.yaml": space_text}, subject="space", command="planner supernet train",
                           weights=_WEIGHTS)  # fmt: skip
    largest = sampler.largest()
    info = {"space": name, "cover_fingerprint": sampler.fingerprint(), "recipe_fingerprint": recipe.fingerprint(),  # type: ignore[attr-defined]
            "random": cfg.random, "recalibrate": cfg.recalibrate, "partition": cfg.partition,
            "steps": recipe.steps}  # fmt: skip

    def build() -> Built:
        torch.manual_seed(recipe.seed)
        supernet = Supernet.from_graphs(sampler.cover, seed=recipe.seed)  # type: ignore[attr-defined]
        loss = SandwichLoss(supernet, sampler, load_teacher(recipe, largest), recipe, random_count=cfg.random)
        return Built(student=supernet, loss=loss, model=supernet, stream=build_stream(largest, recipe),
                     valid=build_valid(largest, recipe, loss),
                     write_weights=lambda folder: write_supernet(folder, supernet, info))  # fmt: skip

    return run_job(out, identity, recipe, build, log=log, on_step=on_step)
