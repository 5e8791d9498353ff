"""Storage of one leaf at its stored width: the byte layout the packed exporter writes.

This is the single source of truth for ``storage_bytes``; the packed exporter's file size must equal the
sum of :func:`leaf_storage_bytes` over the leaves (within 1% for the container's own headers).
"""

from __future__ import annotations

import math

from planner.ir.compression import FLOAT32, Compression
from planner.ir.leaf import Leaf

__all__ = ["leaf_storage_bytes", "weight_storage_bytes", "input_quantizer_bytes", "scale_groups"]

_FLOAT_BYTES = 4  # float32: scales, biases, norms, free parameters, unquantized weights


def scale_groups(leaf: Leaf, comp: Compression) -> int:
    """Number of float32 scales of a quantized weight (per tensor: 1; per channel: out; sub-channel: out x groups)."""
    w = comp.weight
    if w.is_float:
        return 0
    if w.granularity == "per_tensor":
        return 1
    if w.granularity == "per_channel":
        return leaf.out_dim
    return leaf.out_dim * w.group_count(leaf.fan_in)


def weight_storage_bytes(leaf: Leaf, comp: Compression, *, zero_points: bool = True) -> int:
    """Bytes of the weight matrix alone (values, N:M mask, scales, zero points); see :func:`leaf_storage_bytes`.

    ``zero_points=False`` leaves out the zero points: the USM-Lite papers' accounting (Tables 1-3).
    """
    numel = leaf.weight_numel
    w = comp.weight
    kept = numel if comp.sparsity is None else numel // comp.sparsity.m * comp.sparsity.n
    mask = 0 if comp.sparsity is None else math.ceil(numel / 8)
    if w.is_float:
        return kept * (w.bits // 8) + mask
    groups = scale_groups(leaf, comp)
    zp = groups if (zero_points and not w.symmetric and not w.is_binary) else 0
    return math.ceil(kept * w.bits / 8) + mask + _FLOAT_BYTES * groups + zp


def _quantizer_bytes(bits: int, channels: int) -> int:
    """One input quantizer: BiT's ``alpha`` and ``channels`` ``beta`` (float32), or an integer grid's scale
    (float32) and zero point (int32); nothing for floats."""
    if bits >= 16:
        return 0
    if bits == 1:
        return _FLOAT_BYTES * (1 + channels)
    return _FLOAT_BYTES + 4


def input_quantizer_bytes(leaf: Leaf, comp: Compression) -> int:
    """Bytes of the input quantizers of a leaf (what inference needs to quantize its inputs again).

    A linear or convolution has one (``beta`` per input channel); a product has two: ``scores`` quantizes
    Q and K (``beta`` per model channel each), ``context`` the probabilities (``beta`` per head) and V.
    """
    bits = comp.activation.bits
    if leaf.is_product:
        second = leaf.in_dim if leaf.path.endswith("scores") else leaf.groups
        return _quantizer_bytes(bits, leaf.in_dim) + _quantizer_bytes(bits, second)
    return _quantizer_bytes(bits, leaf.in_dim) if leaf.compressible else 0


def leaf_storage_bytes(leaf: Leaf, compression: Compression = FLOAT32) -> int:
    """Bytes one leaf occupies in a packed checkpoint.

    Byte layout, per tensor (each tensor starts on a byte boundary):

    * **Weight values** of a linear/convolution: ``ceil(kept x bits / 8)`` bytes, where ``kept`` is every
      weight, or ``numel x N / M`` with N:M sparsity (only the kept values are stored, in row-major order
      of output channel then input position). Floats: 4 bytes (fp32) or 2 bytes (fp16) per kept value;
      integers 8/4/2 bits and binary (BiT) 1 bit per kept value, packed little-endian within each byte.
    * **N:M mask**: 1 bit per weight (kept or not), ``ceil(numel / 8)`` bytes, only with sparsity.
    * **Scales**: one float32 (4 bytes) per scale group of a quantized weight: 1 per tensor
      (``per_tensor``, BiT's default), 1 per output channel (``per_channel``), or ``groups`` per output
      channel (``subchannel``). BiT stores ``mean(|W|)`` as its scale; nothing else.
    * **Zero points**: asymmetric integer grids (int2 by default) store one ``uint8`` (1 byte) per scale
      group. Symmetric grids and binary weights have none.
    * **Bias**, the weight-norm magnitude ``g`` (``kernel`` entries; not stored when the weight is
      quantized or sparse, which packs the normalised product ``g v / ||v||``), norm weights/biases, batch norm's
      running mean and variance, and free parameters (mask embedding, relative-position biases,
      Squeezeformer scalings): float32, 4 bytes each.
    * **Input quantizers** (:func:`input_quantizer_bytes`): BiT's elastic binarizer keeps ``alpha`` and a
      ``beta`` per input channel, an integer input grid its scale (float32) and zero point (int32). An
      attention product (``matmul`` leaf) has no weight, only the quantizers of its two inputs.

    Args:
        leaf: the IR leaf.
        compression: its resolved compression (``graph.compression.get(path, FLOAT32)``); only linears and
            convolutions are ever compressed.

    Returns:
        The exact byte count.

    Example:
        >>> from planner.ir.kinds.base import linear
        >>> from planner.ir.compression import Compression, WeightQuant
        >>> leaf_storage_bytes(linear("fc", 1536, 6144, set()), Compression(weight=WeightQuant(bits=8)))
        9486336
    """
    if leaf.is_product:
        return input_quantizer_bytes(leaf, compression)
    if not leaf.compressible:
        return _FLOAT_BYTES * (leaf.params + leaf.buffer_numel)
    extra = leaf.params - leaf.weight_numel  # bias and weight-norm g, kept float32
    if leaf.weight_norm and (compression.sparsity is not None or compression.weight.bits != 32):
        extra -= leaf.kernel[-1]  # a compressed weight-normalised weight is packed as g v / ||v||: no g
    return weight_storage_bytes(leaf, compression) + _FLOAT_BYTES * extra + input_quantizer_bytes(leaf, compression)
