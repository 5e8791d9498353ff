"""Materialization of an :class:`~planner.ir.EncoderGraph` into plain, typed PyTorch modules."""

from planner.nn.builders import BUILDERS
from planner.nn.model import Encoder, EncoderOutput, materialize

__all__ = ["BUILDERS", "Encoder", "EncoderOutput", "materialize"]
