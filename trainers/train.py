"""``train``: distil a student architecture with a recipe into a run folder, resumable after any crash.

Run folder layout::

    OUT/run.json             type, format, architecture name and fingerprints (what this run is)
    OUT/arch.yaml            the student architecture;   OUT/recipe.yaml  the fully resolved recipe
    OUT/metrics.jsonl        one JSON object per logged step (loss, its parts, lr, throughput; task, distill for a
                             task loss with distillation; cer, wer of the batch's greedy paths for ctc)
    OUT/checkpoints/step-N/  engine state (model, optimizer, scheduler) + trainer.json (step, data position,
                             number of processes, each process's python/numpy/torch(/CUDA) RNG states);
                             written to a temporary folder, fsynced, then renamed
    OUT/student.pt           the final student state dict (compression buffers included); classifier.pt the
                             ``classification`` loss's classifier; task.json what a task loss trained (kind, its
                             classes or CTC alphabet: ``planner export RUN`` packs it with the heads)
    OUT/best/                with ``data.valid``: student.pt (classifier.pt, task.json) and best.json (step,
                             valid_loss) of the logged step with the lowest held-out loss so far, replaced whole
    OUT/.lock                held (``flock``) by the process training into OUT; the kernel releases it

A train run is one job of :func:`trainers.run.run_job`, which holds the machinery every kind of run shares:
the checks before the claim, the claim and its lock, exact resume from the newest intact checkpoint, the
metrics, divergence stops, the held-out loss and ``best/``, several processes. This module says what the
job is: its identity (``planner-train-run``, the architecture's name and fingerprint, ``arch.yaml``) and
what it builds (:func:`build_student`, :func:`build_loss`, :func:`build_stream`, :func:`build_valid`).

With ``data.valid``, every logged step also computes the loss on the first ``data.valid_batches`` batches
of the held-out manifest (``valid_loss``; ``valid_accuracy`` / ``valid_cer``, ``valid_wer`` for the task
losses): the same loss as training, in eval mode (no dropout), masking distillation with fixed masks
(:meth:`~trainers.distill.Distiller.held_out`), every process on every held-out batch (so all agree without a
collective), and the random states restored afterwards, so the training streams are the ones a run
without ``data.valid`` draws.

Everything that can be checked (the recipe's engine, the teacher, the data, the student's init) is
checked before the folder is claimed, so a failed start leaves no folder behind. Training stops with a
:class:`DivergedError` when the loss, or the gradient norm where clipping computes it, is NaN or infinite;
``student.pt`` is written only from finite weights. Several processes (a launcher's environment, see
:mod:`trainers.distributed`) train one model data-parallel; a run resumes only with the number of
processes that wrote its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch

from planner.compress import CompressionError, load_checkpoint_, materialize
from planner.errors import ConfigError, DivergedError, FieldError, RunConflictError
from planner.files import write_text_atomic
from planner.ir.graph import EncoderGraph
from planner.ir.io import dumps, load
from trainers.data import Batch, BatchStream, read_labels, read_manifest
from trainers.distill import Distiller
from trainers.losses import LossResult
from trainers.recipe import Recipe
from trainers.run import RUN_FORMAT, STATE_FORMAT, Built, RunIdentity, TrainResult, latest_checkpoint, run_job
from trainers.safeio import save_torch
from trainers.task import TaskDistillLoss, TaskLoss, TaskModel, read_task_labels
from trainers.teacher import _read_state, load_teacher

__all__ = [
    "DivergedError",
    "RunConflictError",
    "TrainResult",
    "train",
    "latest_checkpoint",
    "build_loss",
    "build_stream",
    "build_student",
    "build_valid",
    "output_width",
    "task_head_info",
    "RUN_FORMAT",
    "STATE_FORMAT",
]

LossFn = Callable[[torch.nn.Module, Batch, int], LossResult]


def _arch_fingerprint(graph: EncoderGraph) -> str:
    return hashlib.sha256(dumps(graph).encode()).hexdigest()[:16]


def train_identity(graph: EncoderGraph) -> RunIdentity:
    """What a train run of ``graph`` is: ``planner-train-run``, the graph's name and fingerprint, ``arch.yaml``."""
    return RunIdentity(kind="planner-train-run", name=graph.name, fingerprint=_arch_fingerprint(graph),
                       claim_files={"arch.yaml": dumps(graph)}, subject="architecture", command="planner train",
                       weights="student.pt")  # fmt: skip


def output_width(graph: EncoderGraph) -> int:
    """Width of the encoder's final output (the last ``post`` node, else the last layer)."""
    return (graph.nodes("post") or graph.nodes("layers"))[-1].out_width


