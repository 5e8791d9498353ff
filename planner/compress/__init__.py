"""Compression of materialized models: fake quantization, N:M masks and packed export.

* :func:`materialize` (``planner.materialize``) builds a graph's float model (:func:`planner.nn.build`),
  then compresses it: :func:`compress_` attaches the plan's quantizers and masks in place when the plan is
  not empty; :class:`SparsitySchedule` / ``model.mask_schedule.step()`` drive the masks.
* :func:`export` writes a packed directory; :func:`load_packed` rebuilds the model from it exactly.

See ``docs/compression.md`` for the methods and what comes from ``torch.ao``.
"""

from planner.compress._apply import CompressionError, FakeCompressedWeight, compress_, compressed_leaves
from planner.compress._export import FORMAT, VERSION, TaskHead, export, load_checkpoint_, load_packed
from planner.compress._materialize import materialize
from planner.compress._quant import (
    BinaryWeightQuantizer,
    ElasticBinarizer,
    HalfWeightQuantizer,
    IntActQuantizer,
    IntWeightQuantizer,
)
from planner.compress._sparsity import MaskSchedule, NMSparsifier, SparsitySchedule, nm_mask

__all__ = [
    "FORMAT",
    "VERSION",
    "BinaryWeightQuantizer",
    "CompressionError",
    "ElasticBinarizer",
    "FakeCompressedWeight",
    "HalfWeightQuantizer",
    "IntActQuantizer",
    "IntWeightQuantizer",
    "MaskSchedule",
    "NMSparsifier",
    "SparsitySchedule",
    "TaskHead",
    "compress_",
    "compressed_leaves",
    "export",
    "load_checkpoint_",
    "load_packed",
    "materialize",
    "nm_mask",
]
