"""``train``: distil a student architecture with a recipe into a run folder, resumable after any crash.

Run folder layout::

    OUT/run.json             type, format, architecture name and fingerprints (what this run is)
    OUT/arch.yaml            the student architecture;   OUT/recipe.yaml  the fully resolved recipe
    OUT/metrics.jsonl        one JSON object per logged step (loss, its parts, lr, throughput; task, distill for a
                             task loss with distillation; cer, wer of the batch's greedy paths for ctc)
    OUT/checkpoints/step-N/  engine state (model, optimizer, scheduler) + trainer.pt (step, data position,
                             number of processes, each process's python/numpy/torch(/CUDA) RNG states);
                             written to a temporary folder, then renamed
    OUT/student.pt           the final student state dict (compression buffers included)

Running the same command again continues from the newest complete checkpoint: metrics after it are
dropped and recomputed, so the loss curve is the uninterrupted one.

Several processes (a launcher's environment, see :mod:`trainers.distributed`) train one model data-parallel:
each step, process ``r`` of ``W`` takes batch ``r`` of the step's ``W`` consecutive batches of the one
stream, and the engine averages the gradients. Rank 0 alone writes the run folder (run.json, metrics with
the loss averaged over the processes, the checkpoints' shared files, student.pt); the others wait at
barriers around it. A run resumes only with the number of processes that wrote its checkpoint.
"""

from __future__ import annotations

import contextlib
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
from trainers import distributed
from trainers.data import Batch, BatchStream
from trainers.distill import Distiller
from trainers.distributed import World
from trainers.engine import Engine, build_engine, check_engine
from trainers.losses import LossResult
from trainers.progress import Progress
from trainers.recipe import Recipe, dump_recipe
from trainers.task import TaskDistillLoss, TaskLoss, TaskModel, read_task_labels
from trainers.teacher import load_teacher

__all__ = ["RunConflictError", "TrainResult", "train", "latest_checkpoint", "build_loss", "build_stream", "build_student",
           "output_width", "RUN_FORMAT", "STATE_FORMAT"]

RUN_FORMAT = 1
STATE_FORMAT = 2  # trainer.pt; 1 (no "format" key): one process's RNG states at the top level
_CKPT = "step-"

LossFn = Callable[[torch.nn.Module, Batch, int], LossResult]


class RunConflictError(PlannerError):
    """The output folder holds a different run."""

    exit_code = 3


@dataclass
class TrainResult:
    """What :func:`train` did: the last step, where it started, the logged metrics of this call (every
    process holds the rows rank 0 wrote), and this process's place in the job."""

    step: int
    resumed_from: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1


def _arch_fingerprint(graph: EncoderGraph) -> str:
    return hashlib.sha256(dumps(graph).encode()).hexdigest()[:16]


def _claim(out: Path, graph: EncoderGraph, recipe: Recipe, *, rank: int = 0) -> None:
    """Writes run.json, or checks that the one there describes this run (rank > 0: only checks; rank 0
    wrote it first)."""
    info = {"type": "planner-train-run", "format": RUN_FORMAT, "arch": graph.name,
            "arch_fingerprint": _arch_fingerprint(graph), "recipe_fingerprint": recipe.fingerprint()}  # fmt: skip
    run_file = out / "run.json"
    if rank > 0 and not run_file.exists():
        raise RunConflictError(f"{run_file}: written by rank 0 but not found by rank {rank}; the run folder must be "
                               "on a file system that every process of the job sees")  # fmt: skip
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


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random states (python, numpy, torch's CPU generator, its CUDA device's)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}  # fmt: skip


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_rank(seed: int, rank: int) -> None:
    """Gives a process other than rank 0 random streams of its own (dropout differs between processes, as it
    differs between batches); rank 0 keeps the streams one process would have."""
    derived = random.Random(f"{seed}:rank:{rank}").getrandbits(63)
    random.seed(derived)
    np.random.seed(derived % 2**32)
    torch.manual_seed(derived)


