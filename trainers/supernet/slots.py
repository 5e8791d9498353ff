"""Which shared tensor of a supernet each parameter of a candidate's model reads: its *slot*.

A candidate's model is the planner's own (:func:`planner.compress.materialize` of its graph), so its
parameter names follow the graph (``layers.3.attention.q_proj.weight``). A parameter's slot is that name with
three changes, which are the weight-sharing rules (once-for-all / BigNAS / LightHuBERT):

* the node's **kind** joins its index (``layers.3:conformer/...``): block-kind and frontend choices keep
  separate weights per option (single-path one-shot), while everything one kind's options have in common is
  shared; attention kinds (full, local, sparse) and reuse patterns share the block's projections (a layer
  that reuses another's map has no Q/K of its own and reads the V/O of its slot);
* a compressed leaf's float weight (``q_proj.parametrizations.weight.original``) is the same slot as the
  float leaf's ``q_proj.weight``: int8, int4 and 2:4 candidates are fake-quantized and masked views of the
  one float weight (a quantization-aware supernet, as APQ); weight norm's ``original0`` / ``original1`` are
  ``weight#g`` / ``weight#v``;
* a learned quantizer parameter (an activation quantizer's ``alpha``) gets the format it quantizes to
  (``@a8s``): a step size learned for 8 bits is not one for 2 bits.

Shapes are shared by slicing: every dimension takes its **leading** entries (channels for width, FFN width
and heads, layers through the index), except the kernel dimensions of a convolution's weight, which take a
**centre crop** (a 3-tap kernel is the middle of the 7-tap one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from planner.compress import materialize
from planner.ir.compression import Compression
from planner.ir.graph import EncoderGraph, GraphNode
from planner.nn.builders import BUILDERS

__all__ = ["Slot", "slot_shapes", "slot_table"]

_SECTIONS = ("frontend", "layers", "post", "heads")
_ORIGINAL = re.compile(r"\.parametrizations\.(\w+)\.original(\d*)$")
_WEIGHT_NORM = {"0": "g", "1": "v"}  # torch's weight_norm parametrization: original0 = g, original1 = v
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Slot:
    """Where one parameter of a candidate's model lives in the supernet.

    Attributes:
        key: the shared tensor's name.
        kernel_dims: the dimensions cropped around their centre (a convolution weight's kernel); every
            other dimension takes its leading entries.
    """

    key: str
    kernel_dims: tuple[int, ...] = ()


def _format(comp: Compression | None, quantizer: str) -> str:
    """``@w4s`` / ``@a8u``: the format a learned quantizer parameter belongs to."""
    if comp is None:
        return ""
    if quantizer.startswith("parametrizations"):
        w = comp.weight
        return f"@w{w.bits}{'s' if w.symmetric else 'u'}{w.granularity[:3]}{w.groups or w.group_size or ''}"
    a = comp.activation
    return f"@a{a.bits}{'s' if a.symmetric else 'u' if a.symmetric is not None else ''}"


def _place(model: nn.Module, name: str, param: nn.Parameter) -> tuple[str, str, str, tuple[int, ...]]:
    """``(section, index, rest, kernel dims)`` of parameter ``name``: a parametrized tensor under its leaf's own
    attribute (``weight``, weight norm's ``weight#g`` / ``weight#v``), a conv weight's kernel dimensions."""
    section, index, rest = name.split(".", 2)
    owner_path, _, attr = name.rpartition(".")
    m = _ORIGINAL.search(name)
    if m is not None:
        attr = m.group(1) + (f"#{_WEIGHT_NORM.get(m.group(2), m.group(2))}" if m.group(2) else "")
        rest = rest[: len(rest) - len(name) + m.start()] + "." + attr
        owner_path = name[: m.start()]
    owner = model.get_submodule(owner_path)
    kernel = tuple(range(2, param.dim())) if isinstance(owner, _CONVS) and attr.split("#")[0] == "weight" else ()
    return section, index, rest, kernel


def slot_table(model: nn.Module, graph: EncoderGraph) -> dict[str, Slot]:
    """The slot of every parameter of ``model`` (the planner's model of ``graph``), by parameter name.

    Raises:
        ValueError: a parameter outside the four sections (a model that is not the planner's).
    """
    plan: dict[str, Compression] = dict(getattr(model, "compression_plan", {}) or {})
    nodes = {s: graph.nodes(s) for s in _SECTIONS}
    table: dict[str, Slot] = {}
    for name, param in model.named_parameters():
        section, index, rest, kernel = _place(model, name, param)
        if section not in nodes:
            raise ValueError(f"{name}: not a parameter of a planner encoder (sections: {', '.join(_SECTIONS)})")
        node = nodes[section][int(index)]
        suffix = ""
        if "quantizer" in name:
            leaf = next((p for p in sorted(plan, key=len, reverse=True) if name.startswith(p + ".")), None)
            suffix = _format(plan.get(leaf) if leaf else None, name[len(leaf) + 1 :] if leaf else "")
        table[name] = Slot(f"{section}.{index}:{node.kind}/{rest}{suffix}", kernel)
    return table


_NODE_SHAPES: dict[tuple, list[tuple[str, tuple[int, ...], tuple[int, ...]]]] = {}


def _node_shapes(node: GraphNode) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """``(slot key, shape, kernel dims)`` of one float node's parameters, built once per distinct node."""
    key = (node.section, node.index, node.kind, node.config, node.context, node.out_width)
    try:
        hit = _NODE_SHAPES.get(key)
    except TypeError:  # an unhashable context: no cache
        key, hit = None, None
    if hit is not None:
        return hit
    with torch.device("meta"):
        module = BUILDERS[node.kind](node)
    holder = nn.Module()
    holder.add_module(node.section, nn.ModuleList([nn.Identity()] * node.index + [module]))
    out = []
    for name, param in holder.named_parameters():
        section, index, rest, kernel = _place(holder, name, param)
        out.append((f"{section}.{index}:{node.kind}/{rest}", tuple(param.shape), kernel))
    if key is not None:
        _NODE_SHAPES[key] = out
    return out


def _learns_quantizers(graph: EncoderGraph) -> bool:
    """Whether the graph's compression has quantizers with learned parameters (activation quantizers)."""
    return any(c.activation.bits < 16 for c in graph.compression.values())


def slot_shapes(graph: EncoderGraph) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``slot key -> (shape, kernel dims)`` of every parameter ``planner.materialize(graph)`` has, without
    building it where it can be avoided: float parameters node by node (each distinct node built once, on
    the meta device), the learned quantizer parameters from the compressed model on the meta device."""
    out = {}
    for section in _SECTIONS:
        for node in graph.nodes(section):
            for key, shape, kernel in _node_shapes(node):
                out[key] = (shape, kernel)
    if _learns_quantizers(graph):
        with torch.device("meta"):
            model = materialize(graph)
        for name, slot in slot_table(model, graph).items():
            out[slot.key] = (tuple(model.get_parameter(name).shape), slot.kernel_dims)
    return out
