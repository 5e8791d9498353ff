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

import hashlib
import itertools
import math
import random
from typing import Any

from planner.cost import estimate
from planner.errors import ConfigError
from planner.ir.graph import EncoderGraph
from planner.ir.io import dumps, from_dict
from planner.search._domains import Categorical, Domain, FloatRange, IntRange
from planner.search._space import SearchSpace

__all__ = ["SpaceSampler", "supernet_cover"]


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

    Args:
        space: the space.
        samples: random candidates in the cover besides the one-at-a-time extremes.
        seed: the seed of those random candidates.
    """

    def __init__(self, space: SearchSpace, samples: int = 256, seed: int = 0) -> None:
        self.space = space
        self.cover = supernet_cover(space, samples, seed)
        if not self.cover:
            raise ConfigError([], f"{space.source}: no valid candidate in {samples} draws")
        params = [estimate(g).params for g in self.cover]
        self._largest = self.cover[max(range(len(params)), key=lambda i: (params[i], -i))]
        self._smallest = self.cover[min(range(len(params)), key=lambda i: (params[i], i))]

    def largest(self) -> EncoderGraph:
        return self._largest

    def smallest(self) -> EncoderGraph:
        return self._smallest

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
        active = {}
        for d in domains:  # drop the values of domains a condition switches off
            if space.is_active(d, active) and d.label in values:
                active[d.label] = values[d.label]
        graph = _graph(space, active, f"cover {i}")
        if graph is None:
            continue
        text = dumps(graph)
        if text not in seen:
            seen.add(text)
            out.append(graph)
    return out