def build_student(graph: EncoderGraph, recipe: Recipe) -> torch.nn.Module:
    """The materialized student: ``recipe.init`` loaded (a float state dict goes onto the compressed
    leaves), the recipe's compression schedule set on ``model.mask_schedule``.

    Raises:
        ConfigError: ``init`` cannot be read or does not fit; a ``compression`` section for an
            architecture without one.
    """
    student = materialize(graph)
    if recipe.init is not None:
        path = recipe.resolve(recipe.init)
        state = _read_state(path, "init")
        try:
            load_checkpoint_(student, state)
        except CompressionError as err:
            raise ConfigError([FieldError("init", f"{path}: {err}")]) from None
    if recipe.compression is not None:
        if not hasattr(student, "mask_schedule"):
            raise ConfigError([FieldError("compression", f"{graph.name} has no compression section to drive")])
        student.mask_schedule.config = recipe.compression.sparsity_schedule()
    return student


def build_loss(graph: EncoderGraph, recipe: Recipe, student: torch.nn.Module) -> tuple[LossFn, torch.nn.Module]:
    """The recipe's loss and the module the engine optimises.

    ``layer_to_layer``: a :class:`~trainers.distill.Distiller` on the student. Task kinds: a
    :class:`~trainers.task.TaskLoss` on the student (a :class:`~trainers.task.TaskModel` with the trainer's
    classifier for ``classification``), wrapped in a :class:`~trainers.task.TaskDistillLoss` with the
    frozen teacher when ``loss.distill_weight`` is set. The classifier is built before the teacher, so it
    starts from the same weights with or without distillation.

    Returns:
        ``(loss(module, batch, step) -> LossResult, module)``.
    """
    if recipe.loss.kind == "layer_to_layer":
        return Distiller(graph, load_teacher(recipe, graph), recipe), student
    task = TaskLoss(graph, recipe, read_task_labels(recipe))
    classifier = task.make_classifier(output_width(graph))
    model = TaskModel(student, classifier) if classifier is not None else student
    if recipe.loss.distill_weight is None:
        return task, model
    distiller = Distiller(graph, load_teacher(recipe, graph), recipe)
    return TaskDistillLoss(task, distiller, recipe.loss.distill_weight), model


def build_stream(graph: EncoderGraph, recipe: Recipe) -> BatchStream:
    """The recipe's training batches (the same stream in every process of a job)."""
    data = recipe.data
    return BatchStream([recipe.resolve(m) for m in data.train], sample_rate=data.sample_rate,
                       batch_seconds=data.batch_seconds, max_seconds=data.max_seconds, min_seconds=data.min_seconds,
                       seed=recipe.seed, spec=graph.spec.input)  # fmt: skip


def build_valid(graph: EncoderGraph, recipe: Recipe, loss_obj: Any = None) -> list[Batch] | None:
    """The held-out batches of ``data.valid`` (None without it): the first ``data.valid_batches`` batches of
    the manifest's first epoch, read once.

    Raises:
        ConfigError: the manifest cannot be read, holds no utterance of ``data.min_seconds``, or (a task loss,
            ``loss_obj``) holds an utterance ``data.labels`` has no label for.
    """
    data = recipe.data
    if data.valid is None:
        return None
    from trainers.data import DataError

    path = recipe.resolve(data.valid)
    try:
        stream = BatchStream([path], sample_rate=data.sample_rate, batch_seconds=data.batch_seconds,
                             max_seconds=data.max_seconds, min_seconds=data.min_seconds, seed=recipe.seed,
                             spec=graph.spec.input)  # fmt: skip
        count = min(data.valid_batches, len(stream.epoch_batches(0)))
        task = loss_obj if isinstance(loss_obj, TaskLoss) else getattr(loss_obj, "task", None)
        if task is not None:
            if data.valid_labels is not None:
                _add_valid_labels(task, recipe, read_manifest(path).root)
            missing = [u.path for u in stream.utterances if os.path.normpath(u.path) not in task.labels]
            if missing:
                where = "data.valid_labels" if data.valid_labels is not None else "data.labels"
                raise ConfigError([FieldError("data.valid", f"{path}: {len(missing)} utterance(s) have no label in "
                                                            f"{where}, e.g. {missing[0]}; label them in "
                                                            "data.valid_labels (path<TAB>label, paths relative to the "
                                                            "valid manifest's root folder)")], recipe.source)  # fmt: skip
        return [next(stream) for _ in range(count)]
    except DataError as err:
        raise ConfigError([FieldError("data.valid", str(err))], recipe.source) from None


