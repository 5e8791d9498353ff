"""The results of :func:`planner.estimate`: frozen :class:`Cost` and :class:`LeafCost`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

__all__ = ["Cost", "LeafCost"]


@dataclass(frozen=True)
class LeafCost:
    """The cost of one leaf (a linear, convolution, norm, free parameter) or attention product.

    Attributes:
        name: module path (``layers.3.attention.q_proj``; products: ``layers.3.attention.scores``).
        kind: the leaf op (``linear``, ``conv1d``, ``conv2d``, ``layer_norm``, ``group_norm``, ``batch_norm``,
            ``param``) or ``attention_scores`` / ``attention_position`` / ``attention_context``.
        parent: the graph node it belongs to (``layers.3``).
        params: trainable parameters.
        storage_bytes: bytes at the stored width (:func:`planner.cost.leaf_storage_bytes`).
        macs: multiply-accumulates over all utterances priced.
        flops: 2 x MACs plus non-MAC FLOPs (norms, softmax); ``jeon2023``: float MACs only.
        bops: MACs x weight bits x activation bits x N:M density (``jeon2023``: x the wider operand's bits).
        weight_bits: stored weight bits (32 for leaves without a quantizable weight).
        act_bits: input activation bits.
        sparsity: ``"N:M"`` or None.
        latency_s: estimated seconds on the hardware, or None without one.
        nvda_est_time: Jeon et al.'s A100 estimate of the leaf's BOPs, in seconds (:mod:`planner.cost.bops`).
    """

    name: str
    kind: str
    parent: str
    params: int
    storage_bytes: int
    macs: int
    flops: int
    bops: int
    weight_bits: int = 32
    act_bits: int = 32
    sparsity: str | None = None
    latency_s: float | None = None
    nvda_est_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "parent": self.parent, "params": self.params,
            "storage_bytes": self.storage_bytes, "macs": self.macs, "flops": self.flops, "bops": self.bops,
            "weight_bits": self.weight_bits, "act_bits": self.act_bits, "sparsity": self.sparsity,
            "latency_s": self.latency_s, "nvda_est_time": self.nvda_est_time,
        }  # fmt: skip


# A priced row of one node, relative to it: (path, kind, params, storage, macs, flops, bops, w bits,
# a bits, sparsity, latency, nvda_est_time); tuples keep the memoized hot path allocation-light.
Row = tuple[str, str, int, int, int, int, int, int, int, "str | None", "float | None", float]


@dataclass(frozen=True)
class Cost:
    """The analytic cost of a graph for an input specification.

    Attributes:
        params: trainable parameters (equals ``graph.param_count``).
        storage_bytes: bytes of every tensor at its stored width.
        macs: multiply-accumulates, summed over the utterances priced.
        flops: 2 x MACs plus norm and softmax FLOPs (``jeon2023``: 2 x the float MACs only).
        bops: bit operations in ``bops_convention``: Bayesian Bits (default) sums MACs x weight bits x
            activation bits x density; ``jeon2023`` sums MACs x the wider operand's bits x density.
        latency_s: estimated seconds on ``hardware`` (per-leaf roofline, summed), or None.
        samples: the utterance lengths priced, in samples.
        attention: ``exact`` (attended pairs) or ``dense`` (T x T, as the materialized model executes).
        hardware: the hardware catalog entry's name, or None.
        nvda_est_time: Jeon et al.'s Table 1 estimate in seconds, ``(float BOPs + binarized BOPs / 16) /
            (312 x 2^40)`` in their BOP accounting whatever ``bops_convention`` is (:mod:`planner.cost.bops`).
        bops_convention: ``bayesian_bits`` or ``jeon2023``.
    """

    params: int
    storage_bytes: int
    macs: int
    flops: int
    bops: int
    latency_s: float | None
    samples: tuple[int, ...]
    attention: str
    hardware: str | None = None
    nvda_est_time: float = 0.0
    bops_convention: str = "bayesian_bits"
    _parts: tuple[tuple[tuple[str, tuple[Row, ...]], ...], ...] = field(default=(), repr=False, compare=False)

    @cached_property
    def layers(self) -> tuple[LeafCost, ...]:
        """Every leaf with parameters or compute, in execution order; sums over it equal the totals."""
        if not self._parts:
            return ()
        merged: list[list[Any]] = []
        for u, part in enumerate(self._parts):
            k = 0
            for parent, rows in part:
                for r in rows:
                    if u == 0:
                        merged.append([f"{parent}.{r[0]}", r[1], parent, *r[2:]])
                    else:
                        m = merged[k]
                        m[5] += r[4]
                        m[6] += r[5]
                        m[7] += r[6]
                        if m[11] is not None:
                            m[11] += r[10]
                        m[12] += r[11]
                    k += 1
        return tuple(LeafCost(*m) for m in merged)

    def to_dict(self, layers: bool = True) -> dict[str, Any]:
        """Plain data for ``--json``: the totals, the input and (by default) every layer."""
        out: dict[str, Any] = {
            "params": self.params, "storage_bytes": self.storage_bytes, "macs": self.macs, "flops": self.flops,
            "bops": self.bops, "latency_s": self.latency_s, "samples": list(self.samples),
            "attention": self.attention, "hardware": self.hardware, "nvda_est_time": self.nvda_est_time,
            "bops_convention": self.bops_convention,
        }  # fmt: skip
        if layers:
            out["layers"] = [lc.to_dict() for lc in self.layers]
        return out