def _save(out: Path, engine: Engine, step: int, stream: BatchStream, keep: int) -> None:
    """Writes ``checkpoints/step-N`` (every process calls it: DeepSpeed writes its partitions from each)."""
    world = engine.world
    ckpts = out / "checkpoints"
    tmp = ckpts / f".tmp-{step}"  # the same name in every process
    if world.is_main:
        ckpts.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    distributed.barrier(world)
    engine.save(tmp)
    rng = distributed.all_gather_objects(world, _rng_state(engine.device))
    if world.is_main:
        torch.save({"type": "planner-train-state", "format": STATE_FORMAT, "step": step,
                    "position": list(stream.position), "world_size": world.size, "rng": rng},
                   tmp / "trainer.pt")  # fmt: skip
    distributed.barrier(world)  # every process's part is written: only now may the folder become complete
    if world.is_main:
        final = ckpts / f"{_CKPT}{step:08d}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        done = sorted((p for p in ckpts.glob(f"{_CKPT}*") if p.is_dir()), key=lambda p: p.name)
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def _read_state(out: Path, ckpt: Path, world: World) -> dict[str, Any]:
    """A checkpoint's trainer.pt, with its RNG states as a list by rank.

    Raises:
        RunConflictError: the checkpoint was written by a job of another number of processes.
    """
    state = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=False)
    if "format" not in state:  # format 1: one process
        state["rng"] = [{"python": state["python_rng"], "numpy": state["numpy_rng"], "torch": state["torch_rng"]}]
    saved = int(state.get("world_size", 1))
    if saved != world.size:
        raise RunConflictError(
            f"{out}: {ckpt.name} was written by a job of {saved} process(es) and this job has {world.size}; a run "
            f"resumes only with the number of processes it was started with (its data order, each process's random "
            f"states and DeepSpeed's ZeRO partitions depend on it): run it again with {saved} process(es) (torchrun "
            f"--nproc-per-node {saved}, deepspeed --num_gpus {saved}, or no launcher for 1), or train into a new --out")  # fmt: skip
    return state


