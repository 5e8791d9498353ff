"""Encoder layer node kinds: Transformer, Conformer and Squeezeformer blocks, time reduction/recovery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from planner.config import field
from planner.errors import FieldError
from planner.ir.attention import AttentionConfig, FullAttention, dump_attention, parse_attention
from planner.ir.kinds.base import (
    MAX_HIDDEN,
    MAX_KERNEL,
    NODE_KINDS,
    NodeContext,
    NodeKind,
    conv1d,
    linear,
    norm,
    param,
    product,
)
from planner.ir.leaf import Leaf

__all__ = ["TransformerLayer", "ConformerLayer", "SqueezeformerLayer", "TimeReduction", "TimeRecovery"]

Activation = Literal["gelu", "relu", "swish"]
Positional = Literal["absolute", "relative"]


def attention_leaves(prefix: str, width: int, heads: int, attention: AttentionConfig,
                     positional: Positional) -> list[Leaf]:  # fmt: skip
    """Q/K/V/out projections (no Q/K when reusing a map), relative-position parameters, and the products.

    The products ``scores`` (``Q K^T``, not when reusing a map) and ``context`` (``P V``) carry no
    parameters; compression rules quantize their inputs. ``P`` comes from a softmax (also a reused map),
    so it takes the unsigned set by default (BiT); Q, K and V come from linears.
    """
    out: list[Leaf] = []
    if attention.computes_map:
        out.append(linear(f"{prefix}.q_proj", width, width, {"attention", "q"}))
        out.append(linear(f"{prefix}.k_proj", width, width, {"attention", "k"}))
    out.append(linear(f"{prefix}.v_proj", width, width, {"attention", "v"}))
    out.append(linear(f"{prefix}.out_proj", width, width, {"attention", "out"}))
    if attention.computes_map:
        out.append(product(f"{prefix}.scores", width, heads, {"attention", "matmul", "scores"}))
    out.append(product(f"{prefix}.context", width, heads, {"attention", "matmul", "context"}, ("softmax", "")))
    if positional == "relative" and attention.computes_map:
        out.append(linear(f"{prefix}.pos_proj", width, width, {"attention", "pos"}, bias=False))
        out.append(param(f"{prefix}.pos_bias_u", heads, width // heads))
        out.append(param(f"{prefix}.pos_bias_v", heads, width // heads))
    return out


def ffn_leaves(prefix: str, width: int, hidden: int, activation: Activation,
               names: tuple[str, str] = ("fc1", "fc2")) -> list[Leaf]:  # fmt: skip
    """``fc1``, the activation, ``fc2``: ``fc2``'s input is the activation's output (non-negative for ReLU)."""
    return [
        linear(f"{prefix}.{names[0]}", width, hidden, {"ffn", "fc1"}),
        linear(f"{prefix}.{names[1]}", hidden, width, {"ffn", "fc2"}, producer=activation),
    ]


def conv_module_leaves(prefix: str, width: int, kernel: int, bias: bool) -> list[Leaf]:
    """Conformer convolution module: pointwise (2x, GLU), depthwise, batch norm, pointwise."""
    return [
        conv1d(f"{prefix}.pointwise1", width, 2 * width, 1, {"conv", "pointwise"}, bias=bias),
        conv1d(f"{prefix}.depthwise", width, width, kernel, {"conv", "depthwise"}, groups=width, bias=bias),
        norm(f"{prefix}.batch_norm", "batch_norm", width),
        conv1d(f"{prefix}.pointwise2", width, width, 1, {"conv", "pointwise"}, bias=bias),
    ]


class _AttentionLayer(NodeKind):
    heads: int
    attention: AttentionConfig
    positional: Positional
    has_attention: ClassVar[bool] = True
    roles: ClassVar = ("layer",)

    def validate(self, ctx: NodeContext) -> None:
        super().validate(ctx)
        if ctx.width % self.heads:
            raise FieldError("heads", f"the width {ctx.width} is not divisible by {self.heads} heads")

    def _check_common(self) -> None:
        if self.heads < 1:
            raise FieldError("heads", f"{self.heads} must be a positive integer")


@NODE_KINDS.register("transformer")
@dataclass(frozen=True)
class TransformerLayer(_AttentionLayer):
    """A Transformer encoder layer (wav2vec 2.0 / HuBERT naming), post-LN or pre-LN.

    Attributes:
        heads: attention heads; the width must be divisible by it.
        ffn: FFN hidden width.
        activation: FFN activation (``gelu`` as HuBERT; ``relu`` for BiT-style binarized blocks, whose FFN
            hidden states are then non-negative and binarized to ``{0, alpha}``).
        norm: ``post`` (HuBERT BASE) or ``pre`` layer norm.
        attention: attention kind (see :mod:`planner.ir.attention`).
        positional: ``absolute`` (positions come from the frontend) or ``relative`` (Transformer-XL
            style relative-position attention with ``pos_bias_u/v``).
        dropout: dropout on attention probabilities, FFN hidden and residual branches.
    """

    heads: int
    ffn: int = field(le=MAX_HIDDEN)
    activation: Activation = "gelu"
    norm: Literal["post", "pre"] = "post"
    attention: AttentionConfig = field(FullAttention(), parse=parse_attention, dump=dump_attention)
    positional: Positional = "absolute"
    dropout: float = 0.0

    kind: ClassVar[str] = "transformer"

    def check(self) -> None:
        self._check_common()
        if self.ffn < 1:
            raise FieldError("ffn", f"{self.ffn} must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldError("dropout", f"{self.dropout} must be in [0, 1)")

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        d = ctx.width
        return [
            *attention_leaves("attention", d, self.heads, self.attention, self.positional),
            norm("layer_norm", "layer_norm", d),
            *ffn_leaves("feed_forward", d, self.ffn, self.activation, ("intermediate_dense", "output_dense")),
            norm("final_layer_norm", "layer_norm", d),
        ]


@NODE_KINDS.register("conformer")
@dataclass(frozen=True)
class ConformerLayer(_AttentionLayer):
    """A Conformer block: half-step FFN, MHSA, convolution module, half-step FFN, final layer norm.

    Attributes:
        heads: attention heads.
        ffn: hidden width of each FFN.
        activation: FFN activation: ``swish`` (Gulati et al.), or ``relu`` for BiT-style binarized blocks
            (non-negative FFN hidden states, binarized to ``{0, alpha}``).
        kernel: depthwise convolution kernel (even kernels pad one more frame on the right).
        attention: attention kind.
        positional: ``absolute`` or ``relative`` positional attention.
        conv_bias: bias on the convolution module's convs.
        dropout: dropout rate.
    """

    heads: int
    ffn: int = field(le=MAX_HIDDEN)
    kernel: int = field(31, le=MAX_KERNEL)
    activation: Activation = "swish"
    attention: AttentionConfig = field(FullAttention(), parse=parse_attention, dump=dump_attention)
    positional: Positional = "absolute"
    conv_bias: bool = True
    dropout: float = 0.0

    kind: ClassVar[str] = "conformer"

    def check(self) -> None:
        self._check_common()
        if self.ffn < 1 or self.kernel < 1:
            raise FieldError("ffn" if self.ffn < 1 else "kernel", "must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldError("dropout", f"{self.dropout} must be in [0, 1)")

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        d = ctx.width
        return [
            norm("ffn1.layer_norm", "layer_norm", d),
            *ffn_leaves("ffn1", d, self.ffn, self.activation),
            norm("attention_layer_norm", "layer_norm", d),
            *attention_leaves("attention", d, self.heads, self.attention, self.positional),
            norm("conv.layer_norm", "layer_norm", d),
            *conv_module_leaves("conv", d, self.kernel, self.conv_bias),
            norm("ffn2.layer_norm", "layer_norm", d),
            *ffn_leaves("ffn2", d, self.ffn, self.activation),
            norm("final_layer_norm", "layer_norm", d),
        ]


def swish_conv_module_leaves(prefix: str, width: int, kernel: int) -> list[Leaf]:
    """Squeezeformer convolution module: pointwise D -> 2D, (Swish), depthwise on 2D, batch norm on 2D,
    (Swish), pointwise 2D -> D; GLU is replaced by Swish, so the depthwise conv keeps all 2D channels."""
    d2 = 2 * width
    return [
        conv1d(f"{prefix}.pointwise1", width, d2, 1, {"conv", "pointwise"}),
        conv1d(f"{prefix}.depthwise", d2, d2, kernel, {"conv", "depthwise"}, groups=d2),
        norm(f"{prefix}.batch_norm", "batch_norm", d2),
        conv1d(f"{prefix}.pointwise2", d2, width, 1, {"conv", "pointwise"}),
    ]


@NODE_KINDS.register("squeezeformer")
@dataclass(frozen=True)
class SqueezeformerLayer(_AttentionLayer):
    """A Squeezeformer block: MHSA, FFN, conv module, FFN (``mfcf``) or conv first (``cfmf``).

    Each module is ``x = LayerNorm(x + module(x * scale + bias))``: learned input scaling replaces the
    pre-LN, and a post-LN follows every residual (Kim et al. 2022; reference implementation github
    kssteven418/Squeezeformer, ``src/models/conformer_encoder.py``, ``fixed_arch: [M, s, C, s]``, adaptive
    scale, no extra post-LN). The FFNs are full steps (``fc_factor 1``) and the conv module is
    :func:`swish_conv_module_leaves` (Swish instead of GLU, ``conv_use_glu: false``). ``activation`` is the
    FFNs' (``swish`` as Kim et al.; ``relu`` for BiT-style binarized blocks).
    """

    heads: int
    ffn: int = field(le=MAX_HIDDEN)
    kernel: int = field(31, le=MAX_KERNEL)
    activation: Activation = "swish"
    ordering: Literal["mfcf", "cfmf"] = "mfcf"
    attention: AttentionConfig = field(FullAttention(), parse=parse_attention, dump=dump_attention)
    positional: Positional = "absolute"
    dropout: float = 0.0

    kind: ClassVar[str] = "squeezeformer"

    def check(self) -> None:
        self._check_common()
        if self.ffn < 1 or self.kernel < 1:
            raise FieldError("ffn" if self.ffn < 1 else "kernel", "must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise FieldError("dropout", f"{self.dropout} must be in [0, 1)")

    @property
    def modules(self) -> tuple[str, ...]:
        return (
            ("attention", "ffn1", "conv", "ffn2") if self.ordering == "mfcf" else ("conv", "ffn1", "attention", "ffn2")
        )

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        d = ctx.width
        out: list[Leaf] = []
        for name in self.modules:
            out += [param(f"{name}_scale.weight", d), param(f"{name}_scale.bias", d)]
            if name == "attention":
                out += attention_leaves("attention", d, self.heads, self.attention, self.positional)
            elif name == "conv":
                out += swish_conv_module_leaves("conv", d, self.kernel)
            else:
                out += ffn_leaves(name, d, self.ffn, self.activation)
            out.append(norm(f"{name}_norm", "layer_norm", d))
        return out


@NODE_KINDS.register("time_reduction")
@dataclass(frozen=True)
class TimeReduction(NodeKind):
    """Squeezeformer time reduction: depthwise conv with stride (right zero padding ``kernel - 1``) and a
    pointwise conv; ``ceil(T / stride)`` frames out. The reference's kernel is 5 (github
    kssteven418/Squeezeformer, ``src/models/submodules/time_reduction.py``)."""

    stride: int = field(2, le=MAX_KERNEL)
    kernel: int = field(5, le=MAX_KERNEL)

    kind: ClassVar[str] = "time_reduction"
    roles: ClassVar = ("layer",)

    def check(self) -> None:
        if self.stride < 2:
            raise FieldError("stride", f"{self.stride} must be at least 2")
        if self.kernel < 1:
            raise FieldError("kernel", f"{self.kernel} must be a positive integer")

    def out_length(self, length: int) -> int:
        return -(-length // self.stride)

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        d = ctx.width
        return [
            conv1d("depthwise", d, d, self.kernel, {"conv", "depthwise"}, stride=self.stride, groups=d),
            conv1d("pointwise", d, d, 1, {"conv", "pointwise"}),
        ]


@NODE_KINDS.register("time_recovery")
@dataclass(frozen=True)
class TimeRecovery(NodeKind):
    """Squeezeformer time recovery: repeat frames ``stride`` times (trimmed to the length before the
    reduction ``source``), a linear layer, plus a skip connection from the reduction's input."""

    source: int

    kind: ClassVar[str] = "time_recovery"
    roles: ClassVar = ("layer",)

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        return [linear("projection", ctx.width, ctx.width, {"projection"})]
