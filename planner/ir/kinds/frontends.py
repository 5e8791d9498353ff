"""Frontend node kinds: waveform or filterbank features in, model-width hidden states out."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from planner.config import field, parse_yaml
from planner.errors import ConfigError, FieldError
from planner.ir.kinds.base import (
    MAX_CONV_LAYERS,
    MAX_KERNEL,
    MAX_WIDTH,
    NODE_KINDS,
    NodeContext,
    NodeKind,
    conv1d,
    conv2d,
    linear,
    norm,
    param,
)
from planner.ir.leaf import Leaf

__all__ = [
    "ConvExtractor",
    "Conv2dSubsampling",
    "DwSepSubsampling",
    "MaskEmbedding",
    "ConvPosEmbedding",
    "LayerNormNode",
]


@functools.lru_cache(maxsize=256)
def _flow_yaml(text: str) -> Any:
    """``text`` parsed as YAML (``"[256, 3, 2]"``), memoized: a search parses the same few strings per trial.

    It goes through the planner's one reader (a string of a file is hostile input too); None if invalid.
    """
    try:
        return parse_yaml(text, None)
    except ConfigError:
        return None


def _flow_list(text: str) -> Any:
    value = _flow_yaml(text)
    return list(value) if isinstance(value, list) else value  # a copy: the cached value stays unchanged


def _parse_conv_layers(value: Any, path: str) -> tuple[tuple[int, int, int], ...]:
    """Parses ``[[c, k, s], "4 x [c, k, s]", ...]`` (at most :data:`MAX_CONV_LAYERS` convolutions in all)."""
    if not isinstance(value, list) or not value:
        raise FieldError(path, "expected a non-empty list of [channels, kernel, stride]")
    out: list[tuple[int, int, int]] = []
    for i, item in enumerate(value):
        ipath = f"{path}[{i}]"
        count = 1
        if isinstance(item, str):
            head, sep, rest = item.partition("x")
            head = head.strip()
            # ASCII digits, few of them: int() takes '٣' and refuses 5000-digit strings with a ValueError
            count = int(head) if head.isascii() and head.isdigit() and len(head) <= 12 else 0
            item = _flow_list(rest) if sep and count else None
            if count < 1 or item is None:
                raise FieldError(ipath, f"{value[i]!r} is not 'N x [channels, kernel, stride]'")
        if (not isinstance(item, list) or len(item) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in item)):  # fmt: skip
            raise FieldError(ipath, f"{item!r} is not [channels, kernel, stride] of positive integers")
        c, k, s = item
        if c > MAX_WIDTH or k > MAX_KERNEL or s > MAX_KERNEL:
            raise FieldError(ipath, f"{item!r} exceeds the ceilings (channels at most {MAX_WIDTH}, kernel and "
                                    f"stride at most {MAX_KERNEL})")  # fmt: skip
        if len(out) + count > MAX_CONV_LAYERS:
            raise FieldError(ipath, f"{len(out) + count} convolutions exceed the ceiling of {MAX_CONV_LAYERS}")
        out.extend([(c, k, s)] * count)
    return tuple(out)


def _dump_conv_layers(layers: tuple[tuple[int, int, int], ...]) -> list[Any]:
    out: list[Any] = []
    i = 0
    while i < len(layers):
        j = i
        while j < len(layers) and layers[j] == layers[i]:
            j += 1
        out.append(list(layers[i]) if j - i == 1 else f"{j - i} x {list(layers[i])}")
        i = j
    return out


@NODE_KINDS.register("conv_extractor")
@dataclass(frozen=True)
class ConvExtractor(NodeKind):
    """wav2vec 2.0 / HuBERT convolutional feature extractor on the raw waveform.

    Attributes:
        conv_layers: ``(channels, kernel, stride)`` per 1-D convolution, each followed by GELU.
        bias: convolution bias.
        norm: ``group_first`` (group norm with one group per channel after the first conv only) or
            ``layer_all`` (layer norm over channels after every conv) or ``none``.
        output_norm: layer norm over the extractor's output channels.
        projection: a linear projection from the last conv's channels to the model width.
    """

    conv_layers: tuple[tuple[int, int, int], ...] = field(parse=_parse_conv_layers, dump=_dump_conv_layers)
    bias: bool = False
    norm: Literal["group_first", "layer_all", "none"] = "group_first"
    output_norm: bool = False
    projection: bool = False

    kind: ClassVar[str] = "conv_extractor"
    roles: ClassVar = ("frontend",)
    accepts: ClassVar = ("waveform",)

    def validate(self, ctx: NodeContext) -> None:
        super().validate(ctx)
        last = self.conv_layers[-1][0]
        if not self.projection and last != ctx.width:
            raise FieldError("projection", f"the last conv has {last} channels but the model width is {ctx.width} "
                             "(set projection: true, or make the channels equal)")  # fmt: skip

    def out_length(self, length: int) -> int:
        for _, k, s in self.conv_layers:
            length = max((length - k) // s + 1, 0)
        return length

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        out: list[Leaf] = []
        cin = 1
        for i, (c, k, s) in enumerate(self.conv_layers):
            out.append(conv1d(f"conv_layers.{i}.conv", cin, c, k, {"extractor", "conv"}, stride=s, bias=self.bias))
            if self.norm == "group_first" and i == 0:
                out.append(norm(f"conv_layers.{i}.layer_norm", "group_norm", c, groups=c))
            elif self.norm == "layer_all":
                out.append(norm(f"conv_layers.{i}.layer_norm", "layer_norm", c))
            cin = c
        if self.output_norm:
            out.append(norm("layer_norm", "layer_norm", cin))
        if self.projection:
            out.append(linear("projection", cin, ctx.width, {"extractor", "projection"}))
        return out


def _subsampled(n: int, convs: int, k: int = 3, s: int = 2) -> int:
    for _ in range(convs):
        n = max((n - k) // s + 1, 0)
    return n


@NODE_KINDS.register("conv2d_subsampling")
@dataclass(frozen=True)
class Conv2dSubsampling(NodeKind):
    """Conformer / USM subsampling of log-mel features: 2-D convs with ReLU, then a linear projection.

    Input ``(B, T, n_mels)``; each conv has a ``kernel x kernel`` kernel and stride ``stride`` on both
    time and frequency, no padding; the flattened ``channels[-1] x freq`` output is projected to the width.
    """

    channels: tuple[int, ...] = field(le=MAX_WIDTH)
    kernel: int = field(3, le=MAX_KERNEL)
    stride: int = field(2, le=MAX_KERNEL)

    kind: ClassVar[str] = "conv2d_subsampling"
    roles: ClassVar = ("frontend",)
    accepts: ClassVar = ("features",)

    def check(self) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            raise FieldError("channels", "expected a non-empty list of positive channel counts")
        if len(self.channels) > MAX_CONV_LAYERS:
            raise FieldError("channels", f"{len(self.channels)} convolutions exceed the ceiling of {MAX_CONV_LAYERS}")
        for name in ("kernel", "stride"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"{getattr(self, name)} must be a positive integer")

    def freq_out(self, n_mels: int) -> int:
        return _subsampled(n_mels, len(self.channels), self.kernel, self.stride)

    def validate(self, ctx: NodeContext) -> None:
        super().validate(ctx)
        if self.freq_out(ctx.in_width) < 1:
            raise FieldError("channels", f"{len(self.channels)} convs leave no frequency bins of {ctx.in_width} mels")

    def out_length(self, length: int) -> int:
        return _subsampled(length, len(self.channels), self.kernel, self.stride)

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        out, cin = [], 1
        for i, c in enumerate(self.channels):  # every conv but the first reads the previous one's ReLU
            out.append(conv2d(f"convs.{i}", cin, c, self.kernel, self.stride, {"subsampling", "conv"},
                              producer="relu" if i else ""))  # fmt: skip
            cin = c
        out.append(linear("projection", cin * self.freq_out(ctx.in_width), ctx.width, {"subsampling", "projection"},
                          producer="relu"))  # fmt: skip
        return out


def _half_padded(n: int) -> int:
    """Positions after a 3-wide stride-2 conv over ``n`` positions zero padded by one at the end:
    ``floor((n + 1 - 3) / 2) + 1 = floor(n / 2)``."""
    return n // 2


@NODE_KINDS.register("dwsep_subsampling")
@dataclass(frozen=True)
class DwSepSubsampling(NodeKind):
    """Squeezeformer subsampling (4x in time): Conv2d(1, C, 3, 2) + ReLU, depthwise Conv2d(C, C, 3, 2) + pointwise
    Conv2d(C, C, 1) + ReLU, then a linear projection of the flattened ``C x freq`` to the width.

    As in the reference implementation (github kssteven418/Squeezeformer, ``src/models/submodules/subsampling.py``),
    time and frequency are zero padded by one position at the end before each stride-2 conv, so each halves
    them exactly (``floor(n / 2)``: 80 mels give 40, then 20 bins). The reference encoder follows the projection
    with a layer norm before the first block: add a ``layer_norm`` frontend node after this one.
    """

    channels: int = field(le=MAX_WIDTH)

    kind: ClassVar[str] = "dwsep_subsampling"
    roles: ClassVar = ("frontend",)
    accepts: ClassVar = ("features",)

    def check(self) -> None:
        if self.channels < 1:
            raise FieldError("channels", f"{self.channels} must be positive")

    def validate(self, ctx: NodeContext) -> None:
        super().validate(ctx)
        if self.freq_out(ctx.in_width) < 1:
            raise FieldError("channels", f"two stride-2 convs leave no frequency bins of {ctx.in_width} mels "
                             "(at least 4 are needed)")  # fmt: skip

    def freq_out(self, n_mels: int) -> int:
        return _half_padded(_half_padded(n_mels))

    def out_length(self, length: int) -> int:
        return _half_padded(_half_padded(length))

    def conv_positions(self, length: int, n_mels: int) -> dict[str, tuple[int, int]]:
        """``{leaf path: (output positions, input positions)}`` of the three convs, over (time x frequency)."""
        t1, f1 = _half_padded(length), _half_padded(n_mels)
        t2, f2 = _half_padded(t1), _half_padded(f1)
        return {"conv": (t1 * f1, length * n_mels), "depthwise": (t2 * f2, t1 * f1), "pointwise": (t2 * f2, t2 * f2)}

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        c = self.channels
        return [
            conv2d("conv", 1, c, 3, 2, {"subsampling", "conv"}),
            conv2d("depthwise", c, c, 3, 2, {"subsampling", "conv", "depthwise"}, groups=c, producer="relu"),
            conv2d("pointwise", c, c, 1, 1, {"subsampling", "conv", "pointwise"}),
            linear(
                "projection", c * self.freq_out(ctx.in_width), ctx.width, {"subsampling", "projection"}, producer="relu"
            ),
        ]


@NODE_KINDS.register("mask_embedding")
@dataclass(frozen=True)
class MaskEmbedding(NodeKind):
    """A learned vector that replaces masked frames when the model is called with ``mask=``."""

    kind: ClassVar[str] = "mask_embedding"
    roles: ClassVar = ("frontend",)

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        return [param("embedding", ctx.width)]


@NODE_KINDS.register("conv_pos_embedding")
@dataclass(frozen=True)
class ConvPosEmbedding(NodeKind):
    """wav2vec 2.0 convolutional positional embedding: ``x + GELU(conv(x))``, same length.

    Attributes:
        kernel: kernel size (even kernels drop the last output frame, as in wav2vec 2.0).
        groups: convolution groups.
        weight_norm: weight normalisation over the kernel dimension.
    """

    kernel: int = field(128, le=MAX_KERNEL)
    groups: int = field(16, le=MAX_WIDTH)
    weight_norm: bool = True

    kind: ClassVar[str] = "conv_pos_embedding"
    roles: ClassVar = ("frontend",)

    def check(self) -> None:
        for name in ("kernel", "groups"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"{getattr(self, name)} must be a positive integer")

    def validate(self, ctx: NodeContext) -> None:
        super().validate(ctx)
        if ctx.width % self.groups:
            raise FieldError("groups", f"the width {ctx.width} is not divisible by {self.groups} groups")

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        return [conv1d("conv", ctx.width, ctx.width, self.kernel, {"pos_conv", "conv"}, groups=self.groups,
                       weight_norm=self.weight_norm)]  # fmt: skip


@NODE_KINDS.register("layer_norm")
@dataclass(frozen=True)
class LayerNormNode(NodeKind):
    """A layer norm over the width (wav2vec 2.0's encoder norm; a final norm for pre-LN stacks)."""

    kind: ClassVar[str] = "layer_norm"
    roles: ClassVar = ("frontend", "layer", "post")

    def leaves(self, ctx: NodeContext) -> list[Leaf]:
        return [norm("layer_norm", "layer_norm", ctx.width)]