def _truncate_metrics(path: Path, step: int) -> None:
    """Keeps the rows up to ``step`` (a row torn by a crash mid-write, the last line, is dropped)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = []
    for n, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break
            raise RunConflictError(f"{path}: line {n} is not JSON; not overwriting the run's metrics: repair or remove "
                                   "the line, or choose another --out") from None  # fmt: skip
        if row["step"] <= step:
            keep.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in keep))


def _metrics_row(world: World, step: int, res: LossResult, lr: float, batch_size: int, window_n: int,
                 seconds: float) -> dict[str, Any]:  # fmt: skip
    """A metrics row: losses averaged over the processes (each process's batch counts once, as its loss is
    the mean over its batch), accuracy and error rates pooled over all of the step's examples, examples/s
    over all processes. Every process calls it on a logged step (one all-reduce)."""
    layers = list(res.per_layer)  # the loss's order, the same in every process
    means = [float(res.total.detach()), res.masked, res.unmasked, *(res.per_layer[k] for k in layers)]
    if res.task is not None:
        means += [res.task, res.distill]
    counts = [batch_size, window_n]
    if res.accuracy is not None:
        counts.append(round(res.accuracy * batch_size))
    rates = res.decoding.error_rates() if res.decoding is not None else None
    if rates is not None:
        counts += [rates.char_errors, rates.chars, rates.word_errors, rates.words]
    if world.size > 1:
        summed = distributed.sum_floats(world, means + [float(c) for c in counts])
        means = [v / world.size for v in summed[: len(means)]]
        counts = [round(v) for v in summed[len(means) :]]
    row = {"step": step, "loss": means[0], "masked": means[1], "unmasked": means[2],
           "layers": {str(k): v for k, v in zip(layers, means[3:])}, "lr": lr,
           "examples_per_s": counts[1] / max(seconds, 1e-9), "batch": counts[0]}  # fmt: skip
    if res.accuracy is not None:
        row["accuracy"] = res.accuracy if world.size == 1 else counts[2] / counts[0]
    if res.task is not None:
        row["task"], row["distill"] = means[-2], means[-1]
    if rates is not None:
        c_err, chars, w_err, words = counts[-4:]
        row["cer"], row["wer"] = c_err / chars, w_err / words
    return row


def _check_replicas(world: World, module: torch.nn.Module) -> None:
    """Raises if the processes ended with different parameters (data parallelism keeps them equal bit for
    bit; under ZeRO-3 each process holds only its partition, an empty tensor here, so this compares nothing)."""
    if world.size == 1:
        return
    named = list(module.named_parameters())
    mine = [hashlib.sha256(p.detach().reshape(-1).cpu().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]
            for _, p in named]  # fmt: skip
    digests = distributed.all_gather_objects(world, mine)
    differ = [name for i, (name, _) in enumerate(named) if len({d[i] for d in digests}) > 1]
    if differ:
        raise RuntimeError(f"the {world.size} processes ended with different values of {len(differ)} parameter(s) "
                           f"({', '.join(differ[:5])}); the checkpoints are kept, student.pt is not written")  # fmt: skip


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


def build_stream(graph: EncoderGraph, recipe: Recipe) -> BatchStream:
    """The recipe's training batches (the same stream in every process of a job)."""
    data = recipe.data
    return BatchStream([recipe.resolve(m) for m in data.train], sample_rate=data.sample_rate,
                       batch_seconds=data.batch_seconds, max_seconds=data.max_seconds, min_seconds=data.min_seconds,
                       seed=recipe.seed, spec=graph.spec.input)  # fmt: skip


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
        RunConflictError: ``out`` holds another run, or a checkpoint of a job with another number of
            processes.
        ConfigError: the recipe, the data or the teacher do not fit.
        LaunchError: the launcher's environment does not describe a job.
        PeerError: another process of the job stopped with one of these errors.

    Example:
        >>> import planner
        >>> from trainers import load_recipe, train
        >>> train(planner.load("studies/recycle-and-distill/armhubert-s.yaml"),
        ...       load_recipe("recipes/distill.yaml"), "runs/a1")  # doctest: +SKIP
    """
    if not isinstance(graph, EncoderGraph):
        graph = planner.load(graph)
    out = Path(out)
    world = distributed.world_from_env()
    check_engine(recipe)  # before claiming the folder: a recipe fixed after this error may use it
    world = distributed.connect(world, recipe.engine.kind)
    # Rank 0 claims the folder, then the others check its claim; a refusal in any process stops them all.
    distributed.agree(world, lambda: _claim(out, graph, recipe) if world.is_main else None)
    distributed.agree(world, lambda: _clean_stale(out) if world.is_main else _claim(out, graph, recipe, rank=world.rank))

    random.seed(recipe.seed)
    np.random.seed(recipe.seed % 2**32)
    torch.manual_seed(recipe.seed)

    def build() -> tuple[torch.nn.Module, Any, torch.nn.Module, BatchStream]:
        student = build_student(graph, recipe)
        loss_obj, model = build_loss(graph, recipe, student)
        return student, loss_obj, model, build_stream(graph, recipe)

    student, loss_obj, model, stream = distributed.agree(world, build)  # every process builds the same
    engine = build_engine(model, recipe, world)
    _place_loss(loss_obj, engine.device, world)
    if world.rank > 0:
        _seed_rank(recipe.seed, world.rank)
    schedule = getattr(student, "mask_schedule", None)

    step = 0
    ckpt = distributed.broadcast_object(world, latest_checkpoint(out))  # rank 0's view of the folder
    if ckpt is not None:
        state = distributed.agree(world, lambda: _read_state(out, ckpt, world))
        engine.load(ckpt)
        stream.seek(state["position"])
        _set_rng_state(state["rng"][world.rank], engine.device)
        step = int(state["step"])
    metrics_path = out / "metrics.jsonl"
    distributed.agree(world, lambda: _truncate_metrics(metrics_path, step) if world.is_main else None)
    result = TrainResult(step, step, rank=world.rank, world_size=world.size)

    with contextlib.ExitStack() as stack:
        metrics_file = stack.enter_context(metrics_path.open("a", encoding="utf-8")) if world.is_main else None
        resumed = f"resuming {out} from step {step}" if step else None
        progress = Progress(log if world.is_main else None, recipe.steps, step, note=resumed)
        stack.callback(progress.close)
        window_t, window_n = time.perf_counter(), 0
        while step < recipe.steps:
            batch = stream.take(world.rank, world.size).to(engine.device)
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
            row = None
            if step % recipe.logging.every == 0 or step == recipe.steps:
                now = time.perf_counter()
                row = _metrics_row(world, step, res, engine.lr, batch.size, window_n, now - window_t)
                window_t, window_n = now, 0
                result.metrics.append(row)
                if metrics_file is not None:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
            progress.step(row)
            if step % recipe.checkpoint.every == 0 or step == recipe.steps:
                _save(out, engine, step, stream, recipe.checkpoint.keep)
            if on_step is not None:
                on_step(step, {"loss": float(res.total.detach())})
    _check_replicas(world, engine.module)
    with engine.full_weights():  # fp32 master weights in the plain model's shapes (DeepSpeed: gathered)
        if world.is_main:
            torch.save(student.state_dict(), out / ".student.pt.tmp")
            if isinstance(model, TaskModel):
                torch.save(model.classifier.state_dict(), out / ".classifier.pt.tmp")
    if world.is_main:
        os.replace(out / ".student.pt.tmp", out / "student.pt")
        if isinstance(model, TaskModel):
            os.replace(out / ".classifier.pt.tmp", out / "classifier.pt")
    distributed.barrier(world)  # the run folder is complete when train returns, in every process
    result.step = step
    return result


def _clean_stale(out: Path) -> None:
    """Removes checkpoint folders a crash left half written (never complete: they were not renamed)."""
    for tmp in (out / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _place_loss(loss_obj: Any, device: torch.device, world: World) -> None:
    """Moves the loss's frozen teacher to the engine's device and tells its masks which batch of the step
    this process draws for."""
    distiller = loss_obj if isinstance(loss_obj, Distiller) else getattr(loss_obj, "distiller", None)
    if distiller is not None:
        distiller.teacher.to(device)
        distiller.shard = (world.rank, world.size)
