"""Per-leaf compression attributes: weight and activation quantization, N:M sparsity, and the rules
that assign them to the leaves of a graph.

These are plain, torch-free, frozen configs. The quantizers and masks that realise them on a
materialized module hang off one hook point (:func:`planner.nn.leaves.compression_plan`); the cost
model prices them (bits, scales, masks).

YAML shorthands (one parser per concept):

* weight: ``int8`` / ``int4`` (symmetric, per channel, as USM-Lite eq. 1-2), ``int2`` (asymmetric,
  per channel), ``binary`` (BiT, W1), ``fp16``, ``fp32``, a bit width as an integer, or the mapping
  ``{bits, granularity, groups, group_size, symmetric}``.
* activation: ``8`` / ``int8`` / ``binary`` / ``fp32``..., or ``{bits, symmetric}``; without ``symmetric``
  each input's grid is signed or unsigned as its producer is (:func:`input_formats`).
* sparsity: ``"2:4"`` (keep N of every M consecutive input weights), ``[2, 4]``, ``{n, m}``, or ``none``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from planner.config import field, from_data, to_data
from planner.errors import FieldError
from planner.ir.leaf import Leaf

__all__ = [
    "WeightQuant",
    "ActQuant",
    "Sparsity",
    "Compression",
    "CompressionRule",
    "FLOAT32",
    "NONNEGATIVE_PRODUCERS",
    "input_formats",
    "parse_weight",
    "parse_activation",
    "parse_sparsity",
]

Bits = Literal[32, 16, 8, 4, 2, 1]
Granularity = Literal["per_tensor", "per_channel", "subchannel"]
_BITS = (32, 16, 8, 4, 2, 1)


@dataclass(frozen=True)
class WeightQuant:
    """How a weight tensor is stored and fake-quantized.

    Attributes:
        bits: 32 or 16 keep floats; 8, 4, 2 are integer grids; 1 is BiT binarization
            ``sign(W - mean(W)) * mean(|W|)``.
        granularity: one scale per tensor, per output channel, or per sub-channel group (a scale per group
            of consecutive input weights of a channel, USM-Lite int2).
        groups: with ``subchannel``, the number of groups per output channel.
        group_size: with ``subchannel``, the number of input weights per group (instead of ``groups``).
        symmetric: symmetric grid ``[-(2^(b-1)-1), 2^(b-1)-1]`` (int8 ``[-127, 127]``, int4 ``[-7, 7]``)
            or asymmetric ``[0, 2^b - 1]`` with a zero point.
    """

    bits: Bits = 32
    granularity: Granularity = "per_channel"
    groups: int | None = None
    group_size: int | None = None
    symmetric: bool = True

    def check(self) -> None:
        if self.granularity == "subchannel":
            if (self.groups is None) == (self.group_size is None):
                raise FieldError("granularity", "subchannel needs exactly one of groups or group_size")
            for name in ("groups", "group_size"):
                value = getattr(self, name)
                if value is not None and value < 1:
                    raise FieldError(name, f"{value} must be a positive integer")
        elif self.groups is not None or self.group_size is not None:
            name = "groups" if self.groups is not None else "group_size"
            raise FieldError(name, f"only allowed with granularity: subchannel (got {self.granularity!r})")
        if self.bits >= 16 and (self.granularity != "per_channel" or not self.symmetric):
            raise FieldError("bits", f"{self.bits}-bit weights are floats: drop granularity/symmetric")

    @property
    def is_float(self) -> bool:
        return self.bits >= 16

    @property
    def is_binary(self) -> bool:
        return self.bits == 1

    def group_count(self, in_dim: int) -> int:
        """Scale groups per output channel for a weight with ``in_dim`` inputs per channel."""
        if self.granularity != "subchannel":
            return 1
        return self.groups if self.groups is not None else in_dim // int(self.group_size)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ActQuant:
    """How the input activation of a leaf is fake-quantized.

    Attributes:
        bits: 32 or 16 keep floats; 8, 4, 2 integer (per tensor); 1 is BiT's elastic binarization.
        symmetric: ``true``: a signed grid (BiT: ``{-alpha, +alpha}``; integers ``[-qmax, qmax]``);
            ``false``: unsigned (BiT: ``{0, alpha}``; integers ``[0, 2^b - 1]`` with a zero point).
            Unset (the default): it follows the producer of each input, as BiT's two-set binarization does
            (Liu et al. 2022: non-negative inputs, ReLU outputs and softmax probabilities, take
            ``{0, alpha}``, every other input ``{-alpha, +alpha}``; in facebookresearch/bit
            ``transformer/modeling_bert_quant.py`` the attention probabilities and the FFN output
            linear after the ReLU are quantized with ``sym_quant_ffn_attn``, false by default, the rest
            with ``sym_quant_qkvo``): unsigned where the IR names a non-negative producer of the input
            (:data:`NONNEGATIVE_PRODUCERS`, :func:`input_formats`), signed elsewhere.
    """

    bits: Bits = 32
    symmetric: bool | None = None

    def check(self) -> None:
        if self.bits >= 16 and self.symmetric is False:
            raise FieldError("symmetric", f"{self.bits}-bit activations are floats: drop symmetric")

    @property
    def is_float(self) -> bool:
        return self.bits >= 16

    def for_input(self, nonnegative: bool) -> ActQuant:
        """This format on an input whose producer is (or is not) non-negative: ``symmetric`` resolved.

        An explicit ``symmetric`` is kept; unset, it becomes ``not nonnegative``. Floats stay as they are.
        """
        if self.is_float or self.symmetric is not None:
            return self
        return dataclasses.replace(self, symmetric=not nonnegative)


@dataclass(frozen=True)
class Sparsity:
    """N:M structured sparsity: at most ``n`` non-zeros in every ``m`` consecutive input weights."""

    n: int
    m: int

    def check(self) -> None:
        if self.m < 2 or self.n < 1 or self.n >= self.m:
            raise FieldError("", f"N:M needs 1 <= N < M and M >= 2 (got {self.n}:{self.m})")

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def density(self) -> float:
        return self.n / self.m


FLOAT32_WEIGHT = WeightQuant()
FLOAT32_ACT = ActQuant()


@dataclass(frozen=True)
class Compression:
    """The resolved compression of one leaf (a linear or convolution)."""

    weight: WeightQuant = FLOAT32_WEIGHT
    activation: ActQuant = FLOAT32_ACT
    sparsity: Sparsity | None = None

    @property
    def is_identity(self) -> bool:
        return self.weight == FLOAT32_WEIGHT and self.activation == FLOAT32_ACT and self.sparsity is None

    def describe(self) -> str:
        """Short text such as ``w4/a8 2:4``."""
        w = self.weight
        text = f"w{w.bits}"
        if w.granularity == "subchannel":
            text += f"g{w.groups}" if w.groups is not None else f"gs{w.group_size}"
        if not w.symmetric:
            text += "asym"
        text += f"/a{self.activation.bits}"
        if self.sparsity is not None:
            text += f" {self.sparsity}"
        return text


FLOAT32 = Compression()

#: ops whose outputs are never negative: an input they produce takes BiT's unsigned set ``{0, alpha}``
#: (an integer input grid: ``[0, 2^b - 1]``) unless the compression rule sets ``symmetric``.
NONNEGATIVE_PRODUCERS = frozenset({"relu", "softmax"})


def input_formats(activation: ActQuant, leaf: Leaf | None) -> tuple[ActQuant, ...]:
    """The resolved format of each input of a leaf: one for a linear or convolution, two for an attention
    product (``input``, then ``other``: ``Q`` and ``K^T`` for ``scores``, ``P`` and ``V`` for ``context``).

    Where ``activation.symmetric`` is unset, each input is unsigned if the IR names a non-negative producer
    for it (:attr:`Leaf.producers`, :data:`NONNEGATIVE_PRODUCERS`: the ReLU before an FFN's second linear
    or a subsampling conv, the softmax before ``P V``) and signed otherwise, as BiT chooses its two sets.
    ``leaf`` None (a module the IR does not describe) counts every input as signed.

    Example:
        >>> from planner.ir.leaf import Leaf
        >>> context = Leaf("attention.context", "matmul", in_dim=8, out_dim=8, groups=2, producers=("softmax", ""))
        >>> [a.symmetric for a in input_formats(ActQuant(bits=1), context)]
        [False, True]
        >>> [a.symmetric for a in input_formats(ActQuant(bits=1, symmetric=True), context)]
        [True, True]
    """
    count = 2 if leaf is not None and leaf.is_product else 1
    producers = leaf.producers if leaf is not None else ()
    return tuple(activation.for_input(i < len(producers) and producers[i] in NONNEGATIVE_PRODUCERS)
                 for i in range(count))  # fmt: skip


_WEIGHT_SHORTHANDS: dict[str, WeightQuant] = {
    "fp32": WeightQuant(bits=32),
    "fp16": WeightQuant(bits=16),
    "int8": WeightQuant(bits=8),
    "int4": WeightQuant(bits=4),
    "int2": WeightQuant(bits=2, symmetric=False),
    "binary": WeightQuant(bits=1, granularity="per_tensor"),
}
_ACT_SHORTHANDS: dict[str, ActQuant] = {
    "fp32": ActQuant(bits=32),
    "fp16": ActQuant(bits=16),
    "int8": ActQuant(bits=8),
    "int4": ActQuant(bits=4),
    "int2": ActQuant(bits=2),
    "binary": ActQuant(bits=1),
}


def parse_weight(value: Any, path: str) -> WeightQuant:
    """Parses a weight quantization shorthand or mapping."""
    if isinstance(value, str):
        if value not in _WEIGHT_SHORTHANDS:
            raise FieldError(
                path, f"{value!r} is not a weight format (allowed: {', '.join(_WEIGHT_SHORTHANDS)}, or a mapping)"
            )
        return _WEIGHT_SHORTHANDS[value]
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in _BITS:
            raise FieldError(path, f"{value} bits is out of range (allowed: 32, 16, 8, 4, 2, 1)")
        return WeightQuant(bits=value, granularity="per_tensor" if value == 1 else "per_channel",
                           symmetric=value != 2)  # fmt: skip
    if isinstance(value, dict) and "bits" in value and value["bits"] not in _BITS:
        raise FieldError(path + ".bits", f"{value['bits']!r} bits is out of range (allowed: 32, 16, 8, 4, 2, 1)")
    return from_data(WeightQuant, value, path)


def parse_activation(value: Any, path: str) -> ActQuant:
    """Parses an activation quantization shorthand or mapping."""
    if isinstance(value, str):
        if value not in _ACT_SHORTHANDS:
            raise FieldError(
                path, f"{value!r} is not an activation format (allowed: {', '.join(_ACT_SHORTHANDS)}, or bits)"
            )
        return _ACT_SHORTHANDS[value]
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in _BITS:
            raise FieldError(path, f"{value} bits is out of range (allowed: 32, 16, 8, 4, 2, 1)")
        return ActQuant(bits=value)
    if isinstance(value, dict) and "bits" in value and value["bits"] not in _BITS:
        raise FieldError(path + ".bits", f"{value['bits']!r} bits is out of range (allowed: 32, 16, 8, 4, 2, 1)")
    return from_data(ActQuant, value, path)


def parse_sparsity(value: Any, path: str) -> Sparsity | Literal["none"]:
    """Parses ``"2:4"``, ``[2, 4]``, ``{n: 2, m: 4}`` or ``none``."""
    if value == "none" or value is None:
        return "none"
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
            raise FieldError(path, f"{value!r} is not N:M sparsity (write it like '2:4', or none)")
        value = {"n": int(parts[0]), "m": int(parts[1])}
    elif isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise FieldError(path, f"{value!r} is not N:M sparsity (write it like '2:4', or none)")
        value = {"n": value[0], "m": value[1]}
    return from_data(Sparsity, value, path)


def _dump_weight(w: WeightQuant) -> Any:
    for name, short in _WEIGHT_SHORTHANDS.items():
        if short == w:
            return name
    return to_data(w)


def _dump_activation(a: ActQuant) -> Any:
    for name, short in _ACT_SHORTHANDS.items():
        if short == a:
            return name
    return to_data(a)


def _dump_sparsity(s: Sparsity | Literal["none"] | None) -> Any:
    return s if s == "none" or s is None else str(s)


LayerSelection = Any  # "all" | "frontend" | "layers" | "post" | "heads" | int | "a-b" | tuple[int, ...]
_SCOPES = ("all", "frontend", "layers", "post", "heads")


def parse_layers(value: Any, path: str) -> LayerSelection:
    """Validates a rule's layer selection; the indices are checked against the graph later."""
    if isinstance(value, bool):
        raise FieldError(
            path,
            f"{value!r} is not a layer selection (allowed: all, frontend, layers, post, heads, N, 'A-B', [N, ...])",
        )
    if isinstance(value, int):
        if value < 0:
            raise FieldError(path, f"{value} is negative (layer indices start at 0)")
        return value
    if isinstance(value, str):
        if value in _SCOPES:
            return value
        parts = value.split("-")
        if len(parts) == 2 and all(p.strip().isascii() and p.strip().isdigit() for p in parts):
            lo, hi = int(parts[0]), int(parts[1])
            if lo > hi:
                raise FieldError(path, f"range {value!r} has its start after its end (write it as '{hi}-{lo}')")
            return f"{lo}-{hi}"
    if isinstance(value, (list, tuple)) and value:
        items = []
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise FieldError(f"{path}[{i}]", f"{v!r} is not a layer index (a non-negative integer)")
            items.append(v)
        return tuple(items)
    raise FieldError(
        path, f"{value!r} is not a layer selection (allowed: all, frontend, layers, post, heads, N, 'A-B', [N, ...])"
    )


