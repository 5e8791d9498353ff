"""Optimisation engines with one interface: plain torch, or DeepSpeed.

Both use ``torch.optim.AdamW`` and a ``LambdaLR`` warmup/decay schedule, clip gradients to
``optimizer.clip_norm``, and save/load their whole state in a folder. On a machine without CUDA,
DeepSpeed runs on its CPU accelerator (``DS_ACCELERATOR=cpu``) with a torch AdamW (DeepSpeed's own CPU
Adam would be JIT-compiled first).

What works where (DeepSpeed 0.19, one process):

================  ===================================  ==========================================
precision         CPU accelerator (tested)             CUDA accelerator (allowed, not tested here)
================  ===================================  ==========================================
``fp32``          ZeRO 0, 1, 2, 3                      ZeRO 0-3
``bf16``          ZeRO 0, 1, 2, 3                      ZeRO 0-3 where the GPU has bf16
``fp16``          refused unless the CPU has           ZeRO 0-3 (dynamic loss scaling)
                  AVX512-FP16 / AMX-FP16
================  ===================================  ==========================================

A precision the machine's accelerator lacks is a :class:`~planner.errors.ConfigError` on
``engine.precision`` (``deepspeed.precision`` in a format-1 recipe; :func:`check_deepspeed_support`), raised
before a run folder is claimed.

Data parallelism (a :class:`~trainers.distributed.World` of several processes): each process runs its own
batch, gradients are averaged (DeepSpeed: its own all-reduce or ZeRO reduce-scatter; torch: one all-reduce
after backward, see :class:`TorchEngine`), and two kinds of state that a process changes from its own batch
are made one again before the optimizer step:

* parameters the forward pass sets in place (BiT's ``alpha``, from the first batch) are averaged over the
  processes (:func:`~trainers.distributed.average_`);
* buffers (quantizer observers, N:M masks and their flags, BatchNorm statistics, the mask clock) are rank 0's:
  broadcast from rank 0 at the start of every step, as ``DistributedDataParallel`` does before every forward
  by default. Buffers computed from the weights (N:M masks) agree anyway; those that follow the data
  (observers, BatchNorm) follow rank 0's batches.
"""

from __future__ import annotations

import abc
import contextlib
import io
import math
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from planner.errors import ConfigError, FieldError, NonFiniteError
from trainers import distributed
from trainers.distributed import World
from trainers.recipe import DeepSpeedConfig, Recipe, recipe_errors
from trainers.safeio import DEEPSPEED_GLOBALS, CheckpointError, read_torch, save_torch, weights_only_loads

__all__ = [
    "Engine",
    "TorchEngine",
    "DeepSpeedEngine",
    "ENGINES",
    "NonFiniteError",
    "build_engine",
    "check_checkpoint",
    "check_deepspeed_support",
    "check_engine",
    "deepspeed_config",
    "read_deepspeed_checkpoint",
    "lr_lambda",
    "single_process_env",
]


def lr_lambda(recipe: Recipe) -> Callable[[int], float]:
    """The learning-rate multiplier at each step: linear warmup, then linear/cosine/constant decay."""
    steps, sched = recipe.steps, recipe.schedule
    warmup = int(sched.warmup_ratio * steps)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if sched.kind == "constant":
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, steps - warmup))
        decay = 1.0 - frac if sched.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))
        return sched.final_ratio + (1.0 - sched.final_ratio) * decay

    return factor


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    opt = recipe.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay,
                             fused=opt.fused or None)  # fmt: skip


class Engine(abc.ABC):
    """``step(loss_fn)`` runs forward (``loss_fn(module)``), backward and an optimizer step.

    Attributes:
        module: the plain model (what ``loss_fn`` gets and what is checkpointed).
        device: where the model lives; batches and the teacher go there.
        world: the job's processes (one by default).
    """

    module: nn.Module
    device: torch.device
    world: World

    @abc.abstractmethod
    def step(self, loss_fn: Callable[[nn.Module], Tensor]) -> None:
        """One optimizer step on ``loss_fn(module)``.

        Raises:
            NonFiniteError: the gradient norm (where clipping computes it) is NaN or infinite.
        """

    @property
    @abc.abstractmethod
    def lr(self) -> float: ...

    @abc.abstractmethod
    def save(self, folder: Path) -> None: ...

    @abc.abstractmethod
    def load(self, folder: Path) -> None: ...

    def full_weights(self) -> contextlib.AbstractContextManager[None]:
        """A context in which ``module.state_dict()`` is the plain fp32 model's (what ``student.pt`` holds).

        The torch engine trains the plain model itself; DeepSpeed's engine overrides this.
        """
        return contextlib.nullcontext()


