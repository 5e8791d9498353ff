"""Random samples of a space written as ordinary architecture files (no Optuna)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import ConfigError
from planner.ir.io import dump, from_dict
from planner.search._space import SearchSpace

__all__ = ["Sample", "sample_space"]


@dataclass(frozen=True)
class Sample:
    """One sample: its values, the graph (None if invalid) and the validation message if invalid."""

    index: int
    values: dict[str, Any]
    graph: Any = None
    error: str | None = None


def sample_space(space: SearchSpace, n: int, seed: int = 0, out: str | Path | None = None) -> list[Sample]:
    """Draws ``n`` uniform samples with ``seed``; writes ``sample-NNN.yaml`` into ``out`` for valid ones.

    Example:
        >>> from planner.search import load_space, sample_space
        >>> samples = sample_space(load_space("searchspaces/quickstart.yaml"), 3, seed=0)
    """
    rng = random.Random(seed)
    out_dir = Path(out) if out is not None else None
    samples = []
    for i in range(n):
        values = space.sample(rng)
        try:
            graph = from_dict(space.freeze(values), f"{space.source} (sample {i})")
        except ConfigError as err:
            samples.append(Sample(i, values, None, str(err)))
            continue
        if out_dir is not None:
            dump(graph, out_dir / f"sample-{i:03d}.yaml")
        samples.append(Sample(i, values, graph))
    return samples
