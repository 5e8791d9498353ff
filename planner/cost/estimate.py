""":func:`estimate`: the analytic cost of a graph, a pure function of the graph and the input specification.

Repeated layers are identical, so every node is priced once per (config, context, compression of its
leaves, input frames, attention mode, hardware) and memoized; a graph is turned once into a plan of
interned node keys, so pricing a graph is one dictionary look-up and a few additions per node.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable
from typing import Any

from planner.cost._types import Cost, Row
from planner.cost.formulas import COST_FORMULAS, AttentionMode, Op
from planner.cost.hardware import Hardware, load_hardware, precision_of
from planner.cost.storage import leaf_storage_bytes
from planner.errors import FieldError
from planner.ir.compression import FLOAT32, Compression
from planner.ir.graph import EncoderGraph, GraphNode
from planner.ir.kinds.layers import TimeRecovery

__all__ = ["estimate", "price_node"]

_MODES = ("exact", "dense")


def _bits(comp: Compression) -> tuple[int, int, float, str | None]:
    sp = comp.sparsity
    return comp.weight.bits, comp.activation.bits, (sp.n / sp.m if sp else 1.0), (str(sp) if sp else None)


def _latency(op: Op, storage: int, w_bits: int, a_bits: int, sparsity: str | None, hw: Hardware) -> float:
    """Roofline of one op: ``max(compute time at its precision, bytes moved / bandwidth)`` plus overhead.

    Compute: ``2 x MACs`` at the tensor-core rate of the op's precision (fp32 at ``fp32_matmul``; 2:4
    weights at ``sparse_2of4_speedup`` times it), plus non-MAC FLOPs at the fp32 (vector) rate. Memory:
    the stored weights once, activations in and out at the activation width (fp32 for products/norms).
    """
    compute = 0.0
    if op.macs:
        prec = precision_of(w_bits, a_bits)
        if prec == "fp32":
            prec = hw.fp32_matmul
        rate = hw.rate(prec)
        if sparsity == "2:4":
            rate *= hw.sparse_2of4_speedup
        compute = 2 * op.macs / rate
    if op.extra_flops:
        compute += op.extra_flops / hw.rate("fp32")
    moved = storage + (op.act_in + op.act_out) * a_bits / 8
    return max(compute, moved / hw.bandwidth) + hw.kernel_overhead_s


def price_node(node: GraphNode, t: int, sources: tuple[int, ...], mode: AttentionMode,
               compression: dict[str, Compression], hardware: Hardware | None) -> tuple[Row, ...]:  # fmt: skip
    """The priced rows of one node at ``t`` input frames (``sources``: see :mod:`planner.cost.formulas`)."""
    rows: list[Row] = []
    for op in COST_FORMULAS[node.kind](node, t, sources, mode):
        leaf = op.leaf
        comp = compression.get(op.path, FLOAT32) if leaf is not None and leaf.compressible else FLOAT32
        wb, ab, density, sp = _bits(comp)
        params = leaf.params if leaf is not None else 0
        storage = leaf_storage_bytes(leaf, comp) if leaf is not None else 0
        flops = 2 * op.macs + op.extra_flops
        bops = op.macs * wb * ab
        if sp is not None:
            bops = op.macs * wb * ab * comp.sparsity.n // comp.sparsity.m  # type: ignore[union-attr]
        lat = _latency(op, storage, wb, ab, sp, hardware) if hardware is not None else None
        if params == 0 and op.macs == 0 and op.extra_flops == 0:
            continue
        rows.append((op.path, op.kind, params, storage, op.macs, flops, bops, wb, ab, sp, lat))
    return tuple(rows)


class _Plan:
    """A graph turned into interned node keys (built once per graph object)."""

    __slots__ = ("entries", "lengths", "graph_ref", "__weakref__")

    def __init__(self, graph: EncoderGraph) -> None:
        self.entries: list[tuple[GraphNode, int, str, str | tuple[str, ...] | None, dict[str, Compression]]] = []
        main = [n for n in graph.nodes() if n.section != "heads"]
        prev: dict[str, str | None] = {}
        for a, b in zip([None, *main], main):
            prev[b.name] = a.name if a is not None else None
        for n in graph.nodes():
            comps = {lf.path: graph.compression[f"{n.name}.{lf.path}"] for lf in n.leaves
                     if f"{n.name}.{lf.path}" in graph.compression}  # fmt: skip
            static = (n.config, n.context, tuple(sorted(comps.items())))
            sid = _INTERN.setdefault(static, len(_INTERN))
            if n.section == "heads":
                src: Any = tuple(graph.head_sources(n))
                inp: str | None = main[-1].name
            else:
                src = n.name if isinstance(n.config, TimeRecovery) else None
                inp = prev[n.name]
            self.entries.append((n, sid, n.name, (inp, src), comps))  # type: ignore[arg-type]
        self.lengths: dict[int, dict[str, int]] = {}


_INTERN: dict[tuple[Any, ...], int] = {}
_PLANS: dict[int, _Plan] = {}
_MEMO: dict[tuple[Any, ...], tuple[Row, ...]] = {}
_TOTALS: dict[tuple[Any, ...], tuple[int, int, int, int, int, float | None]] = {}
_HW_IDS: dict[Hardware, int] = {}


def _plan(graph: EncoderGraph) -> _Plan:
    plan = _PLANS.get(id(graph))
    if plan is None:
        plan = _Plan(graph)
        _PLANS[id(graph)] = plan
        weakref.finalize(graph, _PLANS.pop, id(graph), None)
    return plan


def _samples(graph: EncoderGraph, seconds: float | None, samples: int | Iterable[int] | None) -> tuple[int, ...]:
    if samples is not None and seconds is not None:
        raise FieldError("samples", "give seconds or samples, not both")
    if samples is None:
        secs = 1.0 if seconds is None else seconds
        if secs <= 0:
            raise FieldError("seconds", f"{secs} must be positive")
        return (int(round(secs * graph.spec.input.sample_rate)),)
    out = (samples,) if isinstance(samples, int) else tuple(samples)
    if not out:
        raise FieldError("samples", "no utterance lengths given")
    for i, s in enumerate(out):
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise FieldError(f"samples[{i}]", f"{s!r} is not a positive number of samples")
    return out


def estimate(graph: EncoderGraph, *, seconds: float | None = None, samples: int | Iterable[int] | None = None,
             hardware: str | os.PathLike[str] | Hardware | None = None, attention: AttentionMode = "exact",
             layers: bool = True) -> Cost:  # fmt: skip
    """Prices a graph: parameters, storage, MACs, FLOPs, BOPs and (with ``hardware``) latency.

    Costs are per utterance of batch size 1, summed over the utterances given. Frame counts follow the
    frontend's kernels and strides as the materialized model computes them (:meth:`EncoderGraph.lengths`).

    Args:
        graph: the architecture.
        seconds: one utterance of this many seconds (default 1 s when ``samples`` is not given).
        samples: one utterance length in samples, or several (their costs are summed).
        hardware: a catalog name (``a100``), a YAML path or a :class:`Hardware`, for ``latency_s``.
        attention: ``exact`` counts the attended pairs of each attention kind; ``dense`` counts ``T x T``
            as the materialized model executes (masking a dense product), which DeepSpeed measures.
        layers: keep the per-leaf rows (``Cost.layers``); False saves a little time in a search loop.

    Returns:
        The :class:`Cost`.

    Raises:
        FieldError: a bad input specification. ConfigError: a bad hardware file.

    Example:
        >>> import planner
        >>> cost = planner.estimate(planner.load("studies/recycle-and-distill/armhubert-s.yaml"), seconds=1)
        >>> cost.params, cost.layers[0].name
        (22394080, 'frontend.0.conv_layers.0.conv')
    """
    if attention not in _MODES:
        raise FieldError("attention", f"{attention!r} is not allowed (allowed: exact, dense)")
    utterances = _samples(graph, seconds, samples)
    hw = load_hardware(hardware) if hardware is not None else None
    hw_id = None if hw is None else _HW_IDS.setdefault(hw, len(_HW_IDS))
    plan = _plan(graph)
    params = storage = macs = flops = bops = 0
    latency = 0.0
    parts = []
    for u, s in enumerate(utterances):
        lengths = plan.lengths.get(s)
        if lengths is None:
            lengths = graph.lengths(s)
            plan.lengths[s] = lengths
        first = graph.spec.input.frames(s)
        part = []
        for node, sid, name, (inp, src), comps in plan.entries:
            t = first if inp is None else lengths[inp]
            if src is None:
                sources: tuple[int, ...] = ()
            elif isinstance(src, str):
                sources = (lengths[src],)
            else:
                sources = tuple(lengths[x] for x in src)
            key = (sid, t, sources, attention, hw_id)
            tot = _TOTALS.get(key)
            if tot is None:
                rows = price_node(node, t, sources, attention, comps, hw)
                _MEMO[key] = rows
                lat = None if hw is None else sum(r[10] for r in rows)  # type: ignore[misc]
                tot = (sum(r[2] for r in rows), sum(r[3] for r in rows), sum(r[4] for r in rows),
                       sum(r[5] for r in rows), sum(r[6] for r in rows), lat)  # fmt: skip
                _TOTALS[key] = tot
            if u == 0:
                params += tot[0]
                storage += tot[1]
            macs += tot[2]
            flops += tot[3]
            bops += tot[4]
            if tot[5] is not None:
                latency += tot[5]
            if layers:
                part.append((name, _MEMO[key]))
        parts.append(tuple(part))
    return Cost(params, storage, macs, flops, bops, latency if hw is not None else None, utterances, attention,
                hw.name if hw is not None else None, tuple(parts) if layers else ())  # fmt: skip
