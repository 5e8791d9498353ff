"""``train``: distil a student architecture with a recipe into a run folder, resumable after any crash.

Run folder layout::

    OUT/run.json             type, format, architecture name and fingerprints (what this run is)
    OUT/arch.yaml            the student architecture;   OUT/recipe.yaml  the fully resolved recipe
    OUT/metrics.jsonl        one JSON object per logged step (loss, its parts, lr, throughput; task, distill for a
                             task loss with distillation; cer, wer of the batch's greedy paths for ctc)
    OUT/checkpoints/step-N/  engine state (model, optimizer, scheduler) + trainer.pt (step, data position,
                             python/numpy/torch RNG states); written to a temporary folder, then renamed
    OUT/student.pt           the final student state dict (compression buffers included)

Running the same command again continues from the newest complete checkpoint: metrics after it are
dropped and recomputed, so the loss curve is the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import yaml

import planner
from planner.errors import PlannerError
from planner.ir.graph import EncoderGraph
from planner.ir.io import dumps, write_text_atomic
from trainers.data import Batch, BatchStream
from trainers.distill import Distiller
from trainers.engine import build_engine, check_engine
from trainers.losses import LossResult
from trainers.recipe import Recipe, dump_recipe
from trainers.task import TaskDistillLoss, TaskLoss, TaskModel, read_task_labels
from trainers.teacher import load_teacher

__all__ = ["RunConflictError", "TrainResult", "train", "latest_checkpoint", "build_loss", "build_student", "output_width",
           "RUN_FORMAT"]

RUN_FORMAT = 1
_CKPT = "step-"

LossFn = Callable[[torch.nn.Module, Batch, int], LossResult]


class RunConflictError(PlannerError):
    """The output folder holds a different run."""

    exit_code = 3


@dataclass
class TrainResult:
    """What :func:`train` did: the last step, where it started, and the logged metrics of this call."""

    step: int
    resumed_from: int
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _arch_fingerprint(graph: EncoderGraph) -> str:
    return hashlib.sha256(dumps(graph).encode()).hexdigest()[:16]


def _claim(out: Path, graph: EncoderGraph, recipe: Recipe) -> None:
    """Writes run.json, or checks that the one there describes this run."""
    info = {"type": "planner-train-run", "format": RUN_FORMAT, "arch": graph.name,
            "arch_fingerprint": _arch_fingerprint(graph), "recipe_fingerprint": recipe.fingerprint()}  # fmt: skip
    run_file = out / "run.json"
    if run_file.exists():
        try:
            old = json.loads(run_file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RunConflictError(f"{run_file}: unreadable ({err}); not overwriting, choose another --out") from None
        for key, what in (("arch_fingerprint", "architecture"), ("recipe_fingerprint", "recipe")):
            if old.get(key) != info[key]:
                raise RunConflictError(
                    f"{out}: holds a run of architecture {old.get('arch')!r} with a different {what} "
                    f"({key} {old.get(key)} here, {info[key]} requested); not overwriting it: choose another --out, "
                    "or delete the folder to start over")  # fmt: skip
        return
    if out.exists() and any(p.name != "checkpoints" for p in out.iterdir()):
        raise RunConflictError(f"{out}: not empty and not a training run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "arch.yaml", dumps(graph))
    write_text_atomic(out / "recipe.yaml", yaml.safe_dump(dump_recipe(recipe), sort_keys=False))
    write_text_atomic(run_file, json.dumps(info, indent=2) + "\n")


def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint folder of a run (temporary folders are never complete)."""
    ckpts = Path(out) / "checkpoints"
    done = [p for p in ckpts.glob(f"{_CKPT}*") if p.is_dir() and p.name[len(_CKPT):].isdigit()] if ckpts.exists() else []
    return max(done, key=lambda p: int(p.name[len(_CKPT):]), default=None)


def _save(out: Path, engine: Any, step: int, stream: BatchStream, keep: int) -> None:
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    tmp = ckpts / f".tmp-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    engine.save(tmp)
    torch.save({"step": step, "position": list(stream.position), "python_rng": random.getstate(),
                "numpy_rng": np.random.get_state(), "torch_rng": torch.get_rng_state()}, tmp / "trainer.pt")  # fmt: skip
    final = ckpts / f"{_CKPT}{step:08d}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    done = sorted((p for p in ckpts.glob(f"{_CKPT}*") if p.is_dir()), key=lambda p: p.name)
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _restore(ckpt: Path, engine: Any, stream: BatchStream) -> int:
    engine.load(ckpt)
    state = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=False)
    stream.seek(state["position"])
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in keep))


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
    from planner.compress import CompressionError, load_checkpoint_
    from planner.errors import ConfigError, FieldError
    from trainers.teacher import _read_state

    student = planner.materialize(graph)
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


