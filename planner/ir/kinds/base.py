"""The node-kind registry and the context shape inference passes to each node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from planner.errors import FieldError
from planner.ir.leaf import Leaf
from planner.registry import Registry

__all__ = [
    "NODE_KINDS",
    "NodeContext",
    "NodeKind",
    "Domain",
    "Role",
    "MAX_WIDTH",
    "MAX_HIDDEN",
    "MAX_KERNEL",
    "MAX_LAYERS",
    "MAX_CONV_LAYERS",
]

# Ceilings on sizes read from a file: far above any speech encoder (widths up to 2048, 48 layers), low enough
# that an absurd value (``width: 10**12``, ``repeat: 100000000``) is refused at once instead of being built.
MAX_WIDTH = 16_384
"""The model width, channel counts, groups, a projection head's (teacher) width."""
MAX_HIDDEN = 65_536
"""An FFN's hidden width, a CTC vocabulary."""
MAX_KERNEL = 1_024
"""Convolution kernels and strides."""
MAX_LAYERS = 1_024
"""Entries of ``layers`` with repeats expanded (and so ``repeat`` itself)."""
MAX_CONV_LAYERS = 64
"""Convolutions of one frontend (``conv_layers`` with ``N x`` expanded, ``channels`` of a subsampling)."""

Domain = Literal["waveform", "features", "hidden"]
Role = Literal["frontend", "layer", "post", "head"]

NODE_KINDS: Registry[type] = Registry("node kind")


@dataclass(frozen=True)
class NodeContext:
    """What a node sees of the graph when shapes are inferred.

    Attributes:
        width: the model width (``width`` of the architecture).
        in_width: channels or features arriving at this node.
        in_domain: ``waveform`` (B, T), ``features`` (B, T, n_mels) or ``hidden`` (B, T, D).
        n_mels: filterbank size for ``features`` inputs.
        index: the node's index inside its section.
        layer_count: number of entries in ``layers``.
    """

    width: int
    in_width: int
    in_domain: Domain
    n_mels: int | None = None
    index: int = 0
    layer_count: int = 0


class NodeKind:
    """Mixin for node configs (frozen dataclasses).

    Class attributes:
        kind: the registry key.
        roles: sections the node may appear in.
        accepts: input domains it takes.

    Every kind also defines ``leaves(ctx) -> list[Leaf]`` (a test checks each registered kind).
    """

    kind: ClassVar[str]
    roles: ClassVar[tuple[Role, ...]]
    accepts: ClassVar[tuple[Domain, ...]] = ("hidden",)
    has_attention: ClassVar[bool] = False

    def validate(self, ctx: NodeContext) -> None:
        """Raises :class:`FieldError` (path relative to the node) if the node cannot work in ``ctx``."""
        if ctx.in_domain not in self.accepts:
            fix = {"waveform": "set input: {kind: waveform} or use a features frontend (conv2d_subsampling, dwsep_subsampling)",
                   "features": "set input: {kind: features, n_mels: N} or use conv_extractor on a waveform",
                   "hidden": "put a frontend that produces hidden states (conv_extractor, conv2d_subsampling, "
                             "dwsep_subsampling) before it"}[self.accepts[0]]  # fmt: skip
            raise FieldError("kind", f"{self.kind} takes {' or '.join(self.accepts)} input, but it receives "
                             f"{ctx.in_domain} ({fix})")  # fmt: skip
        if ctx.in_domain == "hidden" and ctx.in_width != ctx.width:
            raise FieldError("kind", f"receives width {ctx.in_width}, expected the model width {ctx.width}")

    def out_width(self, ctx: NodeContext) -> int:
        return ctx.width

    def out_domain(self, ctx: NodeContext) -> Domain:
        return "hidden"

    def out_length(self, length: int) -> int:
        """Output frames for ``length`` input frames (samples for waveform input)."""
        return length


def linear(path: str, i: int, o: int, tags: set[str], bias: bool = True, producer: str = "") -> Leaf:
    """A linear leaf; ``producer``: the op its input comes from where it matters (``relu``), see :class:`Leaf`."""
    return Leaf(path, "linear", in_dim=i, out_dim=o, bias=bias, tags=frozenset(tags),
                producers=(producer,) if producer else ())  # fmt: skip


def conv1d(path: str, i: int, o: int, k: int, tags: set[str], *, stride: int = 1, groups: int = 1,
           bias: bool = True, weight_norm: bool = False) -> Leaf:  # fmt: skip
    return Leaf(path, "conv1d", in_dim=i, out_dim=o, kernel=(k,), stride=(stride,), groups=groups, bias=bias,
                weight_norm=weight_norm, tags=frozenset(tags))  # fmt: skip


def conv2d(path: str, i: int, o: int, k: int, s: int, tags: set[str], groups: int = 1, producer: str = "") -> Leaf:
    return Leaf(path, "conv2d", in_dim=i, out_dim=o, kernel=(k, k), stride=(s, s), groups=groups,
                tags=frozenset(tags), producers=(producer,) if producer else ())  # fmt: skip


def norm(path: str, op: str, dim: int, groups: int = 1) -> Leaf:
    return Leaf(path, op, in_dim=dim, out_dim=dim, groups=groups)  # type: ignore[arg-type]


def product(path: str, width: int, heads: int, tags: set[str], producers: tuple[str, ...] = ()) -> Leaf:
    """An attention product (``matmul``) over ``heads`` heads of a width-``width`` model."""
    return Leaf(path, "matmul", in_dim=width, out_dim=width, groups=heads, bias=False, tags=frozenset(tags),
                producers=producers)  # fmt: skip


def param(path: str, *shape: int) -> Leaf:
    return Leaf(path, "param", shape=tuple(shape))
