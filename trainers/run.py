"""The run machinery every kind of training run shares: ``run_job`` trains what a job builds into a run folder.

A job is three things: a :class:`RunIdentity` (what ``run.json`` records and what a resume must match), a
:class:`~trainers.recipe.Recipe` (steps, optimizer, schedule, engine, logging, checkpoints, seed), and a
``build`` function that makes, in every process, a :class:`Built`: the modules, the loss, the batch stream
and the held-out batches. :func:`~trainers.train.train` is the job of one student graph (``planner train``);
a supernet trainer is another job on the same machinery. Run folder layout (the job adds its own files)::

    OUT/run.json             type (the job's kind), format, name and fingerprints (what this run is)
    OUT/recipe.yaml          the fully resolved recipe, after the job's own claim files (``arch.yaml``)
    OUT/metrics.jsonl        one JSON object per logged step (loss, its parts, lr, throughput, held-out loss)
    OUT/checkpoints/step-N/  engine state (model, optimizer, scheduler) + trainer.json (step, data position,
                             number of processes, each process's python/numpy/torch(/CUDA) RNG states);
                             written to a temporary folder, fsynced, then renamed
    OUT/best/                with held-out batches: the job's weights and best.json (step, valid_loss) of the
                             logged step with the lowest held-out loss so far, replaced whole
    OUT/.lock                held (``flock``) by the process training into OUT; the kernel releases it

Everything that can be checked (the recipe's files and engine, the folder, whatever ``build`` checks) is
checked before the folder is claimed, so a failed start leaves no folder behind; the claim writes the
job's claim files and ``recipe.yaml``, then ``run.json``, so a kill during it leaves a folder the same
command takes up again. A folder holding another run (another kind, fingerprint or recipe) or other
files is refused, and so is a second run on a folder in use (the lock).

Running the same job again continues from the newest complete checkpoint: metrics after it are dropped and
recomputed, so the loss curve is the uninterrupted one. The best held-out loss is taken up again from the
metrics rows kept; a ``best/`` written after the checkpoint (by the part of the run that is recomputed)
stays until the resumed run reaches that step again, where the same loss replaces it with the same
weights. A checkpoint that cannot be read as plain data (damaged, or a planted pickle: nothing is ever
unpickled beyond tensors and plain types) is skipped for the previous intact one, with one line on stderr.

With held-out batches, every logged step also computes the loss on them (``valid_loss``;
``valid_accuracy`` / ``valid_cer``, ``valid_wer`` when the loss reports them): the same loss as training,
in eval mode (no dropout), inside the loss's ``held_out(i)`` (fixed masks, see :class:`JobLoss`), every
process on every held-out batch (so all agree without a collective), and the random states restored
afterwards, so the training streams are the ones a run without held-out batches draws.

Training stops with a :class:`DivergedError` when the loss, or the gradient norm where clipping computes
it, is NaN or infinite; the final weights are written only when finite.

Several processes (a launcher's environment, see :mod:`trainers.distributed`) train one model data-parallel:
each step, process ``r`` of ``W`` takes batch ``r`` of the step's ``W`` consecutive batches of the one
stream, and the engine averages the gradients. Rank 0 alone writes the run folder (run.json, metrics with
the loss averaged over the processes, the checkpoints' shared files, the final weights); the others wait at
barriers around it. A run resumes only with the number of processes that wrote its checkpoint.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
import torch
import yaml

from planner.errors import ConfigError, DivergedError, RunConflictError, WriteError
from planner.files import fsync_dir, fsync_tree, staged_dir, write_text_atomic, writing
from trainers import distributed
from trainers.data import Batch, BatchStream
from trainers.distributed import World
from trainers.engine import Engine, NonFiniteError, build_engine, check_checkpoint, check_engine
from trainers.losses import LossResult
from trainers.progress import Progress
from trainers.recipe import Recipe, check_recipe_files, dump_recipe
from trainers.safeio import NUMPY_GLOBALS, CheckpointError, read_torch

__all__ = [
    "Built",
    "DivergedError",
    "JobLoss",
    "RunConflictError",
    "RunIdentity",
    "TrainResult",
    "latest_checkpoint",
    "run_job",
    "RUN_FORMAT",
    "STATE_FORMAT",
]

RUN_FORMAT = 1
# trainer.json (JSON: RNG states as lists and base64 bytes). Formats 1-2 were trainer.pt (a torch pickle, read
# with weights_only=True and numpy's array allowlisted); 1 (no "format" key): one process's RNG states at the top.
STATE_FORMAT = 3
_STATE, _OLD_STATE = "trainer.json", "trainer.pt"
_CKPT = "step-"
_LOCK = ".lock"

_RESERVED = ("run.json", "recipe.yaml", "metrics.jsonl", "checkpoints", "best")  # the names run_job writes itself


@dataclass
class TrainResult:
    """What a run (:func:`run_job`, :func:`~trainers.train.train`) did: the last step, where it started, the
    logged metrics of this call (every process holds the rows rank 0 wrote), and this process's place in the job."""

    step: int
    resumed_from: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1


