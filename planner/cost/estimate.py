""":func:`estimate`: the analytic cost of a graph, a pure function of the graph and the input specification.

Repeated layers are identical, so every node is priced once per (config, context, compression of its
leaves, the map a reuse layer applies, input frames, attention mode, BOP convention, hardware) and
memoized; a graph is turned once into a plan of interned node keys, so pricing a graph is one dictionary
look-up and a few additions per node.
"""

from __future__ import annotations

import itertools
import operator
import os
import weakref
from collections.abc import Iterable
from typing import Any

from planner.cost._types import Cost, Row
from planner.cost.bops import BopsConvention, check_bops_convention, nvda_seconds, op_bops, op_flops
from planner.cost.formulas import COST_FORMULAS, AttentionMode, Op
from planner.cost.hardware import Hardware, load_hardware, precision_of
from planner.cost.storage import leaf_storage_bytes
from planner.errors import FieldError
from planner.ir.attention import AttentionConfig, ReuseAttention
from planner.ir.compression import FLOAT32, Compression
from planner.ir.graph import EncoderGraph, GraphNode, compression_id, node_key
from planner.ir.kinds.layers import TimeRecovery

__all__ = ["estimate", "price_node", "shortest_input"]

_MODES = ("exact", "dense")


def _bits(comp: Compression, product: bool = False) -> tuple[int, int, float, str | None]:
    """Bit widths of the two operands (weight and input; a product's second input has its input's width),
    density and N:M text."""
    if product:
        return comp.activation.bits, comp.activation.bits, 1.0, None
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
               compression: dict[str, Compression], hardware: Hardware | None, pattern: AttentionConfig | None = None,
               bops: BopsConvention = "bayesian_bits") -> tuple[Row, ...]:  # fmt: skip
    """The priced rows of one node at ``t`` input frames (``sources``, ``pattern``: see
    :mod:`planner.cost.formulas`; ``bops``: see :mod:`planner.cost.bops`)."""
    rows: list[Row] = []
    for op in COST_FORMULAS[node.kind](node, t, sources, mode, pattern):
        leaf = op.leaf
        comp = compression.get(op.path, FLOAT32) if leaf is not None and leaf.quantizable else FLOAT32
        wb, ab, density, sp = _bits(comp, leaf is not None and leaf.is_product)
        params = leaf.params if leaf is not None else 0
        storage = leaf_storage_bytes(leaf, comp) if leaf is not None else 0
        n, m = (comp.sparsity.n, comp.sparsity.m) if sp is not None else (1, 1)  # type: ignore[union-attr]
        flops = op_flops(op.macs, op.extra_flops, wb, ab, bops)
        jeon = op_bops(op.macs, wb, ab, "jeon2023", n, m)
        row_bops = jeon if bops == "jeon2023" else op_bops(op.macs, wb, ab, bops, n, m)
        lat = _latency(op, storage, wb, ab, sp, hardware) if hardware is not None else None
        if params == 0 and op.macs == 0 and op.extra_flops == 0:
            continue
        rows.append((op.path, op.kind, params, storage, op.macs, flops, row_bops, wb, ab, sp, lat,
                     nvda_seconds(jeon, wb, ab)))  # fmt: skip
    return tuple(rows)


def _applied_pattern(layers: list[GraphNode], node: GraphNode) -> AttentionConfig | None:
    """The attention map a node's products apply: its own, or for a reuse layer its root source's."""
    att = getattr(node.config, "attention", None)
    seen = 0
    while isinstance(att, ReuseAttention) and seen <= len(layers):  # a reuse of a reuse: the root's map
        att = getattr(layers[att.source].config, "attention", None)
        seen += 1
    return att


