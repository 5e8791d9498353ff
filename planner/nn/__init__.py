"""Building an :class:`~planner.ir.EncoderGraph` into plain, typed, float PyTorch modules.

:func:`build` makes the float model; compression is a floor above (:func:`planner.compress.materialize`).
"""

from planner.nn.builders import BUILDERS
from planner.nn.model import Encoder, EncoderOutput, build

__all__ = ["BUILDERS", "Encoder", "EncoderOutput", "build"]