def _add_valid_labels(task: TaskLoss, recipe: Recipe, root: str) -> None:
    """Adds ``data.valid_labels`` (relative to the valid manifest's ``root``) to the task loss's labels.

    Raises:
        ConfigError: the file cannot be read, a label is not a training class or does not encode in the CTC
            alphabet, or a clip is labelled otherwise in ``data.labels``.
    """
    from trainers.ctc import encode

    path = recipe.resolve(recipe.data.valid_labels)
    try:
        labels = read_labels(path, root)
    except OSError as err:
        raise ConfigError(
            [FieldError("data.valid_labels", f"{path}: cannot read ({err.strerror})")], recipe.source
        ) from None
    errors, targets = [], {}
    for clip, label in labels.items():
        key = os.path.normpath(clip)
        if task.labels.get(key, label) != label:
            errors.append(f"{clip} is labelled {task.labels[key]!r} in data.labels and {label!r} here")
        elif task.kind == "ctc":
            try:
                targets[key] = encode(label, task.alphabet)
            except ValueError as err:
                errors.append(f"{clip}: {err} (loss.alphabet)")
        elif label not in task.index:
            errors.append(f"{clip}: {label!r} is not a training class ({', '.join(task.classes)})")
    if errors:
        raise ConfigError([FieldError("data.valid_labels", f"{path}: {e}") for e in errors[:20]], recipe.source)
    task.labels.update({os.path.normpath(k): v for k, v in labels.items()})
    if task.kind == "ctc":
        task.targets.update(targets)


def task_head_info(loss_obj: Any) -> dict[str, Any] | None:
    """What a task loss trained, as ``task.json`` records it: ``{"kind": "classification", "classes": [...]}``
    or ``{"kind": "ctc", "alphabet": ...}``; None for distillation alone."""
    task = loss_obj if isinstance(loss_obj, TaskLoss) else getattr(loss_obj, "task", None)
    if task is None:
        return None
    head = {"type": "planner-task-head", "format": 1, "kind": task.kind}
    return head | ({"classes": list(task.classes)} if task.kind == "classification" else {"alphabet": task.alphabet})


def _write_weights(folder: Path, student: torch.nn.Module, model: torch.nn.Module, task: dict[str, Any] | None) -> None:
    """student.pt, and for a task loss classifier.pt (classification) and task.json, into ``folder``."""
    save_torch(student.state_dict(), folder / "student.pt")
    if isinstance(model, TaskModel):
        save_torch(model.classifier.state_dict(), folder / "classifier.pt")
    if task is not None:
        write_text_atomic(folder / "task.json", json.dumps(task, indent=1) + "\n")


def train(
    graph: EncoderGraph | str | os.PathLike[str],
    recipe: Recipe,
    out: str | os.PathLike[str],
    *,
    log: TextIO | None = sys.stderr,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Distils ``graph`` (the student) with ``recipe`` into the run folder ``out``; resumes if it holds this run.

    In a process a launcher started (``WORLD_SIZE`` > 1, see :mod:`trainers.distributed`), this is one
    process of a data-parallel job: call it in every process with the same arguments.

    Args:
        graph: the student architecture (or its file).
        recipe: a loaded :class:`~trainers.recipe.Recipe`.
        out: the run folder (one folder that every process of a job sees).
        log: where progress lines go (None: silent; in a job, rank 0's only).
        on_step: called after every step with ``(step, metrics)`` (``metrics["loss"]``: this process's loss).

    Raises:
        RunConflictError: ``out`` holds another run or other files, another process is training into it, or
            a checkpoint of a job with another number of processes.
        ConfigError: the recipe, the data or the teacher do not fit (named in the recipe file).
        CheckpointError: no checkpoint of the run can be read as data.
        DivergedError: the loss or the gradient norm became NaN or infinite.
        WriteError: ``out`` is a file, or the disk is full.
        LaunchError: the launcher's environment does not describe a job.
        PeerError: another process of the job stopped with one of these errors.

    Example:
        >>> import planner
        >>> from trainers import load_recipe, train
        >>> train(planner.load("studies/recycle-and-distill/armhubert-s.yaml"),
        ...       load_recipe("recipes/distill.yaml"), "runs/a1")  # doctest: +SKIP
    """
    if not isinstance(graph, EncoderGraph):
        graph = load(graph)

    def build() -> Built:
        student = build_student(graph, recipe)
        loss_obj, model = build_loss(graph, recipe, student)
        task = task_head_info(loss_obj)
        return Built(student, loss_obj, model, build_stream(graph, recipe), build_valid(graph, recipe, loss_obj),
                     write_weights=lambda folder: _write_weights(folder, student, model, task))  # fmt: skip

    return run_job(out, train_identity(graph), recipe, build, log=log, on_step=on_step)