class TorchEngine(Engine):
    """Plain torch training: one process, or one of a data-parallel job.

    In a job of several processes the parameters and buffers start as rank 0's, and after backward every
    gradient is replaced by its mean over the processes (:func:`~trainers.distributed.average_gradients_`;
    a parameter no process computed a gradient for keeps ``grad`` None, as in one process), before
    clipping and AdamW, which then take the same step everywhere.

    Not ``DistributedDataParallel``: its reducer expects a gradient, during the backward of the forward it
    wrapped, for every parameter reachable from that forward's outputs. The losses here use some of the
    outputs of a forward that computes them all (a CTC loss leaves the projection heads' outputs unused; a
    loss on the final state leaves the heads unused; task + masking distillation runs the student twice), and
    DDP then stops with "Expected to have finished reduction in the prior iteration" (also with
    ``find_unused_parameters``, which only finds parameters unreachable from the outputs). The price: the
    all-reduce does not overlap the backward pass.

    Args:
        model: moved to ``world.device``.
        recipe: optimizer, schedule and clipping.
        world: the job's processes (default: this process alone, on the model's current device).
    """

    def __init__(self, model: nn.Module, recipe: Recipe, world: World | None = None) -> None:
        if world is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            world = World(device=device, comm_device=device)
        self.world, self.device = world, world.device
        self.module = model.to(self.device)
        self.clip = recipe.optimizer.clip_norm
        self.optimizer = _optimizer(model, recipe)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(recipe))
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        distributed.broadcast_(world, [*model.parameters(), *model.buffers()])  # rank 0's start everywhere

    def step(self, loss_fn: Callable[[nn.Module], Tensor]) -> None:
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        distributed.broadcast_buffers_(self.world, self.module)
        versions = [p._version for p in self.trainable] if self.world.size > 1 else []
        loss = loss_fn(self.module)
        loss.backward()
        distributed.average_gradients_(self.world, self.trainable)
        if versions:  # parameters the forward set in place from this process's batch: average them
            changed = [i for i, (p, v) in enumerate(zip(self.trainable, versions)) if p._version != v]
            values = distributed.average_(self.world, changed, [self.trainable[i].detach() for i in changed])
            with torch.no_grad():
                for i, value in zip(changed, values):
                    self.trainable[i].copy_(value)
        if self.clip is not None:
            # the norm clipping computes anyway: a NaN/inf one stops training before the step spreads it into
            # the weights (the same in every process: the gradients are averaged already)
            norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip))
            if not math.isfinite(norm):
                raise NonFiniteError(f"the gradient norm is {norm}")
        self.optimizer.step()
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, folder: Path) -> None:
        """Writes ``engine.pt`` (rank 0: every process holds the same model and optimizer state), fsynced."""
        if not self.world.is_main:
            return
        save_torch({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict()}, folder / "engine.pt")  # fmt: skip

    def load(self, folder: Path) -> None:
        state = _read_engine_pt(folder / "engine.pt", self.device)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> None:
    """Sets what ``deepspeed.initialize`` needs in a process that is a job of one (each variable kept if set):
    ``DS_ACCELERATOR=cpu`` without CUDA, and a process group of one on a free local port. One of several
    processes a launcher started (``WORLD_SIZE`` or an MPI launcher's world size above 1) keeps the launcher's
    environment as it is: a default rank or port would be wrong there."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if distributed.launched():
        return
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def deepspeed_config(recipe: Recipe) -> dict[str, Any]:
    """The ``deepspeed.initialize`` config of a recipe: one micro-batch per step, the recipe's ZeRO stage,
    precision and gradient clipping (the optimizer and schedule are passed as torch objects).

    Example:
        >>> from trainers import load_recipe
        >>> deepspeed_config(load_recipe("recipes/distill.yaml"))["zero_optimization"]
        {'stage': 0}
    """
    ds = recipe.engine if isinstance(recipe.engine, DeepSpeedConfig) else DeepSpeedConfig()  # torch: the defaults
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": ds.zero_stage},
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16"},  # loss_scale 0 (DeepSpeed's default): dynamic scaling
        "steps_per_print": 1 << 30,
    }
    if ds.zero_stage == 3:
        # Otherwise ZeRO-3 replaces torch.nn.functional.linear for the whole process ("memory efficient"
        # matmul-then-add), which changes 16-bit rounding for every model run afterwards, teachers included.
        config["zero_optimization"]["memory_efficient_linear"] = False
    if recipe.optimizer.clip_norm is not None:
        config["gradient_clipping"] = recipe.optimizer.clip_norm
    return config


def check_deepspeed_support(ds: DeepSpeedConfig, where: str = "engine.precision") -> None:
    """Checks that this machine's DeepSpeed accelerator can run ``ds.precision``.

    DeepSpeed refuses the same combinations inside ``deepspeed.initialize`` ("Type fp16 is not supported
    on your device"); asking its accelerator first turns that into a message naming the recipe field and
    the fix. The accelerator is DeepSpeed's own choice (CUDA where a GPU is visible, else the CPU), so a
    recipe that fails here runs unchanged on a GPU machine.

    Raises:
        ConfigError: ``engine.precision: fp16 is not supported by DeepSpeed's 'cpu' accelerator ...`` (``where``:
            the field's path in the recipe file, ``Recipe.engine_field("precision")``).
    """
    single_process_env()
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    supported = {"fp32": True, "bf16": bool(acc.is_bf16_supported()), "fp16": bool(acc.is_fp16_supported())}
    if not supported[ds.precision]:
        usable = ", ".join(p for p, ok in supported.items() if ok)
        fix = "bf16 (fp32 master weights, no loss scaling) or fp32" if supported["bf16"] else "fp32"
        raise ConfigError([FieldError(
            where,
            f"{ds.precision} is not supported by DeepSpeed's {acc.device_name()!r} accelerator on this machine "
            f"(allowed here: {usable}); use {fix}, or train on a machine whose accelerator has "
            f"{ds.precision} (a CUDA GPU{', Ampere or newer' if ds.precision == 'bf16' else ''})")])  # fmt: skip


def check_engine(recipe: Recipe) -> None:
    """Raises a :class:`ConfigError` if this machine cannot run the recipe's engine (before a run folder
    is claimed, so that the fixed recipe can use the same folder)."""
    if isinstance(recipe.engine, DeepSpeedConfig):
        with recipe_errors(recipe):
            check_deepspeed_support(recipe.engine, recipe.engine_field("precision"))


_TAG = "state"  # the DeepSpeed checkpoint tag: a checkpoint folder holds state/ beside trainer.json
_SHAPES = "planner_param_shapes"  # client state: each parameter's shape in the plain model


def _read_engine_pt(path: Path, device: Any = "cpu") -> dict[str, Any]:
    state = read_torch(path, what="the torch engine's state", map_location=device)
    if not isinstance(state, dict) or not all(k in state for k in ("model", "optimizer", "scheduler")):
        raise CheckpointError(f"{path}: not a torch engine state (expected model, optimizer and scheduler)")
    return state


def _deepspeed_files(folder: Path) -> list[Path]:
    """The DeepSpeed state files of a checkpoint folder (model states first)."""
    tag_dir = folder / _TAG
    states = sorted(tag_dir.glob("*model_states.pt"))
    if not states:
        raise CheckpointError(f"{tag_dir}: no DeepSpeed model states (*model_states.pt)")
    return states + sorted(p for p in tag_dir.glob("*.pt") if p not in states)


def check_checkpoint(folder: str | os.PathLike[str], engine: str) -> None:
    """Reads every engine file of a checkpoint folder as plain data (tensors, plain types, the allowlisted
    DeepSpeed records), so that a resume can tell an intact checkpoint from a damaged one before loading it.

    Raises:
        CheckpointError: naming the first file that cannot be read that way.
    """
    folder = Path(folder)
    if engine == "deepspeed":
        for f in _deepspeed_files(folder):
            read_torch(f, what="a DeepSpeed checkpoint file", allow=(DEEPSPEED_GLOBALS,))
    else:
        _read_engine_pt(folder / "engine.pt")


@contextlib.contextmanager
def _deepspeed_reads(folder: Path) -> Iterator[None]:
    """DeepSpeed's own reads of ``folder`` with ``weights_only=True``; a refusal names the file."""
    try:
        with weights_only_loads((DEEPSPEED_GLOBALS,)):
            yield
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        check_checkpoint(folder, "deepspeed")  # names the file (raises) where one cannot be read as data
        raise CheckpointError(
            f"{folder}: DeepSpeed cannot load this checkpoint ({str(err).splitlines()[0][:200]})"
        ) from None


