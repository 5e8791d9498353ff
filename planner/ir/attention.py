"""Attention kinds: which key positions each query frame may attend to.

Each kind is a frozen config registered in :data:`ATTENTION_KINDS`. ``allowed(i, j)`` is written with
plain arithmetic and comparisons, so the same expression builds a boolean mask from numpy arrays (cost
model: the real number of attended pairs) and from torch tensors (the materialized model). All patterns
are bidirectional, as used in an encoder; padding is masked on top of them.

* ``full``: every frame attends to every frame.
* ``local``: a centred window of ``window`` frames, ``|i - j| <= (window - 1) // 2`` on the left and
  ``window // 2`` on the right.
* ``sparse_strided`` (Child et al. 2019, strided pattern, made bidirectional): ``|i - j| < stride`` or
  ``(i - j) % stride == 0``: both of Child's strided heads merged into one pattern.
* ``sparse_strided_only`` (Child et al. 2019, eq. for ``A(2)`` of the strided pattern): ``(i - j) % stride == 0``
  alone. Child's interleaved factorization alternates it, layer by layer, with the local pattern ``A(1)``
  (``local`` with ``window: 2 * stride - 1`` is the band of ``sparse_strided``), so that two consecutive layers
  connect any two frames while each attends about ``T / stride`` keys per query.
* ``sparse_fixed`` (Child et al. 2019, fixed pattern, made bidirectional): the same block of ``block``
  frames, or one of the last ``summary`` columns of any block.
* ``reuse`` (Recycle-and-Distill eq. 4): no Q/K projections and no ``QK^T``; the attention probabilities of
  an earlier layer ``source`` (its index in ``layers``) are applied to this layer's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from planner.config import from_data, to_data
from planner.errors import FieldError
from planner.registry import Registry

__all__ = [
    "ATTENTION_KINDS",
    "FullAttention",
    "LocalAttention",
    "StridedAttention",
    "StridedOnlyAttention",
    "FixedAttention",
    "ReuseAttention",
    "AttentionConfig",
]

ATTENTION_KINDS: Registry[type] = Registry("attention kind")


@ATTENTION_KINDS.register("full")
@dataclass(frozen=True)
class FullAttention:
    """Full bidirectional self-attention."""

    kind: Literal["full"] = "full"
    computes_map: ClassVar[bool] = True

    def allowed(self, i: Any, j: Any) -> Any:
        return (i - j) == (i - j)


@ATTENTION_KINDS.register("local")
@dataclass(frozen=True)
class LocalAttention:
    """A centred local window of ``window`` frames."""

    window: int
    kind: Literal["local"] = "local"
    computes_map: ClassVar[bool] = True

    def check(self) -> None:
        if self.window < 1:
            raise FieldError("window", f"{self.window} must be at least 1")

    def allowed(self, i: Any, j: Any) -> Any:
        d = j - i
        return (d >= -((self.window - 1) // 2)) & (d <= self.window // 2)


@ATTENTION_KINDS.register("sparse_strided")
@dataclass(frozen=True)
class StridedAttention:
    """Child et al.'s strided pattern: the previous and next ``stride - 1`` frames, and every ``stride``-th."""

    stride: int
    kind: Literal["sparse_strided"] = "sparse_strided"
    computes_map: ClassVar[bool] = True

    def check(self) -> None:
        if self.stride < 2:
            raise FieldError("stride", f"{self.stride} must be at least 2")

    def allowed(self, i: Any, j: Any) -> Any:
        d = i - j
        return (abs(d) < self.stride) | (d % self.stride == 0)


@ATTENTION_KINDS.register("sparse_strided_only")
@dataclass(frozen=True)
class StridedOnlyAttention:
    """Child et al.'s strided head ``A(2) = {j : (i - j) mod stride = 0}``: every ``stride``-th frame only.

    Example:
        >>> import numpy as np
        >>> StridedOnlyAttention(stride=3).allowed(np.arange(7)[:, None], np.arange(7)[None, :])[0].nonzero()[0]
        array([0, 3, 6])
    """

    stride: int
    kind: Literal["sparse_strided_only"] = "sparse_strided_only"
    computes_map: ClassVar[bool] = True

    def check(self) -> None:
        if self.stride < 2:
            raise FieldError("stride", f"{self.stride} must be at least 2 (stride 1 is full attention)")

    def allowed(self, i: Any, j: Any) -> Any:
        return (i - j) % self.stride == 0


@ATTENTION_KINDS.register("sparse_fixed")
@dataclass(frozen=True)
class FixedAttention:
    """Child et al.'s fixed pattern: the own block of ``block`` frames plus ``summary`` columns per block."""

    block: int
    summary: int = 1
    kind: Literal["sparse_fixed"] = "sparse_fixed"
    computes_map: ClassVar[bool] = True

    def check(self) -> None:
        if self.block < 2:
            raise FieldError("block", f"{self.block} must be at least 2")
        if not 1 <= self.summary <= self.block:
            raise FieldError("summary", f"{self.summary} must be between 1 and block ({self.block})")

    def allowed(self, i: Any, j: Any) -> Any:
        return (i // self.block == j // self.block) | (j % self.block >= self.block - self.summary)


@ATTENTION_KINDS.register("reuse")
@dataclass(frozen=True)
class ReuseAttention:
    """Reuses the attention map of the earlier layer ``source`` (an index into ``layers``)."""

    source: int
    kind: Literal["reuse"] = "reuse"
    computes_map: ClassVar[bool] = False

    def check(self) -> None:
        if self.source < 0:
            raise FieldError("source", f"{self.source} is negative (layer indices start at 0)")


AttentionConfig = (
    FullAttention | LocalAttention | StridedAttention | StridedOnlyAttention | FixedAttention | ReuseAttention
)


def parse_attention(value: Any, path: str) -> AttentionConfig:
    """Parses ``full`` / ``{kind: local, window: 64}`` / ..."""
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict):
        raise FieldError(path, f"expected an attention kind or a mapping, got {value!r}")
    kind = value.get("kind", "full")
    cls = ATTENTION_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise FieldError(f"{path}.kind", f"unknown attention kind {kind!r} (allowed: {ATTENTION_KINDS.allowed()})")
    return from_data(cls, value, path)


def dump_attention(cfg: AttentionConfig) -> Any:
    data = to_data(cfg)
    if list(data) == [] and cfg.kind == "full":
        return "full"
    return {"kind": cfg.kind, **data}