@dataclass(frozen=True)
class RunIdentity:
    """What a run is: what ``run.json`` records, what a resume must match, and how messages name it.

    Attributes:
        kind: ``run.json``'s ``"type"``: ``"planner-train-run"`` for :func:`~trainers.train.train`; a folder
            holding a run of another kind is refused.
        name: ``run.json``'s ``"arch"``: the graph's name (a space's name, for a supernet).
        fingerprint: ``run.json``'s ``"arch_fingerprint"``: a resume must find the same one.
        claim_files: the job's own files (name -> text) the claim writes before ``recipe.yaml`` and
            ``run.json`` (``arch.yaml`` for a train run); none of the names :func:`run_job` writes itself.
        subject: what ``name`` and ``fingerprint`` describe, in messages: ``"architecture"``
            ("holds a run of architecture 'x' with a different architecture").
        command: the command that trains such runs, in the message refusing a folder in use (``"planner train"``).
        weights: the final weights file, in the messages of a run that ends without it (``"student.pt"``).

    Raises:
        ValueError: a claim file is named like a file of the run folder itself (a mistake in the job's code).
    """

    kind: str
    name: str
    fingerprint: str
    claim_files: Mapping[str, str]
    subject: str
    command: str
    weights: str

    def __post_init__(self) -> None:
        clash = [n for n in self.claim_files if n in _RESERVED or n.startswith(".") or "/" in n]
        if clash:
            raise ValueError(f"claim_files: {', '.join(clash)}: the run folder's own names ({', '.join(_RESERVED)}, "
                             "hidden names) and paths are not a job's claim file names; name the job's files otherwise")  # fmt: skip


class JobLoss(Protocol):
    """The loss a job trains with: called as ``loss(module, batch, step)`` (``step`` 0-based, ``module`` the
    engine's module), returning a :class:`~trainers.losses.LossResult` whose ``total`` is minimised and whose
    parts are logged.

    Two hooks are optional (looked up by name; a loss without them has nothing to do there):

    * ``held_out(index)``, a context manager within which the loss is computed for held-out batch
      ``index`` (:meth:`~trainers.distill.Distiller.held_out`: fixed masks, the same at every evaluation);
    * ``place(device, shard)``, called once the engine is built, with its device and this process's
      ``(rank, world_size)`` (:meth:`~trainers.distill.Distiller.place`: the frozen teacher onto the device,
      the masks' shard).
    """

    def __call__(self, module: torch.nn.Module, batch: Batch, step: int) -> LossResult: ...


@dataclass
class Built:
    """What a job builds, in every process, before the folder is claimed (the same in every process).

    Attributes:
        student: the module whose weights the job trains; a ``mask_schedule`` on it (the N:M clock) is
            stepped after every optimizer step.
        loss: the :class:`JobLoss`.
        model: the module the engine optimises and checkpoints (the student, or a module around it).
        stream: the training batches (the same stream in every process; its position is checkpointed).
        valid: the held-out batches (None: no held-out loss, no ``best/``).
        write_weights: writes the job's final weights into a folder (the run folder at the end, ``best/``);
            called on rank 0 inside the engine's ``full_weights()``.
    """

    student: torch.nn.Module
    loss: JobLoss
    model: torch.nn.Module
    stream: BatchStream
    valid: list[Batch] | None
    write_weights: Callable[[Path], None]