class _Plan:
    """A graph turned into interned node keys (built once per graph object)."""

    __slots__ = ("entries", "lengths", "shape", "__weakref__")

    def __init__(self, graph: EncoderGraph) -> None:
        self.entries: list[tuple[GraphNode, int, str, Any, dict[str, Compression], AttentionConfig | None]] = []
        nodes = graph.nodes()
        keys = graph._node_keys if graph._node_keys is not None else [node_key(n) for n in nodes]
        # The wiring (which node's length feeds which) and the frame counts depend only on the node keys and
        # sections (names are section.index), so graphs of the same shape share them.
        self.shape = (tuple(keys), tuple(map(_SECTION, nodes)))
        wiring = _WIRING.get(self.shape)
        if wiring is None:
            wiring = _wiring(graph, nodes)
            _trim(_WIRING, _CAP // 10)
            _WIRING[self.shape] = wiring
        per_node = graph._node_compression
        sigs = graph._node_signatures
        if per_node is None or sigs is None:  # a graph not made by build_graph: split "layers.3.ffn.fc1"
            per_node, lists = {}, {}
            ids: dict[int, int] = {}  # by id: graph.compression keeps the objects alive, so ids stay unique
            for key, comp in graph.compression.items():
                section, index, leaf = key.split(".", 2)
                cid = ids.get(id(comp)) or ids.setdefault(id(comp), compression_id(comp))
                per_node.setdefault(f"{section}.{index}", {})[leaf] = comp
                lists.setdefault(f"{section}.{index}", []).append((leaf, cid))
            sigs = {name: tuple(sig) for name, sig in lists.items()}
        # A node's prices depend on its config and context (node_key) and on its leaves' compression (the
        # signature ((leaf, compression_id), ...), in the order the rules assigned them: equal nodes under
        # equal rules give equal keys); both are computed once, when the graph is built.
        # A reuse layer's prices depend on its source's map too, which its own node_key does not name.
        for n, nkey, (inp, src, pattern) in zip(nodes, keys, wiring):
            name = n.name
            comps = per_node.get(name, _NONE)
            sig = sigs.get(name, ())
            reused = isinstance(getattr(n.config, "attention", None), ReuseAttention)
            sid = _intern(_INTERN, (nkey, sig, pattern) if reused else (nkey, sig))
            self.entries.append((n, sid, n.name, (inp, src), comps, pattern))
        self.lengths: dict[int, dict[str, int]] = {}


_Wire = tuple[str | None, str | tuple[str, ...] | None, AttentionConfig | None]


def _wiring(graph: EncoderGraph, nodes: list[GraphNode]) -> list[_Wire]:
    """Per node: the node whose output length it receives (None: the input), its length sources, and the
    attention map its products apply (a reuse layer: its source's; the plan shape names every node's
    config, so graphs of one shape share it)."""
    main = [n for n in nodes if n.section != "heads"]
    layers = [n for n in nodes if n.section == "layers"]
    prev: dict[str, str | None] = {}
    for a, b in zip([None, *main], main):
        prev[b.name] = a.name if a is not None else None
    out: list[_Wire] = []
    for n in nodes:
        if n.section == "heads":
            out.append((main[-1].name, tuple(graph.head_sources(n)), None))
        else:
            out.append((prev[n.name], n.name if isinstance(n.config, TimeRecovery) else None,
                        _applied_pattern(layers, n) if n.section == "layers" else None))  # fmt: skip
    return out


_SECTION = operator.attrgetter("section")


# Global memos, shared by every graph (a search meets the same layer configs again and again). Each is
# capped: past its cap the older half is dropped (insertion order), so a long search keeps bounded memory.
# Interned ids come from a counter and are never reused, so a dropped entry only costs a recomputation.
_CAP = 200_000
_COUNTER = itertools.count(1)  # from 1: never a false int
_INTERN: dict[tuple[Any, ...], int] = {}  # (node_key, ((leaf, compression_id), ...)) -> node id
_PLANS: dict[int, _Plan] = {}
_MEMO: dict[tuple[Any, ...], tuple[tuple[int, int, int, int, int, float | None, float], tuple[Row, ...]]] = {}
_HW_IDS: dict[Hardware, int] = {}
_WIRING: dict[tuple[Any, ...], list[_Wire]] = {}  # plan shape -> wiring
_LENGTHS: dict[tuple[Any, ...], dict[str, int]] = {}  # (plan shape, input spec, samples) -> frames per node
_NONE: dict[str, Compression] = {}  # shared by the nodes without compression (never written to)


def _trim(memo: dict[Any, Any], cap: int = _CAP) -> None:
    """Drops the older half of ``memo`` once it holds more than ``cap`` entries."""
    if len(memo) > cap:
        for key in list(itertools.islice(memo, len(memo) - cap // 2)):
            del memo[key]


def _intern(table: dict[Any, int], key: Any) -> int:
    value = table.get(key)
    if value is None:
        _trim(table)
        value = table[key] = next(_COUNTER)
    return value


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


def _empty_node(graph: EncoderGraph, samples: int) -> str | None:
    """The first node left with no frames by an utterance of ``samples`` samples (``input``: the framing)."""
    if graph.spec.input.frames(samples) < 1:
        return "input"
    return next((name for name, t in graph.lengths(samples).items() if t < 1), None)


def shortest_input(graph: EncoderGraph) -> int:
    """The fewest samples an utterance needs so that every node gets at least one frame.

    Shorter utterances make the materialized model raise (a convolution longer than its input), so
    :func:`estimate` refuses them. Frame counts never decrease with the input length, so this is a
    bisection over :meth:`EncoderGraph.lengths`.

    Example:
        >>> import planner
        >>> shortest_input(planner.load("studies/hubert-base.yaml"))  # the conv extractor's receptive field
        400
    """
    hi = 1
    while _empty_node(graph, hi) is not None:
        hi *= 2
        if hi > 2**48:  # unreachable for any architecture that builds: frames grow with the input
            raise FieldError("frontend", "no utterance length gives every node a frame")
    lo = hi // 2  # lo has an empty node (or is 0), hi has none
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _empty_node(graph, mid) is None:
            hi = mid
        else:
            lo = mid
    return hi


def _too_short(graph: EncoderGraph, samples: int, path: str, node: str, seconds: float | None) -> FieldError:
    rate = graph.spec.input.sample_rate
    need = shortest_input(graph)
    where = "the input framing" if node == "input" else node
    what = f"{samples} samples" if seconds is None else f"{seconds:g} s ({samples} samples)"
    return FieldError(path, f"an utterance of {what} leaves {where} with no frames, which the model "
                            f"cannot run (the shortest this architecture accepts: {need} samples, "
                            f"{1000 * need / rate:g} ms at {rate} Hz)")  # fmt: skip


def estimate(graph: EncoderGraph, *, seconds: float | None = None, samples: int | Iterable[int] | None = None,
             hardware: str | os.PathLike[str] | Hardware | None = None, attention: AttentionMode = "exact",
             bops: BopsConvention = "bayesian_bits", layers: bool = True) -> Cost:  # fmt: skip
    """Prices a graph: parameters, storage, MACs, FLOPs, BOPs, ``nvda_est_time`` and (with ``hardware``)
    the roofline latency.

    Costs are per utterance of batch size 1, summed over the utterances given. Frame counts follow the
    frontend's kernels and strides as the materialized model computes them (:meth:`EncoderGraph.lengths`);
    an utterance that leaves a node with no frames (shorter than the frontend's receptive field) is
    refused, as the model cannot run it (:func:`shortest_input`).

    Args:
        graph: the architecture.
        seconds: one utterance of this many seconds (default 1 s when ``samples`` is not given).
        samples: one utterance length in samples, or several (their costs are summed).
        hardware: a catalog name (``a100``), a YAML path or a :class:`Hardware`, for ``latency_s``.
        attention: ``exact`` counts the attended pairs of each attention kind (a reuse layer: its source's
            pairs); ``dense`` counts ``T x T`` as the materialized model executes (masking a dense product),
            which DeepSpeed measures.
        bops: the BOP and FLOP convention: ``bayesian_bits`` (default: weight bits x activation bits per
            MAC) or ``jeon2023`` (Jeon et al.'s Table 1: 32 per float MAC, 1 per binarized MAC, FLOPs of
            float MACs only); see :mod:`planner.cost.bops`.
        layers: keep the per-leaf rows (``Cost.layers``); False saves a little time in a search loop.

    Returns:
        The :class:`Cost`.

    Raises:
        FieldError: a bad input specification (an utterance too short for the frontend, with the minimum),
            an unknown attention mode or BOP convention. ConfigError: a bad hardware file.

    Example:
        >>> import planner
        >>> cost = planner.estimate(planner.load("studies/recycle-and-distill/armhubert-s.yaml"), seconds=1)
        >>> cost.params, cost.layers[0].name
        (22394080, 'frontend.0.conv_layers.0.conv')
    """
    if attention not in _MODES:
        raise FieldError("attention", f"{attention!r} is not allowed (allowed: exact, dense)")
    convention = check_bops_convention(bops)
    utterances = _samples(graph, seconds, samples)
    hw = load_hardware(hardware) if hardware is not None else None
    hw_id = None if hw is None else _intern(_HW_IDS, hw)
    plan = _plan(graph)
    params = storage = macs = flops = total_bops = 0
    latency = nvda = 0.0
    parts = []
    for u, s in enumerate(utterances):
        lengths = plan.lengths.get(s)
        if lengths is None:
            lkey = (plan.shape, graph.spec.input, s)
            lengths = _LENGTHS.get(lkey)
            if lengths is None:
                lengths = graph.lengths(s)
                # only runnable lengths are memoized, so every too-short utterance reaches this check
                if graph.spec.input.frames(s) < 1 or min(lengths.values()) < 1:
                    where = "seconds" if samples is None else f"samples[{u}]"
                    secs = None if samples is not None else (1.0 if seconds is None else seconds)
                    raise _too_short(graph, s, where, _empty_node(graph, s) or "input", secs)
                _trim(_LENGTHS, _CAP // 10)
                _LENGTHS[lkey] = lengths  # shared by graphs of this shape; only read
            _trim(plan.lengths, 4096)
            plan.lengths[s] = lengths
        first = graph.spec.input.frames(s)
        part = []
        for node, sid, name, (inp, src), comps, pattern in plan.entries:
            t = first if inp is None else lengths[inp]
            if src is None:
                sources: tuple[int, ...] = ()
            elif isinstance(src, str):
                sources = (lengths[src],)
            else:
                sources = tuple(lengths[x] for x in src)
            key = (sid, t, sources, attention, convention, hw_id)
            hit = _MEMO.get(key)
            if hit is None:
                rows = price_node(node, t, sources, attention, comps, hw, pattern, convention)
                lat = None if hw is None else sum(r[10] for r in rows)  # type: ignore[misc]
                tot = (sum(r[2] for r in rows), sum(r[3] for r in rows), sum(r[4] for r in rows),
                       sum(r[5] for r in rows), sum(r[6] for r in rows), lat, sum(r[11] for r in rows))  # fmt: skip
                _trim(_MEMO)
                hit = _MEMO[key] = (tot, rows)
            tot = hit[0]
            if u == 0:
                params += tot[0]
                storage += tot[1]
            macs += tot[2]
            flops += tot[3]
            total_bops += tot[4]
            if tot[5] is not None:
                latency += tot[5]
            nvda += tot[6]
            if layers:
                part.append((name, hit[1]))
        parts.append(tuple(part))
    return Cost(params, storage, macs, flops, total_bops, latency if hw is not None else None, utterances, attention,
                hw.name if hw is not None else None, nvda_est_time=nvda, bops_convention=convention,
                _parts=tuple(parts) if layers else ())  # fmt: skip
