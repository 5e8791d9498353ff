"""The one hook point between compression attributes and modules.

Every linear and convolution of a materialized model is created here, from its IR :class:`Leaf`. The
resolved :class:`~planner.ir.Compression` of each leaf is recorded in the model's ``compression_plan``
(module path -> Compression); the compression stage reads that plan to attach quantizers and masks.
"""

from __future__ import annotations

from torch import nn

from planner.ir.leaf import Leaf

__all__ = ["build_leaf"]


def build_leaf(leaf: Leaf, *, padding: int = 0) -> nn.Module:
    """Builds the module of a leaf with exactly the leaf's parameters."""
    if leaf.op == "linear":
        return nn.Linear(leaf.in_dim, leaf.out_dim, bias=leaf.bias)
    if leaf.op == "conv1d":
        conv = nn.Conv1d(leaf.in_dim, leaf.out_dim, leaf.kernel[0], stride=leaf.stride[0], groups=leaf.groups,
                         bias=leaf.bias, padding=padding)  # fmt: skip
        if leaf.weight_norm:
            conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        return conv
    if leaf.op == "conv2d":
        return nn.Conv2d(leaf.in_dim, leaf.out_dim, leaf.kernel, stride=leaf.stride, groups=leaf.groups, bias=leaf.bias)
    if leaf.op == "layer_norm":
        return nn.LayerNorm(leaf.in_dim)
    if leaf.op == "batch_norm":
        return nn.BatchNorm1d(leaf.in_dim)
    raise ValueError(f"no module for leaf op {leaf.op!r}")  # group_norm and param are built by their nodes
