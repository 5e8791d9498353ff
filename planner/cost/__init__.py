"""The cost model: parameters, storage, MACs/FLOPs, BOPs and estimated latency of a graph, torch-free.

    cost = planner.estimate(graph, seconds=10, hardware="a100")         # bops="jeon2023": Jeon et al.'s Table 1
    cost.macs, cost.storage_bytes, cost.latency_s, cost.nvda_est_time, cost.layers[0]

Conventions are written next to each formula (:mod:`planner.cost.formulas`, :mod:`planner.cost.storage`)
and in ``docs/cost-model.md``. :func:`planner.profile.profile` (a floor above, with torch) cross-checks against DeepSpeed.
"""

from planner.cost._types import Cost, LeafCost
from planner.cost.attention import attended_pairs
from planner.cost.bops import BOPS_CONVENTIONS, BopsConvention
from planner.cost.estimate import estimate, shortest_input
from planner.cost.formulas import COST_FORMULAS
from planner.cost.hardware import Hardware, load_hardware, parse_hardware
from planner.cost.storage import leaf_storage_bytes, weight_storage_bytes
from planner.cost.table import format_cost

__all__ = [
    "BOPS_CONVENTIONS",
    "BopsConvention",
    "COST_FORMULAS",
    "Cost",
    "Hardware",
    "LeafCost",
    "attended_pairs",
    "estimate",
    "format_cost",
    "leaf_storage_bytes",
    "load_hardware",
    "parse_hardware",
    "shortest_input",
    "weight_storage_bytes",
]
