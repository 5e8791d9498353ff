"""The weight-sharing supernet of a search space (issue 14).

* :mod:`~trainers.supernet.slots`: which shared tensor each parameter of a candidate reads;
* :mod:`~trainers.supernet.bank`: :class:`Supernet` (the shared tensors, candidates as views) and
  :func:`extract` (an ordinary model with the inherited weights);
* :mod:`~trainers.supernet.sandwich`: the training loss (sandwich rule, the recipe's distillation);
* :mod:`~trainers.supernet.train`: :func:`train_supernet` (``planner supernet train``), saved folders;
* :mod:`~trainers.supernet.score`: :class:`SupernetScorer` (``evaluator: supernet``).
"""

from trainers.supernet.bank import SlotShape, Supernet, arch_key, extract
from trainers.supernet.sandwich import CandidateSampler, SandwichLoss, SubnetView, step_candidates
from trainers.supernet.score import SupernetScorer, recalibrate_bn
from trainers.supernet.slots import Slot, slot_table
from trainers.supernet.train import load_supernet, train_supernet, write_supernet

__all__ = ["CandidateSampler", "SandwichLoss", "Slot", "SlotShape", "SubnetView", "Supernet", "SupernetScorer",
           "arch_key", "extract", "load_supernet", "recalibrate_bn", "slot_table", "step_candidates",
           "train_supernet", "write_supernet"]  # fmt: skip
