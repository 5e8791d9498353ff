"""The engine kinds a recipe names: one frozen config per kind, holding only that kind's fields (torch-free).

A recipe's ``engine:`` section (format 2) is ``{kind: NAME, ...its own fields}`` or a bare ``NAME``, read
through :func:`planner.config.parse_kind` over :data:`ENGINE_KINDS`::

    engine: torch                                           # {kind: torch}
    engine: {kind: deepspeed, zero_stage: 2, precision: bf16}

The engine classes that train with each config are :data:`trainers.engine.ENGINES` (same keys, tested);
:func:`trainers.engine.build_engine` is the one place that builds an engine from its config.

Adding an engine kind: a frozen dataclass here with a ``kind`` class variable and its own fields, added to
:data:`ENGINE_KINDS`; an :class:`trainers.engine.Engine` subclass taking ``(model, recipe, world)`` added to
``ENGINES`` under the same key (``tests/test_recipe_format2.py`` fails until both exist).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from planner.config import to_data

__all__ = ["ENGINE_HINTS", "ENGINE_KINDS", "EngineConfig", "TorchEngineConfig", "DeepSpeedEngineConfig", "dump_engine"]


@dataclass(frozen=True)
class EngineConfig:
    """Base of the engine kinds; each kind below holds only its own fields."""

    kind: ClassVar[str] = ""


@dataclass(frozen=True)
class TorchEngineConfig(EngineConfig):
    """``torch``: ``torch.optim.AdamW`` and ``LambdaLR`` on the plain model (:class:`trainers.engine.TorchEngine`);
    data parallel with one all-reduce per step when a launcher starts several processes. No fields."""

    kind: ClassVar[str] = "torch"


@dataclass(frozen=True)
class DeepSpeedEngineConfig(EngineConfig):
    """``deepspeed``: ``deepspeed.initialize`` around the same AdamW and schedule
    (:class:`trainers.engine.DeepSpeedEngine`; see :mod:`trainers.engine` for what runs where).

    Attributes:
        zero_stage: 0 (data parallel), 1 (optimizer state partitioned), 2 (+ gradients), 3 (+ parameters).
        precision: ``fp32``; ``bf16`` (16-bit weights and activations, fp32 master weights, no loss
            scaling); ``fp16`` (the same with dynamic loss scaling). Only parameters become 16-bit;
            buffers (quantizer scales, N:M masks, flags) keep their dtypes. A precision the machine's
            DeepSpeed accelerator lacks (fp16 on most CPUs) is refused when the run starts, naming this
            field, not here: the same recipe may run elsewhere.
    """

    kind: ClassVar[str] = "deepspeed"
    zero_stage: Literal[0, 1, 2, 3] = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


#: The engine kinds a recipe may name, each with only its own fields.
ENGINE_KINDS: dict[str, type[EngineConfig]] = {c.kind: c for c in (TorchEngineConfig, DeepSpeedEngineConfig)}

#: What a field of another kind is answered with (``engine: {kind: torch, zero_stage: 2}``).
ENGINE_HINTS = {
    "zero_stage": "only allowed with kind: deepspeed (the ZeRO stage, 0-3)",
    "precision": "only allowed with kind: deepspeed (fp32, bf16 or fp16)",
}


def dump_engine(cfg: EngineConfig) -> dict[str, Any]:
    """``{kind: NAME, ...every field of the kind, defaults included}`` (what ``planner recipe`` prints).

    Example:
        >>> dump_engine(DeepSpeedEngineConfig(zero_stage=2))
        {'kind': 'deepspeed', 'zero_stage': 2, 'precision': 'fp32'}
    """
    out: dict[str, Any] = {"kind": cfg.kind}
    for f in dataclasses.fields(cfg):
        dump = f.metadata.get("dump")
        value = getattr(cfg, f.name)
        out[f.name] = dump(value) if dump else to_data(value)
    return out
