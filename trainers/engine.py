"""Optimisation engines with one interface: plain torch, or DeepSpeed.

Both use ``torch.optim.AdamW`` and a ``LambdaLR`` warmup/decay schedule, clip gradients to
``optimizer.clip_norm``, and save/load their whole state in a folder. On a machine without CUDA,
DeepSpeed runs on its CPU accelerator (``DS_ACCELERATOR=cpu``) with a torch AdamW (DeepSpeed's own CPU
Adam would be JIT-compiled first).
"""

from __future__ import annotations

import abc
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from trainers.recipe import Recipe

__all__ = ["Engine", "TorchEngine", "DeepSpeedEngine", "build_engine", "lr_lambda", "single_process_env"]


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
    return torch.optim.AdamW(params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay)


class Engine(abc.ABC):
    """``step(loss_fn)`` runs forward (``loss_fn(module)``), backward and an optimizer step."""

    module: nn.Module

    @abc.abstractmethod
    def step(self, loss_fn: Callable[[nn.Module], Tensor]) -> None:
        ...

    @property
    @abc.abstractmethod
    def lr(self) -> float:
        ...

    @abc.abstractmethod
    def save(self, folder: Path) -> None:
        ...

    @abc.abstractmethod
    def load(self, folder: Path) -> None:
        ...


class TorchEngine(Engine):
    """Single-process torch training."""

    def __init__(self, model: nn.Module, recipe: Recipe) -> None:
        self.module = model
        self.clip = recipe.optimizer.clip_norm
        self.optimizer = _optimizer(model, recipe)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(recipe))

    def step(self, loss_fn: Callable[[nn.Module], Tensor]) -> None:
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(self.module)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, folder: Path) -> None:
        torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict()}, folder / "engine.pt")  # fmt: skip

    def load(self, folder: Path) -> None:
        state = torch.load(folder / "engine.pt", map_location="cpu", weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> None:
    """Sets what ``deepspeed.initialize`` needs when not started by the deepspeed launcher (kept if set)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


class DeepSpeedEngine(Engine):
    """``deepspeed.initialize`` with a torch AdamW and the recipe's schedule, ZeRO stage and precision.

    A batch is one micro-batch (no gradient accumulation); checkpoints are DeepSpeed's own
    (``save_checkpoint`` under tag ``state``).
    """

    def __init__(self, model: nn.Module, recipe: Recipe) -> None:
        single_process_env()
        import deepspeed

        opt = _optimizer(model, recipe)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(recipe))
        ds = recipe.deepspeed
        config = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": ds.zero_stage},
            "bf16": {"enabled": ds.precision == "bf16"},
            "fp16": {"enabled": ds.precision == "fp16"},
            "steps_per_print": 1 << 30,
        }
        if recipe.optimizer.clip_norm is not None:
            config["gradient_clipping"] = recipe.optimizer.clip_norm
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=opt, lr_scheduler=sched, config=config)  # fmt: skip
        self.module = self.engine.module

    def step(self, loss_fn: Callable[[nn.Module], Tensor]) -> None:
        self.engine.train()
        loss = loss_fn(self.module)
        self.engine.backward(loss)
        self.engine.step()

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder), tag="state", save_latest=False)

    def load(self, folder: Path) -> None:
        self.engine.load_checkpoint(str(folder), tag="state")


def build_engine(model: nn.Module, recipe: Recipe) -> Engine:
    """The recipe's engine around ``model``."""
    return DeepSpeedEngine(model, recipe) if recipe.engine == "deepspeed" else TorchEngine(model, recipe)
