"""A space's candidates as a supernet needs them: its cover, its largest and smallest, random draws.

Torch-free: the supernet itself (``trainers.supernet``) takes these graphs. :func:`supernet_cover` lists
candidates whose union holds every slot at its largest shape, which is what the supernet is built from:

* every assignment of the space's values when there are at most :data:`_FULL` of them (ranges longer than
  :data:`_ENUMERATED` points by their two ends); otherwise
* for every pair of domains and every pair of their values, a candidate with those two values and every
  other numeric domain at its largest (so each option -- block kinds, frontends, attention kinds,
  compression formats -- appears at full size, and so does each combination of two choices that decides
  which slots exist, such as a block kind with an activation format, or a depth with a width);
  a range of at most :data:`_ENUMERATED` points contributes every point, a longer one its two ends;
* ``samples`` uniform random candidates (combinations the one-at-a-time list above does not reach).

A candidate the cover misses still fails loudly: the supernet refuses a graph that needs a slot or a size
it does not hold (``SupernetError``), and the tests sample every shipped space against its cover.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import random
from typing import Any

from planner.cost import estimate
from planner.errors import ConfigError, FieldError
from planner.ir.graph import EncoderGraph
from planner.ir.io import dumps, from_dict
from planner.search._domains import Categorical, Domain, FloatRange, IntRange
from planner.search._space import SearchSpace

__all__ = ["INACTIVE", "SpaceSampler", "supernet_cover"]


def _numeric_max(d: Domain) -> Any:
    if isinstance(d, (IntRange, FloatRange)):
        return d.high
    nums = [c for c in d.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
    return max(nums) if len(nums) == len(d.choices) else None


_ENUMERATED = 16  # a range with at most this many points is listed point by point in the cover
_FULL = 4096  # a space with at most this many assignments (so listed) is covered by all of them


def _values(d: Domain) -> list[Any]:
    if isinstance(d, Categorical):
        return list(d.choices)
    if isinstance(d, IntRange) and d.size() <= _ENUMERATED:
        return list(range(d.low, d.high + 1, d.step))
    return sorted({d.low, d.high})


class SpaceSampler:
    """A space's valid candidates: ``largest()``, ``smallest()`` (by parameter count, over the cover) and
    ``sample(rng)`` (uniform over the space's values, invalid draws redrawn).

    With ``partition`` (the label of one of the space's choices) the sandwich's extremes are taken within each
    of that choice's values (:meth:`extremes`): a few-shot partition of the space by that choice (Zhao et al.,
    few-shot NAS), so that every part's largest and smallest are trained, not only the whole space's. Each
    part's extremes are over its cover candidates and its *floor* (every numeric domain at its lowest, every
    other domain at its first value, the partition's value), so a part's smallest is its smallest candidate
    even where the cover's random draws did not reach it. Candidates where the choice is switched off by a
    condition form one more part, :data:`INACTIVE`.

    Args:
        space: the space.
        samples: random candidates in the cover besides the one-at-a-time extremes.
        seed: the seed of those random candidates.
        partition: the label of the choice whose values partition the sandwich's extremes (None: the whole
            space's largest and smallest).

    Raises:
        ConfigError: no valid candidate in the cover; ``partition`` is not a choice of the space (the field
            ``supernet.partition``, attributed to no file: the caller names the recipe).
    """

    def __init__(self, space: SearchSpace, samples: int = 256, seed: int = 0, partition: str | None = None) -> None:
        self.space = space
        self._entries = _cover_entries(space, samples, seed)
        self.cover = [g for _, g in self._entries]
        if not self.cover:
            raise ConfigError([], f"{space.source}: no valid candidate in {samples} draws")
        self._largest, self._smallest = _ends(self.cover)
        self.partition = partition
        self._parts: dict[Any, tuple[EncoderGraph, EncoderGraph]] = {}
        if partition is not None:
            self._parts = _partition(space, self._entries, partition)

    def partitioned(self, partition: str | None) -> SpaceSampler:
        """This sampler with another partition, on the same cover (nothing is drawn again)."""
        out = copy.copy(self)
        out.partition = partition
        out._parts = {} if partition is None else _partition(self.space, self._entries, partition)
        return out

    def largest(self) -> EncoderGraph:
        return self._largest

    def smallest(self) -> EncoderGraph:
        return self._smallest

    def parts(self) -> list[Any]:
        """The partition's values that have candidates, in the choice's order (empty without a partition)."""
        return list(self._parts)

    def extremes(self) -> list[tuple[str, EncoderGraph]]:
        """``(role, graph)`` of the candidates the sandwich trains every step: ``largest`` and ``smallest``, or
        with a partition ``largest[v]`` and ``smallest[v]`` for every value ``v`` of the partition's choice."""
        if not self._parts:
            return [("largest", self._largest), ("smallest", self._smallest)]
        out = []
        for value, (big, small) in self._parts.items():
            out += [(f"largest[{value}]", big), (f"smallest[{value}]", small)]
        return out

    def sample(self, rng: random.Random) -> EncoderGraph:
        """A uniform valid candidate (at most 1000 draws; the space's own check refuses spaces with none)."""
        for i in range(1000):
            graph = _graph(self.space, self.space.sample(rng), f"random draw {i}")
            if graph is not None:
                return graph
        raise ConfigError([], f"{self.space.source}: 1000 random draws gave no valid candidate")

    def fingerprint(self) -> str:
        """A hash of the cover (what the supernet's tensors are shaped by)."""
        h = hashlib.sha256()
        for g in self.cover:
            h.update(dumps(g).encode())
        return h.hexdigest()[:16]


INACTIVE = "inactive"  # the part of the candidates where the partition's choice is switched off


def _ends(graphs: list[EncoderGraph]) -> tuple[EncoderGraph, EncoderGraph]:
    """The largest and the smallest of ``graphs`` by parameters (the first of equals)."""
    params = [estimate(g).params for g in graphs]
    big = graphs[max(range(len(params)), key=lambda i: (params[i], -i))]
    small = graphs[min(range(len(params)), key=lambda i: (params[i], i))]
    return big, small


def _numeric_min(d: Domain) -> Any:
    if isinstance(d, (IntRange, FloatRange)):
        return d.low
    nums = [c for c in d.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
    return min(nums) if len(nums) == len(d.choices) else None


def _partition(space: SearchSpace, entries: list[tuple[dict[str, Any], EncoderGraph]],
               label: str) -> dict[Any, tuple[EncoderGraph, EncoderGraph]]:  # fmt: skip
    """``value -> (largest, smallest)`` of each part of the cover split by the values of choice ``label``."""
    labels = [d.label for d in space.domains()]
    if label not in labels:
        raise ConfigError([FieldError("supernet.partition", f"{label!r} is not a choice of {space.source} (its "
                                      f"choices: {', '.join(labels) or 'none'}); give one of them, or leave "
                                      "partition out")])  # fmt: skip
    domain = space.domain(label)
    if isinstance(domain, FloatRange) or (isinstance(domain, IntRange) and domain.size() > _ENUMERATED):
        raise ConfigError([FieldError("supernet.partition", f"{label!r} in {space.source} is a range of "
                                      f"{'reals' if isinstance(domain, FloatRange) else f'{domain.size()} integers'}"
                                      f": a partition needs a choice of at most {_ENUMERATED} values")])  # fmt: skip
    groups: dict[Any, list[EncoderGraph]] = {}
    for values, graph in entries:
        groups.setdefault(values.get(label, INACTIVE), []).append(graph)
    floor = {}
    for d in space.domains():
        low = _numeric_min(d)
        floor[d.label] = low if low is not None else _values(d)[0]
    order = [*_values(domain), INACTIVE]
    out = {}
    for value in order:
        if value not in groups:
            continue
        active = _active(space, {**floor, label: value})
        if value != INACTIVE and active.get(label, INACTIVE) == value:  # the floor, where the choice is on
            graph = _graph(space, active, f"floor of {label}={value}")
            if graph is not None:
                groups[value].append(graph)
        out[value] = _ends(groups[value])
    return out


def _graph(space: SearchSpace, values: dict[str, Any], what: str) -> EncoderGraph | None:
    try:
        return from_dict(space.freeze(values), f"{space.source} ({what})")
    except ConfigError:
        return None


def _pairs(options: list[tuple[str, list[Any]]], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Every value of every domain, and every pair of values of two domains, the others at ``base``."""
    out = []
    for i, (a, va) in enumerate(options):
        for x in va:
            out.append({**base, a: x})
            for b, vb in options[i + 1 :]:
                out += [{**base, a: x, b: y} for y in vb if x != base[a] and y != base[b]]
    return out


def supernet_cover(space: SearchSpace, samples: int = 256, seed: int = 0) -> list[EncoderGraph]:
    """Distinct valid candidates of ``space`` whose union has every slot at its largest shape (see above).

    Deterministic in ``(space, samples, seed)``; extremes first, then the random candidates in draw order.
    Only distinct architectures are kept, so the list is far shorter than the assignments it tries.
    """
    return [graph for _, graph in _cover_entries(space, samples, seed)]


def _cover_entries(space: SearchSpace, samples: int, seed: int) -> list[tuple[dict[str, Any], EncoderGraph]]:
    """The cover's candidates with the (active) values each was made from."""
    domains = space.domains()
    base: dict[str, Any] = {}
    for d in domains:
        top = _numeric_max(d)
        base[d.label] = top if top is not None else _values(d)[0]
    assignments = [dict(base)]
    options = [(d.label, _values(d)) for d in domains]
    if math.prod(len(v) for _, v in options) <= _FULL:
        assignments += [
            dict(zip([a for a, _ in options], combo)) for combo in itertools.product(*(v for _, v in options))
        ]
    else:
        assignments += _pairs(options, base)
    rng = random.Random(seed)
    assignments += [space.sample(rng) for _ in range(samples)]
    out, seen = [], set()
    for i, values in enumerate(assignments):
        active = _active(space, values)
        graph = _graph(space, active, f"cover {i}")
        if graph is None:
            continue
        text = dumps(graph)
        if text not in seen:
            seen.add(text)
            out.append((active, graph))
    return out


def _active(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the domains a condition switches off."""
    active: dict[str, Any] = {}
    for d in space.domains():
        if space.is_active(d, active) and d.label in values:
            active[d.label] = values[d.label]
    return active
