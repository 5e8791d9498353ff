"""The torch-free encoder graph IR: architecture specs, node kinds, attention kinds, compression."""

from planner.ir.attention import ATTENTION_KINDS
from planner.ir.compression import ActQuant, Compression, CompressionRule, Sparsity, WeightQuant
from planner.ir.graph import EncoderGraph, GraphNode, build_graph
from planner.ir.io import dump, dumps, from_dict, load, loads
from planner.ir.kinds import NODE_KINDS, NodeContext
from planner.ir.leaf import Leaf
from planner.ir.spec import ArchSpec, InputSpec, dump_spec, parse_spec

__all__ = [
    "ATTENTION_KINDS",
    "NODE_KINDS",
    "ActQuant",
    "ArchSpec",
    "Compression",
    "CompressionRule",
    "EncoderGraph",
    "GraphNode",
    "InputSpec",
    "Leaf",
    "NodeContext",
    "Sparsity",
    "WeightQuant",
    "build_graph",
    "dump",
    "dump_spec",
    "dumps",
    "from_dict",
    "load",
    "loads",
    "parse_spec",
]