def run_job(
    out: str | os.PathLike[str],
    identity: RunIdentity,
    recipe: Recipe,
    build: Callable[[], Built],
    *,
    log: TextIO | None = sys.stderr,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Trains what ``build`` makes with ``recipe`` into the run folder ``out``; resumes if it holds this run.

    In order: the recipe's files and engine are checked, the processes of a launched job connect, rank 0
    checks the folder (read only), every process seeds its random streams from ``recipe.seed`` and calls
    ``build`` (errors about recipe fields it raises name the recipe file), the engine is built, rank 0 claims
    the folder, and the loop resumes from the newest intact checkpoint and trains to ``recipe.steps``. A
    refusal in any process stops them all. Call it in every process of a job with the same arguments.

    Args:
        out: the run folder (one folder that every process of a job sees).
        identity: what the run is (``run.json``).
        recipe: a loaded :class:`~trainers.recipe.Recipe`.
        build: makes the job's modules, loss and data (called once in every process, after seeding).
        log: where progress lines go (None: silent; in a job, rank 0's only).
        on_step: called after every step with ``(step, metrics)`` (``metrics["loss"]``: this process's loss).

    Raises:
        RunConflictError: ``out`` holds another run or other files, another process is training into it, or
            a checkpoint of a job with another number of processes.
        ConfigError: the recipe's files or engine, or what ``build`` checks, do not fit.
        CheckpointError: no checkpoint of the run can be read as data.
        DivergedError: the loss or the gradient norm became NaN or infinite.
        WriteError: ``out`` is a file, or the disk is full.
        LaunchError: the launcher's environment does not describe a job.
        PeerError: another process of the job stopped with one of these errors.

    Example:
        >>> identity = RunIdentity("my-run", "pair", fingerprint, {"pair.yaml": text}, "pair", "my trainer",
        ...                        "pair.pt")  # doctest: +SKIP
        >>> run_job("runs/p1", identity, recipe, build_pair)  # doctest: +SKIP
    """
    out = Path(out)
    world = distributed.world_from_env()
    check_recipe_files(recipe)  # every missing file the recipe names, at once, before the folder is claimed
    check_engine(recipe)  # before claiming the folder: a recipe fixed after this error may use it
    world = distributed.connect(world, recipe.engine.kind)
    # Everything that can be checked is, before rank 0 claims the folder: the folder itself (read only), then
    # what the job builds. A refusal in any process stops them all.
    distributed.agree(world, lambda: _check_out(out, identity, recipe) if world.is_main else None)

    random.seed(recipe.seed)
    np.random.seed(recipe.seed % 2**32)
    torch.manual_seed(recipe.seed)

    def located() -> Built:
        with _located(recipe):
            return build()

    job = distributed.agree(world, located)  # every process builds the same
    engine = build_engine(job.model, recipe, world)
    with contextlib.ExitStack() as held:
        lock = distributed.agree(world, lambda: _claim(out, identity, recipe) if world.is_main else None)
        if lock is not None:
            held.callback(os.close, lock)  # the kernel releases the flock with the fd (or the process)
        distributed.agree(
            world, lambda: _clean_stale(out) if world.is_main else _check_claimed(out, identity, recipe, world.rank)
        )
        return _train_loop(out, identity, recipe, world, job, engine, log, on_step)


def _run_info(identity: RunIdentity, recipe: Recipe) -> dict[str, Any]:
    return {"type": identity.kind, "format": RUN_FORMAT, "arch": identity.name,
            "arch_fingerprint": identity.fingerprint, "recipe_fingerprint": recipe.fingerprint()}  # fmt: skip


def _claim_files(identity: RunIdentity, recipe: Recipe) -> dict[str, str]:
    """The files a claim writes before run.json, with their text, in order."""
    return {**identity.claim_files, "recipe.yaml": yaml.safe_dump(dump_recipe(recipe), sort_keys=False)}


def _check_out(out: Path, identity: RunIdentity, recipe: Recipe) -> bool:
    """Whether ``out`` holds this run already (False: it may be claimed for it); writes nothing.

    A folder without run.json may be claimed when it holds nothing but hidden files (the lock, temporary
    files), ``checkpoints`` and claim files identical to this run's (a claim a kill interrupted).

    Raises:
        RunConflictError: ``out`` holds another run, or files that are not this run's.
        WriteError: ``out`` (or a folder above it) is a file.
    """
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise WriteError(f"{p}: is a file, not a folder; --out must be a folder (new or a run of this "
                                 "command)")  # fmt: skip
            break
    info = _run_info(identity, recipe)
    run_file = out / "run.json"
    if run_file.exists():
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            raise RunConflictError(f"{run_file}: unreadable ({err}); not overwriting, choose another --out") from None
        if old.get("type") != identity.kind:
            raise RunConflictError(
                f"{out}: holds a {old.get('type')!r} run (of {old.get('arch')!r}), not a {identity.kind!r} one; not "
                "overwriting it: choose another --out, or delete the folder to start over")  # fmt: skip
        for key, what in (("arch_fingerprint", identity.subject), ("recipe_fingerprint", "recipe")):
            if old.get(key) != info[key]:
                raise RunConflictError(
                    f"{out}: holds a run of {identity.subject} {old.get('arch')!r} with a different {what} "
                    f"({key} {old.get(key)} here, {info[key]} requested); not overwriting it: choose another --out, "
                    "or delete the folder to start over")  # fmt: skip
        return True
    if out.is_dir():
        mine = _claim_files(identity, recipe)
        for p in out.iterdir():
            if p.name.startswith(".") or p.name == "checkpoints":
                continue
            if p.name in mine and p.is_file() and p.read_bytes() == mine[p.name].encode("utf-8"):
                continue  # written by an interrupted claim of this very run
            raise RunConflictError(f"{out}: not empty and not a training run ({p.name} is in it); choose another --out")
    return False


def _lock(out: Path, command: str) -> int:
    """Takes the run folder's lock (an ``flock`` the kernel releases when the process dies); returns its fd.

    Raises:
        RunConflictError: another process holds it (``command`` names what trains into it).
    """
    path = out / _LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunConflictError(f"{out}: another {command} is training into this folder (it holds {path}); wait "
                               "for it to end, or choose another --out") from None  # fmt: skip
    return fd  # the file stays empty: a refused command changes nothing in the folder


def _claim(out: Path, identity: RunIdentity, recipe: Recipe) -> int:
    """Rank 0: locks ``out`` and writes the claim files, then run.json (unless it holds this run).

    Returns the lock's fd (held until training ends). A claim that fails removes a folder it created.
    """
    with writing(out):
        try:  # atomic: of two processes starting on a new folder, one creates it (and may remove it on failure)
            out.mkdir(parents=True)
            created = True
        except FileExistsError:
            created = False
    fd = None
    try:
        fd = _lock(out, identity.command)
        if not _check_out(out, identity, recipe):  # again, under the lock: another process may have claimed it
            with writing(out):
                for name, text in _claim_files(identity, recipe).items():
                    write_text_atomic(out / name, text)
                write_text_atomic(out / "run.json", json.dumps(_run_info(identity, recipe), indent=2) + "\n")
        return fd
    except BaseException as err:
        if fd is not None:
            os.close(fd)
        if created and not isinstance(err, RunConflictError):  # not when another process took it meanwhile
            shutil.rmtree(out, ignore_errors=True)
        raise


def _check_claimed(out: Path, identity: RunIdentity, recipe: Recipe, rank: int) -> None:
    """A process other than rank 0: checks the claim rank 0 made."""
    if not (out / "run.json").exists():
        raise RunConflictError(f"{out / 'run.json'}: written by rank 0 but not found by rank {rank}; the run folder "
                               "must be on a file system that every process of the job sees")  # fmt: skip
    _check_out(out, identity, recipe)


def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint folder of a run (temporary folders are never complete)."""
    ckpts = Path(out) / "checkpoints"
    done = (
        [p for p in ckpts.glob(f"{_CKPT}*") if p.is_dir() and p.name[len(_CKPT) :].isdigit()] if ckpts.exists() else []
    )
    return max(done, key=lambda p: int(p.name[len(_CKPT) :]), default=None)


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's random states (python, numpy, torch's CPU generator, its CUDA device's)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}  # fmt: skip


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text, validate=True)), dtype=torch.uint8).clone()


