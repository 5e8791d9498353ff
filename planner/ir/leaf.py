"""Leaves: the parameterised operations a node is made of, derived from the IR without torch.

Every node kind lists its leaves (linear, convolution, norm, free parameter, and the attention products
``attention.scores`` / ``attention.context``) with their shapes and a path relative to the node. The
materializer builds a module at exactly that path with exactly those parameters (a test checks it for
every kind), the cost model prices each leaf, and compression rules select leaves by their tags or paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Leaf", "LeafOp", "COMPRESSIBLE_OPS", "PRODUCT_OPS"]

LeafOp = Literal["linear", "conv1d", "conv2d", "layer_norm", "group_norm", "batch_norm", "param", "matmul"]
COMPRESSIBLE_OPS = frozenset({"linear", "conv1d", "conv2d"})
#: products of two activations (attention ``Q K^T`` and ``P V``): no weight, but both inputs can be quantized
PRODUCT_OPS = frozenset({"matmul"})


@dataclass(frozen=True)
class Leaf:
    """One parameterised operation, or an activation product that compression can quantize.

    Attributes:
        path: dotted path inside its node, e.g. ``attention.q_proj``; also the module path once
            materialized.
        op: the operation.
        in_dim: input features / channels (norms: the normalised size; ``param``: unused; ``matmul``: the
            model width D of the per-frame operands Q, K, V).
        out_dim: output features / channels.
        kernel: convolution kernel size per spatial dim.
        stride: convolution stride per spatial dim.
        groups: convolution groups (norms: group-norm groups; ``matmul``: attention heads).
        bias: whether the op has a bias.
        weight_norm: convolution weight is weight-normalised over its last dim (``g`` has ``kernel`` entries).
        shape: shape of a free parameter (``param``).
        tags: names that compression selectors match (``attention``, ``q``, ``ffn``, ``conv``...).
        producers: the op that produces each input where the node kind states it (an FFN's activation
            before its second linear, the ReLU before a subsampling conv or projection, the softmax
            before ``P V``); one entry per input (a product has two, ``input`` and ``other``), ``""`` or
            missing: not stated. Compression reads it to choose signed or unsigned input grids
            (:func:`planner.ir.compression.input_formats`: ``relu`` and ``softmax`` are non-negative).
    """

    path: str
    op: LeafOp
    in_dim: int = 0
    out_dim: int = 0
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True
    weight_norm: bool = False
    shape: tuple[int, ...] = ()
    tags: frozenset[str] = field(default_factory=frozenset)
    producers: tuple[str, ...] = ()

    @property
    def compressible(self) -> bool:
        """A linear or convolution: weight quantization, N:M sparsity and input quantization apply."""
        return self.op in COMPRESSIBLE_OPS

    @property
    def is_product(self) -> bool:
        """An attention product (``matmul``): only activation quantization applies, to both of its inputs."""
        return self.op in PRODUCT_OPS

    @property
    def quantizable(self) -> bool:
        """Compression rules may select it (a linear, a convolution or a product)."""
        return self.compressible or self.is_product

    @property
    def fan_in(self) -> int:
        """Input weights per output channel: the axis N:M groups and sub-channel scales run along."""
        if self.op == "linear":
            return self.in_dim
        if self.op in ("conv1d", "conv2d"):
            return self.in_dim // self.groups * math.prod(self.kernel)
        return 0

    @property
    def weight_numel(self) -> int:
        """Elements of the weight matrix that compression applies to (0 for non-compressible leaves)."""
        return self.out_dim * self.fan_in

    @property
    def bias_numel(self) -> int:
        return self.out_dim if (self.compressible and self.bias) else 0

    @property
    def buffer_numel(self) -> int:
        """Float buffers inference needs besides the parameters: batch norm's running mean and variance."""
        return 2 * self.in_dim if self.op == "batch_norm" else 0

    @property
    def params(self) -> int:
        """Trainable parameter count, as ``sum(p.numel() for p in module.parameters())``."""
        if self.compressible:
            extra = self.kernel[-1] if self.weight_norm else 0
            return self.weight_numel + self.bias_numel + extra
        if self.op in ("layer_norm", "group_norm", "batch_norm"):
            return 2 * self.in_dim if self.bias else self.in_dim
        if self.op == "param":
            return math.prod(self.shape)
        if self.op == "matmul":
            return 0
        raise ValueError(self.op)
