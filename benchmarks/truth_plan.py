"""The candidates of the truth table (truth.py): float architectures stratified by cost and block kind, the
compressed variants of some of them, and the sealed share; a pure function of the space and a seed.

1. The float space: every assignment of the space's domains with the compression domains at their float
   values (``weight_bits: fp32``, ``sparsity: none``), frozen with the planner's own ``space.freeze``;
   distinct architectures (by ``planner.dumps``) only.
2. Strata: the parameter-count quartile (edges: the quartiles of the float space's own distribution) x the
   block kind (the ``block`` domain's choice index: 0 transformer, 1 transformer with local attention, 2
   conformer); 12 strata.
3. Floats: ``n`` candidates dealt over the strata in turn, the strata taken in a Latin order (quartile q
   with kind (q + r) mod 3, for r = 0, 1, 2 and q = 0 ... 3), so that the strata that get one more spread
   over both quartiles and kinds (40: 10 per quartile, 14 / 13 / 13 per kind); each stratum's drawn at
   random without replacement (``seed``).
4. Variants: ``parents`` of the floats, one per stratum in the same Latin order (10: 3 / 3 / 2 / 2 per
   quartile, 4 / 3 / 3 per kind), a random one within it; each gets :data:`VARIANTS`: int8 and int4
   weights (dense) and 2:4 sparsity (fp32 weights).
5. Sealed: ``round(sealed x n)`` of the floats, in two pools so that the variants get their share:
   ``round(sealed x parents)`` of the parents at random, the rest among the other floats, allotted to the
   strata by largest remainder of their members (ties broken at random), random ones within each; a sealed
   candidate's variants are sealed (40 and 10: 10 sealed floats, 2 of them parents, so 6 sealed variants).
6. Order: the floats dealt round-robin over the strata (a partial table covers every stratum), then the
   variants parent by parent. Candidate ids: ``c00`` ... in that order; a variant is ``c07-int8``,
   ``c07-int4``, ``c07-2of4``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from truth_setup import TruthSetup, table_space

import planner
from planner.errors import ConfigError, FieldError
from planner.ir.graph import EncoderGraph
from planner.search import SearchSpace, load_space

__all__ = ["BLOCKS", "FLOAT_VALUES", "VARIANTS", "Candidate", "float_space", "plan_candidates", "table_plan"]

FLOAT_VALUES = {"weight_bits": "fp32", "sparsity": "none"}
VARIANTS = {  # variant name -> (its compression values, its id suffix)
    "int8": ({"weight_bits": "int8", "sparsity": "none"}, "int8"),
    "int4": ({"weight_bits": "int4", "sparsity": "none"}, "int4"),
    "2:4": ({"weight_bits": "fp32", "sparsity": "2:4"}, "2of4"),
}
BLOCKS = ("transformer", "transformer local", "conformer")  # the block domain's choices, in the space's order
QUARTILES = 4


@dataclass(frozen=True)
class Candidate:
    """One candidate of the plan (a float architecture or one compressed variant of one).

    Attributes:
        id: ``c07`` (a float) or ``c07-int8`` (a variant).
        values: the space's domain values it freezes from.
        graph: its architecture.
        block: the block domain's choice index (see :data:`BLOCKS`).
        quartile: its float parent's parameter-count quartile, 0 (smallest) to 3.
        sealed: held back from any tuning of a scorer (its variants share the flag).
        variant: ``float``, ``int8``, ``int4`` or ``2:4``.
        parent: the float candidate a variant starts from (None for a float).
    """

    id: str
    values: dict[str, Any]
    graph: EncoderGraph = field(repr=False, compare=False)
    block: int
    quartile: int
    sealed: bool
    variant: str = "float"
    parent: str | None = None

    @property
    def stratum(self) -> str:
        """``q1-conformer``: the cost quartile and the block kind."""
        return f"q{self.quartile}-{BLOCKS[self.block].replace(' ', '-')}"

    def summary(self) -> dict[str, Any]:
        """The plan entry as plain data (``candidates.json``)."""
        return {"id": self.id, "variant": self.variant, "parent": self.parent, "values": self.values,
                "block": self.block, "block_name": BLOCKS[self.block], "quartile": self.quartile,
                "stratum": self.stratum, "sealed": self.sealed, "params": self.graph.param_count,
                "arch": planner.dumps(self.graph)}  # fmt: skip


def _assignments(space: SearchSpace, fixed: dict[str, Any]) -> list[dict[str, Any]]:
    """Every assignment of the active domains (ranges on their grid), ``fixed`` labels held at one value."""
    out: list[dict[str, Any]] = [{}]
    for d in space.domains():  # each domain comes after every domain its conditions read
        grown = []
        for values in out:
            if not space.is_active(d, values):
                grown.append(values)
                continue
            choices = [fixed[d.label]] if d.label in fixed else d.grid()
            grown.extend({**values, d.label: c} for c in choices)
        out = grown
    return out


def _graph(space: SearchSpace, values: dict[str, Any]) -> EncoderGraph:
    return planner.from_dict(space.freeze(values), f"{space.source} ({values})")


def float_space(space: SearchSpace) -> list[tuple[dict[str, Any], EncoderGraph]]:
    """The distinct valid float architectures of ``space``, with the values that freeze each.

    Raises:
        ConfigError: the space lacks a ``block``, ``weight_bits`` or ``sparsity`` domain.
    """
    labels = {d.label for d in space.domains()}
    missing = sorted({"block", *FLOAT_VALUES} - labels)
    if missing:
        raise ConfigError([FieldError(m, "the truth table needs this domain (see searchspaces/supernet-small.yaml)")
                           for m in missing], space.source)  # fmt: skip
    seen: set[str] = set()
    out = []
    for values in _assignments(space, FLOAT_VALUES):
        try:
            graph = _graph(space, values)
        except ConfigError:  # an invalid combination of the space: not a candidate
            continue
        text = planner.dumps(graph)
        if text not in seen:
            seen.add(text)
            out.append((values, graph))
    return out


def _largest_remainder(shares: list[float], total: int, rng: random.Random) -> list[int]:
    """Integers summing to ``total`` in proportion to ``shares`` (largest remainders; ties at random)."""
    if total <= 0 or not sum(shares):
        return [0] * len(shares)
    quota = np.asarray(shares, dtype=float) / sum(shares) * total
    counts = np.floor(quota).astype(int)
    rest = [(-(q - c), rng.random(), i) for i, (q, c) in enumerate(zip(quota, counts))]
    for _, _, i in sorted(rest)[: total - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


def plan_candidates(space_path: str | Path, n: int = 40, parents: int = 10, sealed: float = 0.25,
                    seed: int = 0) -> list[Candidate]:  # fmt: skip
    """The plan (see the module docstring): ``n`` floats, then ``len(VARIANTS)`` variants of ``parents`` of them.

    Raises:
        ConfigError: the space cannot hold the plan (more candidates than its float architectures, more parents
            than candidates).
    """
    space = load_space(space_path)
    pool = float_space(space)
    if not 1 <= n <= len(pool):
        raise ConfigError([FieldError("candidates", f"{n} asked; the float space holds {len(pool)} architectures: "
                                                    "ask for that many at most")], str(space_path))  # fmt: skip
    if not 0 <= parents <= n:
        raise ConfigError([FieldError("parents", f"{parents} variant parents asked of {n} candidates: "
                                                 f"ask for 0 to {n}")], str(space_path))  # fmt: skip
    params = np.array([g.param_count for _, g in pool])
    edges = np.quantile(params, [0.25, 0.5, 0.75])
    strata: dict[tuple[int, int], list[tuple[dict[str, Any], EncoderGraph]]] = {}
    for values, graph in pool:  # pool order: the space's own (deterministic) enumeration order
        q = int(np.searchsorted(edges, graph.param_count, side="right"))
        strata.setdefault((q, int(values["block"])), []).append((values, graph))
    latin = [(q, (q + r) % len(BLOCKS)) for r in range(len(BLOCKS)) for q in range(QUARTILES)]
    keys = [k for k in latin if k in strata]
    rng = random.Random(seed)

    # floats: dealt over the strata in turn; a stratum with too few members passes its turn on
    want = dict.fromkeys(keys, 0)
    left, turn = n, 0
    while left:
        key = keys[turn % len(keys)]
        if want[key] < len(strata[key]):
            want[key] += 1
            left -= 1
        turn += 1
    drawn = {k: rng.sample(strata[k], want[k]) for k in keys}
    order: list[tuple[tuple[int, int], tuple[dict[str, Any], EncoderGraph]]] = []
    for r in range(max(want.values())):  # round-robin: round r takes the r-th draw of every stratum
        order.extend((k, drawn[k][r]) for k in keys if r < want[k])

    used = [k for k in keys if want[k]]
    chosen: list[int] = []  # variant parents, as positions in order
    for k in used * (parents // len(used) + 1):
        if len(chosen) == parents:
            break
        members = [i for i, (kk, _) in enumerate(order) if kk == k and i not in chosen]
        if members:
            chosen.append(rng.choice(members))

    # sealed, in two pools so that the variants get their share: round(sealed x parents) of the parents at random,
    # and the rest of round(sealed x n) among the other floats, allotted to the strata by largest remainder
    sealed_ids = set(rng.sample(chosen, round(sealed * len(chosen))))
    others = {k: [i for i, (kk, _) in enumerate(order) if kk == k and i not in chosen] for k in used}
    counts = _largest_remainder([len(others[k]) for k in used], round(sealed * n) - len(sealed_ids), rng)
    for k, count in zip(used, counts):
        sealed_ids.update(rng.sample(others[k], count))

    floats = [Candidate(f"c{i:02d}", values, graph, int(values["block"]), k[0], i in sealed_ids)
              for i, (k, (values, graph)) in enumerate(order)]  # fmt: skip
    chosen_c = [floats[i] for i in chosen]
    variants = []
    for parent in chosen_c:
        for name, (compression, suffix) in VARIANTS.items():
            values = {**parent.values, **compression}
            variants.append(Candidate(f"{parent.id}-{suffix}", values, _graph(space, values), parent.block,
                                      parent.quartile, parent.sealed, name, parent.id))  # fmt: skip
    return floats + variants


def table_plan(setup: TruthSetup) -> list[Candidate]:
    """The plan of a table, drawn again from its space in this checkout.

    Raises:
        ConfigError: the table's space is not this checkout's (``truth_setup.table_space``).
    """
    p = setup.info["plan"]
    return plan_candidates(table_space(setup), p["candidates"], p["parents"], p["sealed"], p["seed"])
