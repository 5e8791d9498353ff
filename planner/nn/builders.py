"""The materializer table: one module builder per node kind, keyed like :data:`planner.ir.NODE_KINDS`.

A builder takes the :class:`~planner.ir.GraphNode` and returns an ``nn.Module``. Main-path modules
implement ``forward(x, lengths, state) -> (x, lengths)``; head modules implement
``forward(output, hidden_states, lengths)``. The table below is the whole map, written out here from the
block modules' classes (they register nothing themselves); a test asserts its key set equals the IR's.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from planner.nn.conformer import ConformerLayer
from planner.nn.frontends import ConvExtractor, ConvPosEmbedding, LayerNormBlock, MaskEmbedding
from planner.nn.heads import CtcHead, ProjectionHeads
from planner.nn.squeezeformer import SqueezeformerLayer, TimeRecovery, TimeReduction
from planner.nn.subsampling import Conv2dSubsampling, DwSepSubsampling
from planner.nn.transformer import TransformerLayer
from planner.registry import Registry

__all__ = ["BUILDERS"]

BUILDERS: Registry[Callable[..., nn.Module]] = Registry(
    "node builder",
    {
        "conv_extractor": ConvExtractor,
        "conv2d_subsampling": Conv2dSubsampling,
        "dwsep_subsampling": DwSepSubsampling,
        "mask_embedding": MaskEmbedding,
        "conv_pos_embedding": ConvPosEmbedding,
        "layer_norm": LayerNormBlock,
        "transformer": TransformerLayer,
        "conformer": ConformerLayer,
        "squeezeformer": SqueezeformerLayer,
        "time_reduction": TimeReduction,
        "time_recovery": TimeRecovery,
        "projection_heads": ProjectionHeads,
        "ctc": CtcHead,
    },
)