def read_deepspeed_checkpoint(folder: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The plain fp32 state dict (parameters and buffers) of a checkpoint written by :class:`DeepSpeedEngine`.

    ZeRO 1-3: DeepSpeed's own consolidation of the fp32 master weights
    (``deepspeed.utils.zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint``); buffers keep their dtypes
    (bool masks stay bool). ZeRO-0: the module state DeepSpeed saved (the weights themselves under fp32;
    under bf16/fp16 the 16-bit weights, widened). Parameters get their plain-model shapes back.

    Example:
        >>> state = read_deepspeed_checkpoint("runs/a1/checkpoints/step-00001000")  # doctest: +SKIP
    """
    single_process_env()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    folder = Path(folder)
    tag_dir = folder / _TAG
    states = _deepspeed_files(folder)
    saved = read_torch(states[0], what="DeepSpeed's model states", allow=(DEEPSPEED_GLOBALS,))
    if any(tag_dir.glob("*optim_states.pt")):
        with contextlib.redirect_stdout(io.StringIO()), _deepspeed_reads(folder):  # it prints its progress
            state = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=_TAG)
    else:
        state = {k: v.float() if v.is_floating_point() else v for k, v in saved["module"].items()}
    for name, shape in saved.get(_SHAPES, {}).items():
        if name in state:
            state[name] = state[name].reshape(shape)
    return state


def _has_master(ds: DeepSpeedConfig) -> bool:
    """Whether DeepSpeed keeps fp32 master weights apart from the module's parameters."""
    return ds.zero_stage > 0 or ds.precision != "fp32"


class _StrItemsDict(dict):
    """A dict whose ``items()`` name its keys as strings; everything else is the dict's own.

    DeepSpeed 0.19's ZeRO-3 post-forward hook (``parameter_offload._post_forward_module_hook``) walks a dict
    output with ``name.startswith('__')``, which fails on the ``{layer: tensor}`` dict of the projection
    heads. It only looks for parameters returned as outputs, so string names are all it needs, while
    ``dict.update`` and indexing (how the encoder reads this dict) still see the integer keys.
    """

    def items(self):  # noqa: ANN201
        return [(str(k), v) for k, v in super().items()]


def _zero3_output_hook(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook: dict outputs with non-string keys go on as :class:`_StrItemsDict`."""
    if type(output) is dict and not all(isinstance(k, str) for k in output):
        return _StrItemsDict(output)
    return None


class DeepSpeedEngine(Engine):
    """``deepspeed.initialize`` with a torch AdamW and the recipe's schedule, ZeRO stage and precision.

    A batch is one micro-batch (no gradient accumulation); checkpoints are DeepSpeed's own
    (``save_checkpoint`` under tag ``state``: the module, the optimizer with its fp32 master weights
    and ZeRO partitions, the schedule). Under bf16/fp16 only the parameters become 16-bit: buffers
    (quantizer scales, N:M masks, flags, the mask clock) keep their dtypes.

    What the engine adds around DeepSpeed:

    * Scalar (0-d) parameters, such as BiT's ``alpha``, are held as 1-element vectors while the engine
      owns the model (DeepSpeed broadcasts every parameter viewed as bytes, which a 0-d tensor cannot
      be); :meth:`full_weights` gives them back their shapes.
    * Parameters that the forward pass changes in place (BiT's ``alpha``, set from the first batch)
      are copied into DeepSpeed's fp32 master weights before the optimizer step, which would otherwise
      overwrite them from the stale master copy; in a job of several processes, averaged over them first.
    * In a job of several processes, rank 0's buffers are broadcast at the start of every step.
    * ZeRO-0 with 16-bit weights: the optimizer state DeepSpeed creates with a step on zero gradients
      is dropped (see ``__init__``).
    * ZeRO-3: dict outputs keyed by layer index reach DeepSpeed's per-module hooks as
      :class:`_StrItemsDict`.
    """

    def __init__(self, model: nn.Module, recipe: Recipe, world: World | None = None) -> None:
        ds = recipe.engine
        check_deepspeed_support(ds, recipe.engine_field("precision"))
        import deepspeed

        self.world = world if world is not None else World()

        self.shapes = {name: p.shape for name, p in model.named_parameters()}
        for p in model.parameters():
            if p.dim() == 0:
                p.data = p.data.reshape(1)
        self.versions: dict[nn.Parameter, int] = {}
        self.changed: dict[nn.Parameter, Tensor] = {}
        for module in model.modules():  # registered before DeepSpeed's own hooks, so these run first
            if ds.zero_stage == 3:
                module.register_forward_hook(_zero3_output_hook)
            track = _has_master(ds) or self.world.size > 1  # several processes: to average the changes
            if track and any(p.requires_grad for p in module.parameters(recurse=False)):
                module.register_forward_hook(self._note_changes)
        opt = _optimizer(model, recipe)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(recipe))
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=opt, lr_scheduler=sched, config=deepspeed_config(recipe))  # fmt: skip
        self.module = self.engine.module
        self.device = torch.device(self.engine.device)
        # DeepSpeed's files through our writer: fsynced, renamed into place, a full disk a WriteError
        self.engine.checkpoint_engine.save = _save_deepspeed_file
        self.order = {p: i for i, p in enumerate(self.module.parameters())}  # one numbering in every process
        if ds.zero_stage == 0 and ds.precision != "fp32":
            # DeepSpeed's FP16_UnfusedOptimizer (ZeRO-0, 16-bit weights, a torch optimizer) creates the
            # optimizer state with one AdamW step on zero gradients: the step count (Adam's bias
            # correction) would run one ahead and weight decay would hit the master weights once. Drop
            # that step: AdamW builds its state at the first real step, and the fp32 master weights are
            # copied again from the 16-bit weights they were made from.
            self.engine.optimizer.optimizer.state.clear()
            self.engine.optimizer.refresh_fp32_params()
        self._note_versions()

    def _note_versions(self) -> None:
        self.versions = {p: p._version for p in self.module.parameters() if p.requires_grad}

    def _note_changes(self, module: nn.Module, args: Any, output: Any) -> None:
        """Forward hook: keeps the value of each parameter of ``module`` that its forward changed in place
        (read here, while ZeRO-3 still holds it gathered)."""
        for p in module.parameters(recurse=False):
            if p in self.versions and p._version != self.versions[p]:
                self.changed[p] = p.detach().clone()
                self.versions[p] = p._version

    def _master(self, p: nn.Parameter) -> Tensor | None:
        """The fp32 master copy of ``p`` (gathered under ZeRO-3), or None where ``p`` is its own master."""
        from deepspeed.utils import safe_get_full_fp32_param

        full = safe_get_full_fp32_param(p)  # ZeRO 1-3 (DeepSpeed's own lookup)
        if full is not None:
            return full
        opt = self.engine.optimizer  # ZeRO-0 with 16-bit weights: FP16_UnfusedOptimizer's paired groups
        for lp_group, hp_group in zip(getattr(opt, "fp16_groups", ()), getattr(opt, "fp32_groups", ())):
            for lp, hp in zip(lp_group, hp_group):
                if lp is p:
                    return hp
        return None

    def _set_master(self, p: nn.Parameter, value: Tensor) -> None:
        from deepspeed.utils import safe_set_full_fp32_param

        if hasattr(p, "ds_id"):
            _set_zero3_master(p, value)
            return
        if hasattr(p, "_hp_mapping"):  # ZeRO 1-2 (None in a process that holds no fragment of p: a no-op there)
            safe_set_full_fp32_param(p, value.float())
            return
        master = self._master(p)
        if master is not None:
            master.data.copy_(value.reshape(master.shape))
        else:  # its own master (ZeRO-0, fp32): only another process's value can differ
            p.data.copy_(value.reshape(p.shape))

    def step(self, loss_fn: Callable[[nn.Module], Tensor]) -> None:
        self.engine.train()
        distributed.broadcast_buffers_(self.world, self.module)
        loss = loss_fn(self.module)
        self.engine.backward(loss)
        changed = sorted(self.changed, key=self.order.__getitem__)
        values = [self.changed[p] for p in changed]
        if self.world.size > 1:
            values = distributed.average_(self.world, [self.order[p] for p in changed], values)
        for p, value in zip(changed, values):  # the optimizer steps from the master copy: update it first
            self._set_master(p, value)
        self.changed.clear()
        self.engine.step()
        self._note_versions()

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save(self, folder: Path) -> None:
        shapes = {name: list(shape) for name, shape in self.shapes.items()}
        self.engine.save_checkpoint(str(folder), tag=_TAG, client_state={_SHAPES: shapes}, save_latest=False)

    def load(self, folder: Path) -> None:
        with _deepspeed_reads(folder):
            self.engine.load_checkpoint(str(folder), tag=_TAG)
        self._note_versions()

    @contextlib.contextmanager
    def full_weights(self) -> Iterator[None]:
        """Within the block, the module's parameters hold their full fp32 master values in the plain
        model's shapes (ZeRO-3: gathered), so ``module.state_dict()`` loads into ``planner.materialize``'s
        model; afterwards DeepSpeed's own tensors are put back."""
        saved = []
        try:
            for name, p in self.module.named_parameters():
                master = self._master(p)
                value = p.data if master is None else master
                saved.append((p, p.data))
                p.data = value.detach().to(torch.float32).reshape(self.shapes[name]).clone()
            yield
        finally:
            for p, data in saved:
                p.data = data


def _save_deepspeed_file(state_dict: Any, path: str) -> None:
    """``CheckpointEngine.save`` (DeepSpeed calls it with keywords) through :func:`save_torch`."""
    save_torch(state_dict, path)


def _set_zero3_master(p: nn.Parameter, value: Tensor) -> None:
    """Writes this process's part of a ZeRO-3 parameter's fp32 master copy from its full ``value``.

    DeepSpeed 0.19's ``set_full_hp_param`` reads part ``r`` at ``r * partition size`` of the unpadded value,
    past its end where the number of processes does not divide the parameter's size (BiT's 1-element
    ``alpha`` in a job of two: "start (1) + length (1) exceeds dimension size (1)"); here the padding past
    the end is left as it is.
    """
    if not p.requires_grad:
        return
    opt = p._z3_optimizer
    part, _ = opt._get_fp32_opt_state_partition(p, release_swap_buffers=False)
    start = p.partition_numel() * opt._get_param_partition_rank(p)
    flat = value.detach().reshape(-1).float()
    count = max(0, min(part.numel(), flat.numel() - start))
    part.data[:count].copy_(flat[start : start + count])


#: The engine class of each engine kind (the keys of ``trainers.engine_config.ENGINE_KINDS``, tested).
ENGINES: dict[str, type[Engine]] = {"torch": TorchEngine, "deepspeed": DeepSpeedEngine}


def build_engine(model: nn.Module, recipe: Recipe, world: World | None = None) -> Engine:
    """The recipe's engine (:data:`ENGINES` by ``recipe.engine.kind``) around ``model``, in ``world`` (default:
    this process alone); the one place an engine is built from its config."""
    return ENGINES[recipe.engine.kind](model, recipe, world)
