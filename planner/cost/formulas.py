"""Per-kind cost formulas: what each node executes, as pure integer functions of its shapes and lengths.

One formula per node kind, registered in :data:`COST_FORMULAS` under the same key as
:data:`planner.ir.NODE_KINDS` (a test asserts the key sets are equal). A formula returns the node's
:class:`Op` s: every leaf with its multiply-accumulates at the lengths it runs on, and the attention
products (``QK^T``, the relative-position scores, ``AV``), which have compute but no parameters.

Counting conventions (see ``docs/cost-model.md``):

* A MAC is one multiply-add. Linear: ``positions x in x out``. Convolution: ``output positions x out x
  in / groups x prod(kernel)``. Bias additions are not MACs (DeepSpeed does the same).
* Attention: ``QK^T`` and ``AV`` cost ``pairs x D`` MACs each (``D = heads x head_dim``), where ``pairs``
  is the exact number of attended (query, key) pairs of the kind (``mode="exact"``, the default) or
  ``T x T`` (``mode="dense"``: what the materialized model executes, masking a dense product).
  Relative positions add ``Q P^T`` over all ``2T - 1`` offsets (``T x (2T - 1) x D``, Transformer-XL's
  rel-shift computation; exact mode for sparse kinds counts ``pairs x D``) and ``pos_proj`` runs on the
  ``2T - 1`` sinusoids. Reuse layers have no Q/K projections and no ``QK^T``; their ``AV`` applies the
  source layer's map, so exact mode prices the source's pairs (a reused local map: its band, not ``T^2``).
  A formula receives that map as ``pattern`` (None for nodes without attention; a node's own attention
  otherwise).
* Non-MAC FLOPs (``extra_flops``): norms 5 per normalised element (mean, variance, normalise, scale,
  shift; DeepSpeed's convention); softmax 1 per score, counted on the ``QK^T`` product. Activations (GELU,
  Swish, ReLU, GLU), residual additions, dropout and masking are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from planner.cost.attention import attended_pairs
from planner.ir.attention import AttentionConfig, ReuseAttention
from planner.ir.leaf import Leaf
from planner.registry import Registry

__all__ = ["COST_FORMULAS", "Op", "AttentionMode", "NORM_FLOPS_PER_ELEMENT"]

AttentionMode = Literal["exact", "dense"]
NORM_FLOPS_PER_ELEMENT = 5


@dataclass(frozen=True)
class Op:
    """One priced operation of a node.

    Attributes:
        path: path inside the node (a leaf's path, or ``attention.scores`` ... for products).
        kind: the leaf op, or ``attention_scores`` / ``attention_position`` / ``attention_context``.
        leaf: the IR leaf (the ``matmul`` leaf for the ``scores`` / ``context`` products; None for the
            relative-position product, which has no leaf and stays in float).
        macs: multiply-accumulates.
        extra_flops: FLOPs that are not MACs (norms, softmax).
        act_in: activation elements read (for the memory side of the latency roofline).
        act_out: activation elements written.
    """

    path: str
    kind: str
    leaf: Leaf | None
    macs: int = 0
    extra_flops: int = 0
    act_in: int = 0
    act_out: int = 0


# (node, frames, length sources, attention mode, the attention pattern its AV product applies) -> ops
Formula = Callable[[Any, int, tuple[int, ...], AttentionMode, Any], list[Op]]
COST_FORMULAS: Registry[Formula] = Registry("cost formula")


def _linear(leaf: Leaf, positions: int) -> Op:
    return Op(leaf.path, "linear", leaf, positions * leaf.in_dim * leaf.out_dim, 0,
              positions * leaf.in_dim, positions * leaf.out_dim)  # fmt: skip


def _conv(leaf: Leaf, out_positions: int, in_positions: int) -> Op:
    return Op(leaf.path, leaf.op, leaf, out_positions * leaf.out_dim * leaf.fan_in, 0,
              in_positions * leaf.in_dim, out_positions * leaf.out_dim)  # fmt: skip


def _norm(leaf: Leaf, positions: int) -> Op:
    n = positions * leaf.in_dim
    return Op(leaf.path, leaf.op, leaf, 0, NORM_FLOPS_PER_ELEMENT * n, n, n)


def _param(leaf: Leaf) -> Op:
    return Op(leaf.path, leaf.op, leaf)


def _pointwise(leaves: dict[str, Leaf], t: int) -> list[Op]:
    """Leaves that all run on the ``t`` frames of a hidden sequence."""
    out = []
    for lf in leaves.values():
        if lf.op == "linear":
            out.append(_linear(lf, t))
        elif lf.op in ("conv1d", "conv2d"):
            out.append(_conv(lf, t, t))
        elif lf.op == "param":
            out.append(_param(lf))
        else:
            out.append(_norm(lf, t))
    return out


def attention_ops(node: Any, t: int, mode: AttentionMode, prefix: str = "attention",
                  pattern: AttentionConfig | None = None) -> list[Op]:  # fmt: skip
    """The attention module's projections and products at ``t`` frames (see the module docstring).

    ``pattern``: the map the products apply (default the node's own attention; a reuse layer's caller
    passes its source's, whose pairs the ``AV`` product then costs in exact mode).
    """
    cfg = node.config
    att = cfg.attention
    applied = att if pattern is None else pattern
    if isinstance(applied, ReuseAttention):
        raise TypeError(f"{node.name}: a reuse layer is priced with its source layer's attention pattern")
    d = node.context.width
    leaves = {lf.path: lf for lf in node.leaves if lf.path.startswith(prefix + ".")}
    rel = f"{prefix}.pos_proj" in leaves
    pairs = t * t if mode == "dense" else attended_pairs(applied, t)
    ops: list[Op] = []
    for name, lf in leaves.items():
        if lf.is_product:
            continue  # priced below, as the products
        if name == f"{prefix}.pos_proj":
            ops.append(_linear(lf, 2 * t - 1 if t > 0 else 0))
        elif lf.op == "linear":
            ops.append(_linear(lf, t))
        else:
            ops.append(_param(lf))
    heads = cfg.heads
    if att.computes_map:
        ops.append(Op(f"{prefix}.scores", "attention_scores", leaves.get(f"{prefix}.scores"), pairs * d, heads * pairs,
                      2 * t * d, heads * pairs))  # fmt: skip
        if rel:
            full = mode == "dense" or att.kind == "full"
            rp = t * (2 * t - 1) if full else pairs
            ops.append(Op(f"{prefix}.position_scores", "attention_position", None, rp * d, 0,
                          t * d + max(2 * t - 1, 0) * d, heads * rp))  # fmt: skip
    ops.append(Op(f"{prefix}.context", "attention_context", leaves.get(f"{prefix}.context"), pairs * d, 0,
                  heads * pairs + t * d, t * d))  # fmt: skip
    return ops


def _attention_layer(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    att_ops = attention_ops(node, t, mode, pattern=pattern)
    rest = {lf.path: lf for lf in node.leaves if not lf.path.startswith("attention.")}
    ops = _pointwise(rest, t)
    # keep execution order: the attention ops go where the first attention leaf is
    first = next(i for i, lf in enumerate(node.leaves) if lf.path.startswith("attention."))
    before = sum(1 for lf in node.leaves[:first] if not lf.path.startswith("attention."))
    return ops[:before] + att_ops + ops[before:]


for _kind in ("transformer", "conformer", "squeezeformer"):
    COST_FORMULAS.add(_kind, _attention_layer)


@COST_FORMULAS.register("conv_extractor")
def _conv_extractor(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    """Each conv runs on the frames the previous one produced: ``floor((L - k) / s) + 1``."""
    ops: list[Op] = []
    length = t
    for lf in node.leaves:
        if lf.op == "conv1d":
            out = max((length - lf.kernel[0]) // lf.stride[0] + 1, 0)
            ops.append(_conv(lf, out, length))
            length = out
        elif lf.op == "linear":
            ops.append(_linear(lf, length))
        else:
            ops.append(_norm(lf, length))
    return ops


def _conv2d_stack(node: Any, t: int, f: int) -> list[Op]:
    ops: list[Op] = []
    for lf in node.leaves:
        if lf.op == "conv2d":
            (kt, kf), (st, sf) = lf.kernel, lf.stride
            t2, f2 = max((t - kt) // st + 1, 0), max((f - kf) // sf + 1, 0)
            ops.append(_conv(lf, t2 * f2, t * f))
            t, f = t2, f2
        else:
            ops.append(_linear(lf, t))
    return ops


@COST_FORMULAS.register("conv2d_subsampling")
def _conv2d_subsampling(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    """2-D convs over (time, mel) without padding, then the projection on the subsampled frames."""
    return _conv2d_stack(node, t, node.context.in_width)


@COST_FORMULAS.register("dwsep_subsampling")
def _dwsep_subsampling(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    """Conv, depthwise conv, pointwise conv over (time, mel), each stride-2 conv after one zero position at the
    end of both axes (the kind's ``conv_positions``), then the projection on the subsampled frames."""
    positions = node.config.conv_positions(t, node.context.in_width)
    return [_conv(lf, *positions[lf.path]) if lf.op == "conv2d" else _linear(lf, node.config.out_length(t))
            for lf in node.leaves]  # fmt: skip


@COST_FORMULAS.register("mask_embedding")
def _mask_embedding(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    """A free vector; replacing masked frames is a select, not compute."""
    return [_param(lf) for lf in node.leaves]


@COST_FORMULAS.register("conv_pos_embedding")
def _conv_pos_embedding(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    """Padded by ``kernel // 2`` on both sides: ``t + 1`` outputs for an even kernel (the last is dropped)."""
    lf = node.leaves[0]
    k = lf.kernel[0]
    out = t + 2 * (k // 2) - k + 1 if t > 0 else 0
    return [_conv(lf, out, t)]


@COST_FORMULAS.register("layer_norm")
def _layer_norm(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    return _pointwise({lf.path: lf for lf in node.leaves}, t)


@COST_FORMULAS.register("time_reduction")
def _time_reduction(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    """Right zero padding ``kernel - 1`` and stride ``s``: ``ceil(t / s)`` outputs for both convs."""
    dw, pw = node.leaves
    out = -(-t // dw.stride[0])
    return [_conv(dw, out, t), _conv(pw, out, out)]


@COST_FORMULAS.register("time_recovery")
def _time_recovery(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    """The linear runs on the recovered frames (``sources[0]``: the length before the reduction)."""
    return [_linear(lf, sources[0]) for lf in node.leaves]


@COST_FORMULAS.register("projection_heads")
def _projection_heads(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    """One linear per selected layer, on that layer's frames (``sources``, in leaf order)."""
    return [_linear(lf, n) for lf, n in zip(node.leaves, sources)]


@COST_FORMULAS.register("ctc")
def _ctc(node: Any, t: int, sources: tuple[int, ...], mode: AttentionMode, pattern: Any) -> list[Op]:
    return [_linear(lf, t) for lf in node.leaves]