def _rng_to_json(state: dict[str, Any]) -> dict[str, Any]:
    """RNG states as JSON values (every number exact: Python ints, float reprs, the generators' bytes)."""
    version, internal, gauss = state["python"]
    kind, keys, pos, has_gauss, cached = state["numpy"]
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": _b64(state["torch"]), "cuda": None if state.get("cuda") is None else _b64(state["cuda"])}  # fmt: skip


def _rng_from_json(data: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = data["python"]
    kind, keys, pos, has_gauss, cached = data["numpy"]
    return {"python": (int(version), tuple(int(v) for v in internal), None if gauss is None else float(gauss)),
            "numpy": (str(kind), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)),
            "torch": _unb64(data["torch"]), "cuda": None if data.get("cuda") is None else _unb64(data["cuda"])}  # fmt: skip


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


def _save(out: Path, engine: Engine, step: int, stream: BatchStream, keep: int, metrics: TextIO | None = None) -> None:
    """Writes ``checkpoints/step-N`` (every process calls it: DeepSpeed writes its partitions from each).

    The folder is built as ``.tmp-N``, fsynced (and the metrics up to this step with it), then renamed: a
    kill at any point leaves the previous checkpoints and, at most, a temporary folder the next start removes.
    """
    world = engine.world
    ckpts = out / "checkpoints"
    tmp = ckpts / f".tmp-{step}"  # the same name in every process
    if world.is_main:
        with writing(ckpts):
            ckpts.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
    distributed.barrier(world)
    with writing(tmp):
        engine.save(tmp)
    rng = distributed.all_gather_objects(world, _rng_state(engine.device))
    if world.is_main:
        state = {"type": "planner-train-state", "format": STATE_FORMAT, "step": step, "position": list(stream.position),
                 "world_size": world.size, "rng": [_rng_to_json(r) for r in rng]}  # fmt: skip
        write_text_atomic(tmp / _STATE, json.dumps(state) + "\n")
    distributed.barrier(world)  # every process's part is written: only now may the folder become complete
    if world.is_main:
        with writing(ckpts):
            if metrics is not None:
                metrics.flush()
                os.fsync(metrics.fileno())  # the rows up to this step are on disk before the checkpoint is
            fsync_tree(tmp)
            final = ckpts / f"{_CKPT}{step:08d}"
            displaced = ckpts / f".tmp-old-{step}"  # a checkpoint of this step already (resumed from an older one)
            if final.exists():
                shutil.rmtree(displaced, ignore_errors=True)
                os.replace(final, displaced)
            os.replace(tmp, final)
            fsync_dir(ckpts)
            shutil.rmtree(displaced, ignore_errors=True)
            done = sorted((p for p in ckpts.glob(f"{_CKPT}*") if p.is_dir()), key=lambda p: p.name)
            for old in done[:-keep]:
                shutil.rmtree(old, ignore_errors=True)


