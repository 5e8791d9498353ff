"""The encoder graph IR: typed nodes in a networkx DiGraph, with shapes inferred and references resolved.

Nodes are named ``frontend.I``, ``layers.I``, ``post.I`` and ``heads.I`` (``I`` counts repeats expanded).
Edges carry a ``type``: ``data`` (the main path), ``attention_map`` (a reuse layer reads its source's
attention probabilities), ``skip`` (time recovery reads the input of its time reduction) and ``head``
(a projection head reads a layer's output).

Building a graph checks, and reports together, everything that makes an architecture unable to work:
a node fed the wrong domain or width, widths not divisible by heads, reuse of a later layer or of a layer
with another head count or sequence length, N:M or sub-channel groups that do not divide a leaf's inputs,
compression selectors that match nothing.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import networkx as nx

from planner.config import join
from planner.errors import FieldError, GraphError
from planner.ir.attention import ReuseAttention
from planner.ir.compression import FLOAT32, Compression, CompressionRule
from planner.ir.kinds import NodeContext, NodeKind
from planner.ir.kinds.heads import select_layers
from planner.ir.kinds.layers import TimeRecovery, TimeReduction
from planner.ir.leaf import Leaf
from planner.ir.spec import SECTIONS, ArchSpec

__all__ = ["EncoderGraph", "GraphNode", "build_graph"]


@dataclass(frozen=True)
class GraphNode:
    """A node of the graph with its inferred shapes.

    Attributes:
        name: ``section.index``.
        section: ``frontend``, ``layers``, ``post`` or ``heads``.
        index: position in its section (repeats expanded).
        config: the node's kind config (with reuse patterns applied to ``attention``).
        context: what the node receives (width, domain).
        out_width: width of what it produces.
        leaves: its parameterised operations.
        path: field path of the node in the file, for messages.
    """

    name: str
    section: str
    index: int
    config: Any
    context: NodeContext
    out_width: int
    leaves: tuple[Leaf, ...]
    path: str

    @property
    def kind(self) -> str:
        return self.config.kind


class EncoderGraph:
    """The IR of one encoder architecture (built by :func:`planner.load` or :func:`build_graph`).

    Attributes:
        spec: the architecture document it was built from (what :func:`planner.dump` writes).
        nx: the networkx DiGraph; node attributes ``node`` hold the :class:`GraphNode`.
        compression: resolved compression of every compressible leaf, keyed by its module path.
    """

    def __init__(self, spec: ArchSpec, nodes: list[GraphNode], compression: dict[str, Compression]) -> None:
        self.spec = spec
        self._nodes = nodes
        self._by_name = {n.name: n for n in nodes}
        self.compression = compression
        # set by build_graph, for the cost model: node_key per node, compression by node then leaf path
        self._node_keys: list[int] | None = None
        self._node_compression: dict[str, dict[str, Compression]] | None = None
        self._node_signatures: dict[str, tuple[tuple[str, int], ...]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # node keys and compression ids name entries of this process's memo tables: another process (a
        # spawned search worker) recomputes them
        state = dict(self.__dict__)
        state.update(_node_keys=None, _node_signatures=None)
        return state

    @cached_property
    def nx(self) -> nx.DiGraph:
        """The networkx DiGraph, built on first access (a search prices graphs without ever reading it)."""
        g = nx.DiGraph(name=self.spec.name)
        nodes = self._nodes
        for n in nodes:
            g.add_node(n.name, node=n, kind=n.kind, section=n.section)
        main = [n for n in nodes if n.section != "heads"]
        for a, b in zip(main, main[1:]):
            g.add_edge(a.name, b.name, type="data")
        for n in nodes:
            cfg = n.config
            if isinstance(getattr(cfg, "attention", None), ReuseAttention):
                g.add_edge(f"layers.{cfg.attention.source}", n.name, type="attention_map")
            if isinstance(cfg, TimeRecovery):
                g.add_edge(self.layer_input(cfg.source), n.name, type="skip")
            if n.section == "heads":
                for src in self.head_sources(n):
                    g.add_edge(src, n.name, type="head")
        return g

    # -- structure -----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def width(self) -> int:
        return self.spec.width

    def nodes(self, section: str | None = None) -> list[GraphNode]:
        """Nodes in execution order, optionally of one section."""
        return [n for n in self._nodes if section is None or n.section == section]

    def node(self, name: str) -> GraphNode:
        try:
            return self._by_name[name]
        except KeyError:
            return self.nx.nodes[name]["node"]  # the error networkx gives for an unknown node

    def layer_input(self, index: int) -> str:
        """Name of the node whose output feeds ``layers.index``."""
        main = [n.name for n in self._nodes if n.section != "heads"]
        pos = main.index(f"layers.{index}")
        return main[pos - 1]

    def head_sources(self, head: GraphNode) -> list[str]:
        if hasattr(head.config, "layer_indices"):
            return [f"layers.{i}" for i in head.config.layer_indices(len(self.nodes("layers")))]
        last = [n for n in self._nodes if n.section != "heads"][-1]
        return [last.name]

    def leaves(self) -> list[tuple[str, GraphNode, Leaf]]:
        """Every leaf as ``(module path, node, leaf)``, in execution order."""
        return [(f"{n.name}.{leaf.path}", n, leaf) for n in self._nodes for leaf in n.leaves]

    @cached_property
    def param_count(self) -> int:
        """Trainable parameters of the materialized model."""
        return sum(leaf.params for _, _, leaf in self.leaves())

    # -- lengths -------------------------------------------------------------------------------------
    def lengths(self, samples: int) -> dict[str, int]:
        """Output frames of every node for one utterance of ``samples`` samples (as the model computes them)."""
        out: dict[str, int] = {}
        length = self.spec.input.frames(samples)
        layer_in: dict[int, int] = {}
        for n in self._nodes:
            if n.section == "heads":
                continue
            if n.section == "layers":
                layer_in[n.index] = length
            if isinstance(n.config, TimeRecovery):
                length = layer_in[n.config.source]
            else:
                length = n.config.out_length(length)
            out[n.name] = length
        for n in self.nodes("heads"):
            out[n.name] = out[self.head_sources(n)[-1]]
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EncoderGraph) and self.spec == other.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __repr__(self) -> str:
        return f"EncoderGraph({self.name!r}, nodes={len(self._nodes)}, params={self.param_count})"


def _apply_reuse(spec: ArchSpec, layers: list[NodeKind], errors: list[FieldError]) -> list[NodeKind]:
    att = [i for i, n in enumerate(layers) if n.has_attention]
    if spec.reuse == "none":
        return layers
    if isinstance(spec.reuse, str):
        size, groups = (int(v) for v in spec.reuse.split("by"))
        if size * groups != len(att):
            errors.append(FieldError("reuse", f"{spec.reuse} covers {size * groups} attention layers, the architecture "
                                     f"has {len(att)} (use a pattern AbyB with A x B = {len(att)})"))  # fmt: skip
            return layers
        pattern = [k - k % size for k in range(len(att))]
    else:
        pattern = list(spec.reuse)
        if len(pattern) != len(att):
            errors.append(FieldError("reuse", f"the list has {len(pattern)} entries, the architecture has "
                                     f"{len(att)} attention layers (one entry per attention layer)"))  # fmt: skip
            return layers
    out = list(layers)
    for k, src in enumerate(pattern):
        if src > k:
            errors.append(FieldError(f"reuse[{k}]", f"attention layer {k} cannot reuse the later layer {src} "
                                     "(a layer reuses an earlier map, or its own index to compute one)"))  # fmt: skip
            continue
        while pattern[src] != src:  # a reuse of a reuse is a reuse of the root map
            src = pattern[src]
        if src != k:
            node = layers[att[k]]
            if node.attention.kind != "full":
                errors.append(FieldError(f"reuse[{k}]", f"layer {att[k]} has attention {node.attention.kind!r}; a reuse "
                                         "pattern replaces only full attention"))  # fmt: skip
                continue
            out[att[k]] = dataclasses.replace(node, attention=ReuseAttention(source=att[src]))
    return out


def _node_path(spec: ArchSpec, section: str, index: int) -> str:
    """Field path of the expanded node ``index`` of ``section`` in the file."""
    count = 0
    for b, block in enumerate(getattr(spec, section)):
        if index < count + block.repeat:
            return join(section, b)
        count += block.repeat
    return section


def _selected_nodes(rule: CompressionRule, nodes: list[GraphNode], layer_count: int, path: str) -> list[GraphNode]:
    sel = rule.layers
    if sel == "all":
        return nodes
    if sel in ("frontend", "layers", "post", "heads"):
        return [n for n in nodes if n.section == sel]
    idx = set(select_layers(sel, layer_count, path))
    return [n for n in nodes if n.section == "layers" and n.index in idx]


def _leaf_matches(leaf: Leaf, selectors: tuple[str, ...]) -> bool:
    if not selectors:
        return True
    return any(s in leaf.tags or fnmatch.fnmatchcase(leaf.path, s) for s in selectors)


def _resolve_compression(spec: ArchSpec, nodes: list[GraphNode], errors: list[FieldError]
                         ) -> tuple[dict[str, Compression], dict[str, dict[str, Compression]],
                                    dict[str, tuple[tuple[str, int], ...]]]:  # fmt: skip
    """The compression of every compressed leaf, by module path and by node name then leaf path, and per node
    its signature ``((leaf path, compression_id), ...)`` (what the cost model keys a node's prices on)."""
    plan: dict[str, Compression] = {}
    origin: dict[tuple[str, str], int] = {}  # (leaf, field) -> index of the rule that set it last
    where: dict[str, tuple[str, Leaf]] = {}  # module path -> (node name, leaf), for the leaves rules touch
    layer_count = len([n for n in nodes if n.section == "layers"])
    for r, rule in enumerate(spec.compression):
        rpath = f"compression[{r}]"
        try:
            targets = _selected_nodes(rule, nodes, layer_count, join(rpath, "layers"))
        except FieldError as err:
            errors.append(err)
            continue
        hit = 0
        fields = [name for name in ("weight", "sparsity") if getattr(rule, name) is not None]
        matches: dict[tuple[str, frozenset[str]], bool] = {}  # leaves of repeated layers share path and tags
        applied: dict[int, tuple[Compression, Compression]] = {}  # id(base) -> (base kept alive, rule.apply(base))
        # attention products take only the activation format (they have no weight to quantize or prune)
        product_rule = rule.for_products() if rule.activation is not None else None
        product_applied: dict[int, tuple[Compression, Compression]] = {}
        for node in targets:
            for lf in node.leaves:
                if lf.compressible:
                    this_rule, memo = rule, applied
                elif lf.is_product and product_rule is not None:
                    this_rule, memo = product_rule, product_applied
                else:
                    continue
                mkey = (lf.path, lf.tags)
                match = matches.get(mkey)
                if match is None:
                    match = matches[mkey] = _leaf_matches(lf, rule.modules)
                if match:
                    key = f"{node.name}.{lf.path}"
                    base = plan.get(key, FLOAT32)
                    done = memo.get(id(base))
                    if done is None:
                        done = memo[id(base)] = (base, this_rule.apply(base))
                    plan[key] = done[1]
                    where[key] = (node.name, lf)
                    if lf.compressible:
                        for name in fields:
                            origin[key, name] = r
                    hit += 1
        if hit == 0:
            selectable = (lambda lf: lf.quantizable) if product_rule is not None else (lambda lf: lf.compressible)  # noqa: E731
            what = "linear, convolution or attention product" if product_rule is not None else "linear or convolution"
            tags = sorted({t for n in targets for lf in n.leaves if selectable(lf) for t in lf.tags})
            errors.append(FieldError(join(rpath, "modules"), f"{list(rule.modules)} selects no {what} in "
                                     f"layers {rule.layers!r} (tags there: {', '.join(tags) or 'none'})"))  # fmt: skip
    problems: dict[tuple[str, str], list[str]] = {}
    for key, comp in plan.items():
        lf = where[key][1]
        if comp.sparsity is not None and lf.fan_in % comp.sparsity.m:
            msg = (
                f"N:M sparsity {comp.sparsity} needs the inputs per output channel to be a multiple of "
                f"{comp.sparsity.m}, but {{leaves}} have {lf.fan_in} (exclude them with modules:, or choose another M)"
            )
            problems.setdefault((f"compression[{origin[key, 'sparsity']}].sparsity", msg), []).append(key)
        w = comp.weight
        if w.granularity == "subchannel":
            groups = w.group_count(lf.fan_in)
            bad = groups < 1 or lf.fan_in % groups or (w.group_size is not None and lf.fan_in % w.group_size)
            if bad:
                what = (
                    f"sub-channel groups of {w.group_size} inputs"
                    if w.group_size is not None
                    else f"{w.groups} sub-channel groups"
                )
                msg = f"{{leaves}} have {lf.fan_in} inputs per channel, which cannot be split into {what} (choose a divisor of {lf.fan_in})"
                problems.setdefault((f"compression[{origin[key, 'weight']}].weight", msg), []).append(key)
    for (path, msg), keys in problems.items():
        shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        errors.append(FieldError(path, msg.format(leaves=shown)))
    flat: dict[str, Compression] = {}
    per_node: dict[str, dict[str, Compression]] = {}
    sigs: dict[str, list[tuple[str, int]]] = {}
    ids: dict[int, int] = {}  # by id (the values are the few objects the rules produced, alive in plan) -> 0 if
    for key, comp in plan.items():  # it is the identity, else compression_id
        cid = ids.get(id(comp))
        if cid is None:
            cid = ids[id(comp)] = 0 if comp.is_identity else compression_id(comp)
        if cid:
            flat[key] = comp
            name, lf = where[key]
            per_node.setdefault(name, {})[lf.path] = comp
            sigs.setdefault(name, []).append((lf.path, cid))
    return flat, per_node, {name: tuple(sig) for name, sig in sigs.items()}


_COMPRESSION_IDS: dict[Compression, int] = {}


def compression_id(comp: Compression) -> int:
    """An int (never 0) equal for equal compressions while cached (capped like the leaves below)."""
    cid = _COMPRESSION_IDS.get(comp)
    if cid is None:
        if len(_COMPRESSION_IDS) >= _LEAVES_CAP:
            for old in list(itertools.islice(_COMPRESSION_IDS, _LEAVES_CAP // 2)):
                del _COMPRESSION_IDS[old]
        cid = _COMPRESSION_IDS[comp] = next(_KEYS)
    return cid


_LEAVES: dict[tuple[Any, NodeContext], tuple[tuple[Leaf, ...], int]] = {}
_LEAVES_CAP = 4096
_KEYS = itertools.count(1)


def _leaves_and_key(cfg: Any, ctx: NodeContext) -> tuple[tuple[Leaf, ...], int]:
    """``cfg.leaves(ctx)`` and an int naming ``(cfg, ctx)`` by value, memoized.

    Leaves are a pure function of the frozen config and its context, and a search builds the same few
    layer configs in every candidate. Equal ``(cfg, ctx)`` get the same int while their entry is cached; past
    the cap the older half is dropped, and a new entry gets a new int (never reused), so the cost model's
    memo keyed on it only misses.
    """
    key = (cfg, ctx)
    hit = _LEAVES.get(key)
    if hit is None:
        leaves = tuple(cfg.leaves(ctx))
        if len(_LEAVES) >= _LEAVES_CAP:
            for old in list(itertools.islice(_LEAVES, _LEAVES_CAP // 2)):
                del _LEAVES[old]
        hit = _LEAVES[key] = (leaves, next(_KEYS))
    return hit


def node_key(node: GraphNode) -> int:
    """An int equal for nodes of equal config and context (what the cost model memoizes prices on)."""
    return _leaves_and_key(node.config, node.context)[1]


def build_graph(spec: ArchSpec, source: str | None = None) -> EncoderGraph:
    """Infers shapes, resolves references and compression, and returns the :class:`EncoderGraph`.

    Raises:
        GraphError: every problem found, each with its field path.
    """
    errors: list[FieldError] = []
    sections = {s: spec.expanded(s) for s in SECTIONS}
    sections["layers"] = _apply_reuse(spec, sections["layers"], errors)
    layer_count = len(sections["layers"])
    inp = spec.input
    domain = inp.kind
    width = 1 if domain == "waveform" else int(inp.n_mels or 0)
    nodes: list[GraphNode] = []
    keys: list[int] = []  # node_key of each node, known once its leaves are
    layer_meta: dict[int, tuple[str, int | None, int]] = {}  # index -> (kind, heads, time-resolution id)
    resolution = resolutions = 0  # a time reduction opens a new sequence rate; reuse needs the same one
    before: dict[int, int] = {}  # time_reduction index -> the rate before it, restored by its recovery
    last_main_width, last_domain = width, domain
    for section in SECTIONS:
        for i, cfg in enumerate(sections[section]):
            path = _node_path(spec, section, i)
            if section == "heads":
                ctx = NodeContext(spec.width, last_main_width, last_domain, inp.n_mels, i, layer_count)
            else:
                ctx = NodeContext(spec.width, width, domain, inp.n_mels, i, layer_count)
            try:
                cfg.validate(ctx)
                if section == "layers":
                    _check_layer_refs(cfg, i, layer_meta, resolution)
                leaves, nkey = _leaves_and_key(cfg, ctx)
                keys.append(nkey)
            except FieldError as err:
                errors.append(FieldError(join(path, err.path) if err.path else path, err.message))
                leaves = ()
            out_w = cfg.out_width(ctx)
            nodes.append(GraphNode(f"{section}.{i}", section, i, cfg, ctx, out_w, leaves, path))
            if section == "layers":
                if isinstance(cfg, TimeReduction):
                    before[i] = resolution
                    resolutions += 1
                    resolution = resolutions
                elif isinstance(cfg, TimeRecovery) and cfg.source in before:
                    resolution = before[cfg.source]  # back at the rate before the reduction
                layer_meta[i] = (cfg.kind, getattr(cfg, "heads", None), resolution)
            if section != "heads":
                width, domain = out_w, cfg.out_domain(ctx)
                last_main_width, last_domain = width, domain
    if not errors and domain != "hidden":
        errors.append(FieldError("frontend", "no frontend turns the input into hidden states"))
    compression, per_node, sigs = _resolve_compression(spec, nodes, errors) if not errors else ({}, {}, {})
    if errors:
        unique = {str(e): e for e in errors}  # a repeated block reports its problem once
        raise GraphError(unique.values(), source)
    graph = EncoderGraph(spec, nodes, compression)
    graph._node_keys = keys
    graph._node_compression = per_node
    graph._node_signatures = sigs
    return graph


def _check_layer_refs(cfg: Any, index: int, meta: dict[int, tuple[str, int | None, int]], resolution: int) -> None:
    att = getattr(cfg, "attention", None)
    if isinstance(att, ReuseAttention):
        src = att.source
        if src >= index:
            earlier = {0: "none, layer 0 must compute its own map", 1: "layer 0"}
            allowed = earlier.get(index, f"an earlier layer, 0-{index - 1}")
            raise FieldError("attention.source", f"layer {index} cannot reuse the map of layer {src} "
                             f"(allowed: {allowed})")  # fmt: skip
        kind, heads, res = meta[src]
        if heads is None:
            raise FieldError("attention.source", f"layers.{src} ({kind}) has no attention map to reuse")
        if heads != cfg.heads:
            raise FieldError("attention.source", f"layers.{src} has {heads} heads, this layer {cfg.heads} "
                             "(a reused map needs the same head count)")  # fmt: skip
        if res != resolution:
            raise FieldError("attention.source", f"layers.{src} runs at another sequence length (a time "
                             "reduction lies between them)")  # fmt: skip
    if isinstance(cfg, TimeRecovery):
        src = cfg.source
        if src >= index or src not in meta or meta[src][0] != "time_reduction":
            earlier = [str(i) for i, m in meta.items() if m[0] == "time_reduction"]
            raise FieldError("source", f"{src} is not an earlier time_reduction layer (allowed: the index of a "
                             f"time_reduction before this layer: {', '.join(earlier) or 'there is none'})")  # fmt: skip