def train(
    graph: EncoderGraph | str | os.PathLike[str],
    recipe: Recipe,
    out: str | os.PathLike[str],
    *,
    log: TextIO | None = sys.stderr,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Distils ``graph`` (the student) with ``recipe`` into the run folder ``out``; resumes if it holds this run.

    Args:
        graph: the student architecture (or its file).
        recipe: a loaded :class:`~trainers.recipe.Recipe`.
        out: the run folder.
        log: where progress lines go (None: silent).
        on_step: called after every step with ``(step, metrics)``.

    Raises:
        RunConflictError: ``out`` holds another run.
        ConfigError: the recipe, the data or the teacher do not fit.

    Example:
        >>> import planner
        >>> from trainers import load_recipe, train
        >>> train(planner.load("studies/recycle-and-distill/armhubert-s.yaml"),
        ...       load_recipe("recipes/distill.yaml"), "runs/a1")  # doctest: +SKIP
    """
    if not isinstance(graph, EncoderGraph):
        graph = planner.load(graph)
    out = Path(out)
    check_engine(recipe)  # before claiming the folder: a recipe fixed after this error may use it
    _claim(out, graph, recipe)
    for tmp in (out / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)

    random.seed(recipe.seed)
    np.random.seed(recipe.seed % 2**32)
    torch.manual_seed(recipe.seed)

    student = build_student(graph, recipe)
    loss_obj, model = build_loss(graph, recipe, student)
    data = recipe.data
    stream = BatchStream([recipe.resolve(m) for m in data.train], sample_rate=data.sample_rate,
                         batch_seconds=data.batch_seconds, max_seconds=data.max_seconds,
                         min_seconds=data.min_seconds, seed=recipe.seed, spec=graph.spec.input)  # fmt: skip
    engine = build_engine(model, recipe)
    schedule = getattr(student, "mask_schedule", None)

    step = 0
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        step = _restore(ckpt, engine, stream)
        if log:
            print(f"resuming {out} from step {step}", file=log, flush=True)
    metrics_path = out / "metrics.jsonl"
    _truncate_metrics(metrics_path, step)
    result = TrainResult(step, step)

    with metrics_path.open("a", encoding="utf-8") as metrics_file:
        window_t, window_n = time.perf_counter(), 0
        while step < recipe.steps:
            batch = next(stream)
            holder: dict[str, Any] = {}

            def loss_fn(module: torch.nn.Module, batch=batch, step=step, holder=holder) -> torch.Tensor:
                res = loss_obj(module, batch, step)
                holder["res"] = res
                return res.total

            engine.step(loss_fn)
            if schedule is not None:  # the mask clock: few-shot masks freeze after T_p optimizer steps
                schedule.step()
            step += 1
            window_n += batch.size
            res = holder["res"]
            if step % recipe.logging.every == 0 or step == recipe.steps:
                now = time.perf_counter()
                row = {"step": step, "loss": float(res.total.detach()), "masked": res.masked, "unmasked": res.unmasked,
                       "layers": {str(k): v for k, v in res.per_layer.items()}, "lr": engine.lr,
                       "examples_per_s": window_n / max(now - window_t, 1e-9), "batch": batch.size}  # fmt: skip
                if res.accuracy is not None:
                    row["accuracy"] = res.accuracy
                if res.task is not None:
                    row["task"], row["distill"] = res.task, res.distill
                if res.decoding is not None:
                    rates = res.decoding.error_rates()
                    row["cer"], row["wer"] = rates.cer, rates.wer
                window_t, window_n = now, 0
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                result.metrics.append(row)
                if log:
                    print(f"step {step}/{recipe.steps}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  "
                          f"{row['examples_per_s']:.1f} examples/s", file=log, flush=True)  # fmt: skip
            if step % recipe.checkpoint.every == 0 or step == recipe.steps:
                _save(out, engine, step, stream, recipe.checkpoint.keep)
            if on_step is not None:
                on_step(step, {"loss": float(res.total.detach())})
    with engine.full_weights():  # fp32 master weights in the plain model's shapes (DeepSpeed: gathered)
        torch.save(student.state_dict(), out / ".student.pt.tmp")
        if isinstance(model, TaskModel):
            torch.save(model.classifier.state_dict(), out / ".classifier.pt.tmp")
    os.replace(out / ".student.pt.tmp", out / "student.pt")
    if isinstance(model, TaskModel):
        os.replace(out / ".classifier.pt.tmp", out / "classifier.pt")
    result.step = step
    return result