def _state_file(ckpt: Path) -> dict[str, Any]:
    """A checkpoint's trainer state as stored: trainer.json, or an older run's trainer.pt (read as data)."""
    path = ckpt / _STATE
    if path.exists():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(state, dict) or state.get("type") != "planner-train-state":
                raise ValueError("not a planner-train-state object")
            state["rng"] = [_rng_from_json(r) for r in state["rng"]]
            return state
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            raise CheckpointError(f"{path}: unreadable trainer state ({type(err).__name__}: {err})") from None
    old = ckpt / _OLD_STATE
    if not old.exists():
        raise CheckpointError(f"{ckpt}: no {_STATE} (nor an older run's {_OLD_STATE})")
    state = read_torch(old, what="a trainer state (format 1-2)", allow=(NUMPY_GLOBALS,))
    if not isinstance(state, dict):
        raise CheckpointError(f"{old}: not a trainer state (a {type(state).__name__})")
    try:
        if "format" not in state:  # format 1: one process
            state["rng"] = [{"python": state["python_rng"], "numpy": state["numpy_rng"], "torch": state["torch_rng"]}]
        if not isinstance(state["rng"], list) or not state["rng"]:
            raise KeyError("rng")
        state["step"], state["position"] = int(state["step"]), [int(v) for v in state["position"]]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{old}: not a trainer state (missing or malformed {err})") from None
    return state


