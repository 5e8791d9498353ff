"""Bit packing of small unsigned integers into bytes (little-endian within each byte)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pack_bits", "unpack_bits"]


def pack_bits(values: Tensor, bits: int) -> Tensor:
    """Packs ``values`` (integers in ``[0, 2^bits)``, flattened) into ``ceil(n * bits / 8)`` uint8 bytes.

    ``bits`` must divide 8; value ``i`` goes to byte ``i * bits // 8`` at bit offset ``i * bits % 8`` (the
    first value in the lowest bits), the layout :mod:`planner.cost.storage` prices.

    Example:
        >>> pack_bits(torch.tensor([1, 0, 3, 2]), 2).tolist()
        [177]
    """
    if 8 % bits:
        raise ValueError(f"cannot pack {bits}-bit values (bits must divide 8)")
    per = 8 // bits
    v = values.reshape(-1).to(torch.int64)
    pad = (-v.numel()) % per
    if pad:
        v = torch.cat([v, v.new_zeros(pad)])
    shifts = torch.arange(per, dtype=torch.int64) * bits
    return (v.reshape(-1, per) << shifts).sum(dim=1).to(torch.uint8)


def unpack_bits(packed: Tensor, bits: int, count: int) -> Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` values, int64."""
    per = 8 // bits
    shifts = torch.arange(per, dtype=torch.int64) * bits
    v = (packed.to(torch.int64).reshape(-1, 1) >> shifts) & ((1 << bits) - 1)
    return v.reshape(-1)[:count]