@dataclass(frozen=True)
class CompressionRule:
    """Assigns compression to the selected leaves; later rules override earlier ones field by field.

    Attributes:
        layers: ``all`` (every node), a section (``frontend``, ``layers``: every node of the ``layers``
            section, ``post``, ``heads``), a layer index, an inclusive range ``"4-11"`` or a list of
            indices into ``layers``.
        modules: selectors of leaves inside the selected nodes: tag names (``attention``, ``q``, ``k``,
            ``v``, ``out``, ``ffn``, ``conv``, ``pointwise``, ``depthwise``, ``extractor``, ``head``,
            ``matmul``, ``scores``, ``context``...) or shell-style globs on a leaf's path inside its node
            (``ffn1.*``). Empty means every leaf. The attention products ``attention.scores`` (``Q K^T``)
            and ``attention.context`` (``P V``) are leaves too (tags ``attention``, ``matmul`` and
            ``scores`` / ``context``): a rule's ``activation`` quantizes both of their inputs, and its
            ``weight`` and ``sparsity`` pass them by.
        weight: weight format for the selected leaves.
        activation: activation format for the selected leaves. Without an explicit ``symmetric``, each
            input takes a signed or unsigned grid as its producer is signed or non-negative (BiT: Q, K, V
            and most inputs ``+-alpha``; the probabilities P, ReLU outputs ``{0, alpha}``); an explicit
            ``symmetric`` applies to every input the rule reaches.
        sparsity: N:M sparsity (``"2:4"``) or ``none`` to make them dense again.
    """

    layers: Any = field("all", parse=parse_layers)
    modules: tuple[str, ...] = ()
    weight: WeightQuant | None = field(None, parse=parse_weight, dump=_dump_weight)
    activation: ActQuant | None = field(None, parse=parse_activation, dump=_dump_activation)
    sparsity: Any = field(None, parse=parse_sparsity, dump=_dump_sparsity)

    def check(self) -> None:
        if self.weight is None and self.activation is None and self.sparsity is None:
            raise FieldError("", "a compression rule needs at least one of weight, activation, sparsity")
        for i, sel in enumerate(self.modules):
            if not sel:
                raise FieldError(f"modules[{i}]", "empty selector")

    def for_products(self) -> CompressionRule:
        """This rule as it applies to attention products: its activation format alone."""
        return dataclasses.replace(self, weight=None, sparsity=None)

    def apply(self, base: Compression) -> Compression:
        """Returns ``base`` with this rule's fields overriding it."""
        out = base
        if self.weight is not None:
            out = dataclasses.replace(out, weight=self.weight)
        if self.activation is not None:
            out = dataclasses.replace(out, activation=self.activation)
        if self.sparsity is not None:
            out = dataclasses.replace(out, sparsity=None if self.sparsity == "none" else self.sparsity)
        return out