def _read_state(out: Path, ckpt: Path, world: World) -> dict[str, Any]:
    """A checkpoint's trainer state, with its RNG states as a list by rank.

    Raises:
        CheckpointError: the state cannot be read as data.
        RunConflictError: the checkpoint was written by a job of another number of processes.
    """
    state = _state_file(ckpt)
    saved = int(state.get("world_size", 1))
    if saved != world.size:
        raise RunConflictError(
            f"{out}: {ckpt.name} was written by a job of {saved} process(es) and this job has {world.size}; a run "
            f"resumes only with the number of processes it was started with (its data order, each process's random "
            f"states and DeepSpeed's ZeRO partitions depend on it): run it again with {saved} process(es) (torchrun "
            f"--nproc-per-node {saved}, deepspeed --num_gpus {saved}, or no launcher for 1), or train into a new --out")  # fmt: skip
    return state


def _complete_checkpoints(out: Path) -> list[Path]:
    ckpts = out / "checkpoints"
    done = (
        [p for p in ckpts.glob(f"{_CKPT}*") if p.is_dir() and p.name[len(_CKPT) :].isdigit()] if ckpts.exists() else []
    )
    return sorted(done, key=lambda p: int(p.name[len(_CKPT) :]), reverse=True)


def _resume_point(out: Path, world: World, engine: str) -> tuple[Path, dict[str, Any]] | None:
    """Rank 0: the newest checkpoint whose every file reads as data, and its trainer state (None: none yet).

    A damaged newer one is skipped with one line on stderr; it stays on disk (the next save of its step
    replaces it).

    Raises:
        CheckpointError: checkpoints exist and none of them can be read.
    """
    ckpts = _complete_checkpoints(out)
    for i, ckpt in enumerate(ckpts):
        try:
            state = _read_state(out, ckpt, world)
            check_checkpoint(ckpt, engine)
        except CheckpointError as err:
            if i + 1 == len(ckpts):
                raise CheckpointError(f"{err}; no older checkpoint of {out} can be read either: remove "
                                      f"{out / 'checkpoints'} to start over, or train into a new --out") from None  # fmt: skip
            print(f"{err}; resuming from the previous intact checkpoint {ckpts[i + 1].name} instead", file=sys.stderr)
            continue
        return ckpt, state
    return None


