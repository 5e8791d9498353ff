"""The weight-sharing supernet: one tensor per slot, and every candidate a sliced view of them.

:class:`Supernet` holds, for every slot (:mod:`trainers.supernet.slots`) that any candidate of its cover
uses, one float tensor of the largest shape any of them needs. A candidate runs as the planner's own model
of its graph (built once and cached, with its own buffers: batch-norm statistics, quantizer scales, N:M
masks) whose parameters are replaced, for the call, by views of the shared tensors
(:func:`torch.func.functional_call`): gradients of every candidate land in the one set of shared tensors,
and the fake quantizers and masks of a compressed candidate act on its views as they act on an ordinary
compressed model. :func:`extract` copies the views into an ordinary model, so a candidate scored inside
the supernet and its extracted model compute the same numbers.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from planner.compress import SparsitySchedule, materialize
from planner.cost import estimate
from planner.errors import SupernetError
from planner.ir.graph import EncoderGraph
from planner.ir.io import dumps
from planner.nn.model import Encoder, EncoderOutput
from trainers.supernet.slots import Slot, slot_shapes, slot_table

__all__ = ["Supernet", "SlotShape", "arch_key", "cover_slots", "extract"]

_ALWAYS = SparsitySchedule("few_shot", steps=2**62)  # N:M masks follow the shared weights at every training step


def arch_key(graph: EncoderGraph) -> str:
    """A short stable name of an architecture (its canonical YAML's hash)."""
    return hashlib.sha256(dumps(graph).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SlotShape:
    """A slot's shared tensor: its shape (the largest over the cover) and its centre-cropped dimensions."""

    shape: tuple[int, ...]
    kernel_dims: tuple[int, ...] = ()


@dataclass
class _Subnet:
    module: Encoder
    slots: dict[str, Slot]
    shapes: dict[str, tuple[int, ...]]


def _index(slot: Slot, full: Sequence[int], want: Sequence[int]) -> tuple[slice, ...]:
    """Leading entries of each dimension, the centre of each kernel dimension (the lower centre when the
    two sizes differ by an odd number)."""
    out = []
    for d, (n_full, n) in enumerate(zip(full, want)):
        start = (n_full - n) // 2 if d in slot.kernel_dims else 0
        out.append(slice(start, start + n))
    return tuple(out)


class Supernet(nn.Module):
    """Shared tensors for every candidate of a space, and the candidates' forward passes on them.

    Build one with :meth:`from_graphs` (the cover of a space: every candidate that the space can yield
    must fit inside it; :func:`planner.search.supernet_cover` gives one), or with the slot table of a saved
    supernet (``Supernet(slots)`` then ``load_state_dict``).

    Args:
        slots: slot key -> :class:`SlotShape`.
        cache: candidate models kept built (least recently used first out).

    Attributes:
        keys: the slot keys, sorted; parameter ``tensors.i`` is the tensor of ``keys[i]``.
    """

    def __init__(self, slots: Mapping[str, SlotShape], cache: int = 64) -> None:
        super().__init__()
        self.keys = sorted(slots)
        self.slots = {k: slots[k] for k in self.keys}
        self.tensors = nn.ParameterList([nn.Parameter(torch.zeros(slots[k].shape)) for k in self.keys])
        self._where = {k: i for i, k in enumerate(self.keys)}
        self._cache: OrderedDict[str, _Subnet] = OrderedDict()
        self._cache_size = cache

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_graphs(cls, graphs: Iterable[EncoderGraph], *, seed: int = 0, cache: int = 64) -> Supernet:
        """The supernet of ``graphs``: every slot they use, at the largest shape any of them needs.

        Each shared tensor starts from the initialisation of the largest candidate that uses it (the
        planner's own initialisation of that candidate's model, seeded from ``seed``): the candidates that
        added or enlarged a slot are built smallest first and each writes its initial weights into the
        leading (centre) part of its slots, so a larger candidate overwrites a smaller one where both reach.

        Raises:
            SupernetError: two candidates give one slot tensors of different rank (the space mixes what the
                slot rules cannot share).
        """
        graphs = list(graphs)
        slots, grew = cover_slots(graphs)
        net = cls(slots, cache=cache)
        sizes = {i: estimate(graphs[i]).params for i in grew}
        with torch.no_grad():
            for rank, i in enumerate(sorted(grew, key=lambda i: (sizes[i], i))):
                torch.manual_seed(seed * 1_000_003 + rank)
                g = graphs[i]
                model = materialize(g)
                table = slot_table(model, g)
                for name, p in model.named_parameters():
                    net._view(table[name], p.shape).copy_(p)
        return net

    # -- views ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    def tensor(self, key: str) -> Tensor:
        """The shared tensor of slot ``key``."""
        return self.tensors[self._where[key]]

    def _view(self, slot: Slot, shape: Sequence[int]) -> Tensor:
        full = self.tensor(slot.key)
        return full[_index(slot, full.shape, shape)]

    def fits(self, graph: EncoderGraph) -> list[str]:
        """What ``graph`` needs that the supernet does not hold (empty: it is one of its candidates); checked
        on the slots' shapes, nothing is built."""
        return self._misfits(graph, {k: v[0] for k, v in slot_shapes(graph).items()})

    def _misfits(self, graph: EncoderGraph, needs: Mapping[str, tuple[int, ...]]) -> list[str]:
        problems = []
        for key, shape in needs.items():
            have = self.slots.get(key)
            if have is None:
                problems.append(f"slot {key} is not in the supernet")
            elif len(have.shape) != len(shape) or any(n > m for n, m in zip(shape, have.shape)):
                problems.append(f"slot {key} holds {have.shape}, the candidate needs {shape}")
        if not problems:
            return []
        return [f"{graph.name}: not a candidate of this supernet ({len(problems)} tensors): {problems[0]}; train a "
                "supernet of the space this candidate comes from"]  # fmt: skip

    def _subnet(self, graph: EncoderGraph) -> _Subnet:
        key = arch_key(graph)
        sub = self._cache.get(key)
        if sub is not None:
            self._cache.move_to_end(key)
            return sub
        with torch.device("meta"):
            probe = materialize(graph)
        table = slot_table(probe, graph)
        shapes = {n: tuple(p.shape) for n, p in probe.named_parameters()}
        problems = self._misfits(graph, {slot.key: shapes[name] for name, slot in table.items()})
        if problems:
            raise SupernetError(problems[0])
        module = materialize(graph).to(self.device)
        for mod in module.modules():  # its own tensors are never used (the views replace them in every call):
            for k, p in list(mod._parameters.items()):  # kept as shapes only (64 cached candidates cost buffers)
                if p is not None:
                    mod._parameters[k] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"), False)
        schedule = getattr(module, "mask_schedule", None)
        if schedule is not None:
            schedule.config = _ALWAYS
        sub = _Subnet(module, table, shapes)
        self._cache[key] = sub
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return sub

    def views(self, graph: EncoderGraph) -> dict[str, Tensor]:
        """``graph``'s parameters as views of the shared tensors, by the names of its model's parameters."""
        sub = self._subnet(graph)
        return {name: self._view(slot, sub.shapes[name]) for name, slot in sub.slots.items()}

    def forward(self, graph: EncoderGraph, x: Tensor, lengths: Tensor | None = None,
                mask: Tensor | None = None) -> EncoderOutput:  # fmt: skip
        """Runs candidate ``graph`` on the shared tensors (the arguments of :meth:`Encoder.forward`).

        In training mode the candidate's cached model runs in training mode (batch statistics, masks
        recomputed from the current weights); in eval mode a freshly built model runs, exactly what
        :func:`extract` returns.

        Raises:
            SupernetError: ``graph`` needs slots the supernet does not hold.
        """
        if self.training:
            sub = self._subnet(graph)
            module = sub.module.train()
        else:
            sub = self._subnet(graph)
            module = materialize(graph).to(self.device).eval()
        params = {name: self._view(slot, sub.shapes[name]) for name, slot in sub.slots.items()}
        return functional_call(module, params, (x, lengths), {"mask": mask}, strict=False, tie_weights=False)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Supernet:  # .to(), .cuda(), .double() ...
        self._cache.clear()  # cached models rebuild on the new device / dtype
        return super()._apply(fn, *args, **kwargs)

    def shared_state(self) -> dict[str, Tensor]:
        """The shared tensors by slot key (what ``supernet.safetensors`` holds)."""
        return {k: t.detach() for k, t in zip(self.keys, self.tensors)}

    def load_shared_state(self, state: Mapping[str, Tensor]) -> None:
        """Loads :meth:`shared_state` output.

        Raises:
            SupernetError: a slot is missing, extra or of another shape.
        """
        missing = [k for k in self.keys if k not in state]
        extra = [k for k in state if k not in self._where]
        bad = [k for k in self.keys if k in state and tuple(state[k].shape) != self.slots[k].shape]
        if missing or extra or bad:
            raise SupernetError(f"the saved tensors do not fit the supernet (missing {missing[:3]}, extra "
                                f"{extra[:3]}, other shapes {bad[:3]})")  # fmt: skip
        with torch.no_grad():
            for k, t in zip(self.keys, self.tensors):
                t.copy_(state[k])


def cover_slots(graphs: Sequence[EncoderGraph]) -> tuple[dict[str, SlotShape], list[int]]:
    """The slots of a supernet of ``graphs`` (every slot they use, at the largest shape any needs), and the
    indices of the graphs that added or enlarged a slot (whose initialisation :meth:`Supernet.from_graphs`
    uses); computed from the slots' shapes, nothing is built.

    Raises:
        SupernetError: no graphs; two graphs give one slot tensors of different rank.
    """
    if not graphs:
        raise SupernetError("a supernet needs at least one candidate")
    slots: dict[str, SlotShape] = {}
    grew = []
    for i, g in enumerate(graphs):
        added = False
        for key, (shape, kernel) in slot_shapes(g).items():
            old = slots.get(key)
            if old is None:
                slots[key], added = SlotShape(shape, kernel), True
                continue
            if len(old.shape) != len(shape) or old.kernel_dims != kernel:
                raise SupernetError(f"{g.name}: slot {key} needs shape {shape}, another candidate {old.shape}: "
                                    "the space gives one slot tensors that do not nest")  # fmt: skip
            if any(n > m for n, m in zip(shape, old.shape)):
                slots[key], added = SlotShape(tuple(max(a, b) for a, b in zip(old.shape, shape)), kernel), True
        if added:
            grew.append(i)
    return slots, grew


def extract(supernet: Supernet, graph: EncoderGraph) -> Encoder:
    """An ordinary planner model of ``graph`` (``planner.materialize(graph)``) holding its weights from
    ``supernet``: its parameters are copies of the candidate's views, its buffers fresh (batch-norm
    statistics to recalibrate, see :func:`trainers.supernet.recalibrate_bn`).

    Raises:
        SupernetError: ``graph`` is not a candidate of ``supernet``.
    """
    views = supernet.views(graph)
    model = materialize(graph).to(supernet.device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(views[name])
    return model