def _truncate_metrics(path: Path, step: int) -> None:
    """Keeps the rows up to ``step`` (a row torn by a crash mid-write, the last line, is dropped)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    keep = []
    for n, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not a metrics row")
        except ValueError:
            if n == len(lines):
                break
            raise RunConflictError(f"{path}: line {n} is not JSON; not overwriting the run's metrics: repair or remove "
                                   "the line, or choose another --out") from None  # fmt: skip
        if row["step"] <= step:
            keep.append(line)
    with writing(path):
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


def _check_replicas(world: World, module: torch.nn.Module, weights: str) -> None:
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
                           f"({', '.join(differ[:5])}); the checkpoints are kept, {weights} is not written")  # fmt: skip


def _held_out(loss_obj: Any, module: torch.nn.Module, batches: list[Batch], device: torch.device) -> dict[str, float]:
    """The loss (and accuracy, or error rates) over the held-out batches, weighted by their utterances.

    Eval mode and no gradients; each batch inside the loss's ``held_out(i)`` where it has one (masking
    distillation draws the batch's fixed masks, see :class:`JobLoss`); every random state is put back
    afterwards, so training continues as if nothing had run.
    """
    held_out = getattr(loss_obj, "held_out", None)
    rng = _rng_state(device)
    was_training = module.training
    module.eval()
    total, n, correct = 0.0, 0, 0.0
    errs = [0, 0, 0, 0]
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                fixed = held_out(i) if held_out is not None else contextlib.nullcontext()
                with fixed:
                    res = loss_obj(module, batch.to(device), 0)
                total += float(res.total) * batch.size
                n += batch.size
                if res.accuracy is not None:
                    correct += res.accuracy * batch.size
                rates = res.decoding.error_rates() if res.decoding is not None else None
                if rates is not None:
                    for k, v in enumerate((rates.char_errors, rates.chars, rates.word_errors, rates.words)):
                        errs[k] += v
    finally:
        module.train(was_training)
        _set_rng_state(rng, device)
    row = {"valid_loss": total / n}
    if res.accuracy is not None:
        row["valid_accuracy"] = correct / n
    if errs[1]:
        row["valid_cer"], row["valid_wer"] = errs[0] / errs[1], errs[2] / max(errs[3], 1)
    return row


def _best_so_far(path: Path, step: int) -> tuple[float, int] | None:
    """Rank 0: the lowest finite ``valid_loss`` among the metrics rows up to ``step``, and its step."""
    if not path.exists():
        return None
    best = None
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        v = row.get("valid_loss")
        if isinstance(v, float) and math.isfinite(v) and row["step"] <= step and (best is None or v < best[0]):
            best = (v, row["step"])
    return best


def _save_best(out: Path, engine: Engine, write_weights: Callable[[Path], None], step: int,
               valid: dict[str, float]) -> None:  # fmt: skip
    """Replaces ``OUT/best`` whole (every process calls it: DeepSpeed gathers the weights collectively)."""
    world = engine.world
    with engine.full_weights():
        if world.is_main:
            with staged_dir(out / "best") as tmp:
                write_weights(tmp)
                write_text_atomic(tmp / "best.json", json.dumps({"type": "planner-best", "step": step, **valid}) + "\n")
    distributed.barrier(world)


@contextlib.contextmanager
def _located(recipe: Recipe) -> Any:
    """Errors about recipe fields raised while building from the recipe name the recipe file."""
    try:
        yield
    except ConfigError as err:
        if err.source is None and recipe.source is not None:
            raise err.with_source(recipe.source) from None
        raise


def _diverged(recipe: Recipe, step: int, loss: float, why: str, engine: Engine, weights: str) -> DivergedError:
    """The error of a run whose loss or gradients became non-finite at ``step``: it names the recipe fields
    that set the step size, the first suspects."""
    where = f"{recipe.source}: " if recipe.source else ""
    clip = recipe.optimizer.clip_norm
    fix = (f"lower optimizer.lr ({recipe.optimizer.lr:g}, now {engine.lr:g} in the schedule)"
           + ("" if clip is not None else " or set optimizer.clip_norm"))  # fmt: skip
    return DivergedError(f"{where}optimizer.lr: training diverged at step {step}: {why} (loss {loss}); the checkpoints "
                         f"before it are kept and no {weights} is written: {fix}, or check the data, then run the "
                         "same command again to resume from the last checkpoint")  # fmt: skip


def _train_loop(out: Path, identity: RunIdentity, recipe: Recipe, world: World, job: Built, engine: Engine,
                log: TextIO | None, on_step: Callable[[int, dict[str, Any]], None] | None) -> TrainResult:  # fmt: skip
    """Resumes from the newest intact checkpoint and trains to ``recipe.steps``; writes the job's weights (and
    ``best/`` with held-out batches)."""
    student, loss_obj, model, stream, valid = job.student, job.loss, job.model, job.stream, job.valid
    weights = identity.weights
    _place_loss(loss_obj, engine.device, world)
    if world.rank > 0:
        _seed_rank(recipe.seed, world.rank)
    schedule = getattr(student, "mask_schedule", None)

    step = 0
    point = distributed.agree(world, lambda: _resume_point(out, world, recipe.engine.kind) if world.is_main else None)
    point = distributed.broadcast_object(world, point)  # rank 0's view of the folder
    if point is not None:
        ckpt, state = point
        engine.load(ckpt)
        stream.seek(state["position"])
        _set_rng_state(state["rng"][world.rank], engine.device)
        step = int(state["step"])
    metrics_path = out / "metrics.jsonl"
    distributed.agree(world, lambda: _truncate_metrics(metrics_path, step) if world.is_main else None)
    result = TrainResult(step, step, rank=world.rank, world_size=world.size)
    best = None
    if valid is not None:
        best = distributed.broadcast_object(world, _best_so_far(metrics_path, step) if world.is_main else None)

    with contextlib.ExitStack() as stack:
        metrics_file = None
        if world.is_main:
            with writing(metrics_path):
                metrics_file = stack.enter_context(metrics_path.open("a", encoding="utf-8"))
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

            try:
                engine.step(loss_fn)
            except NonFiniteError as err:  # the gradient norm: the same in every process
                raise _diverged(
                    recipe, step + 1, float(holder["res"].total.detach()), str(err), engine, weights
                ) from None
            res = holder["res"]
            loss = float(res.total.detach())  # one value a step: the check costs one sync
            bad = not math.isfinite(loss)
            if world.size > 1:  # any process's: every process stops at the same step
                bad = distributed.sum_floats(world, [float(bad)])[0] > 0
            if bad:
                raise _diverged(recipe, step + 1, loss, "the loss is not finite" if not math.isfinite(loss) else
                                "another process's loss is not finite", engine, weights)  # fmt: skip
            if schedule is not None:  # the mask clock: few-shot masks freeze after T_p optimizer steps
                schedule.step()
            step += 1
            window_n += batch.size
            row = None
            if step % recipe.logging.every == 0 or step == recipe.steps:
                now = time.perf_counter()
                row = _metrics_row(world, step, res, engine.lr, batch.size, window_n, now - window_t)
                if valid is not None:
                    held = _held_out(loss_obj, engine.module, valid, engine.device)
                    # rank 0's numbers everywhere: a GPU's reductions may differ in the last bit between
                    # processes, and _save_best is collective under DeepSpeed
                    held = distributed.broadcast_object(world, held)
                    row.update(held)
                    if math.isfinite(held["valid_loss"]) and (best is None or held["valid_loss"] < best[0]):
                        best = (held["valid_loss"], step)
                        _save_best(out, engine, job.write_weights, step, held)
                window_t, window_n = now, 0
                result.metrics.append(row)
                if metrics_file is not None:
                    with writing(metrics_path):
                        metrics_file.write(json.dumps(row) + "\n")
                        metrics_file.flush()
            progress.step(row)
            if step % recipe.checkpoint.every == 0 or step == recipe.steps:
                _save(out, engine, step, stream, recipe.checkpoint.keep, metrics_file)
            if on_step is not None:
                on_step(step, {"loss": loss})
    _check_replicas(world, engine.module, weights)
    with engine.full_weights():  # fp32 master weights in the plain model's shapes (DeepSpeed: gathered)
        # every process holds the same full weights here, so every process refuses alike (no collective)
        bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise _diverged(
                recipe, step, float("nan"), f"the final weights hold NaN or inf ({', '.join(bad[:3])})", engine, weights
            )
        if world.is_main:
            job.write_weights(out)
    distributed.barrier(world)  # the run folder is complete when run_job returns, in every process
    result.step = step
    return result


def _clean_stale(out: Path) -> None:
    """Removes checkpoint folders a crash left half written (never complete: they were not renamed), and
    temporary files of the weights (``.*.pt.*.tmp``: ``.student.pt.*.tmp``)."""
    for tmp in (out / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for tmp in out.glob(".*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)


def _place_loss(loss_obj: Any, device: torch.device, world: World) -> None:
    """Calls the loss's ``place(device, (rank, world_size))`` where it has one (see :class:`JobLoss`): a
    distillation loss moves its frozen teacher to the engine's device and learns which batch of the step this
    process draws masks for."""
    place = getattr(loss_obj, "place", None)
    if place is not None:
        place(device, (world.rank, world.size))
