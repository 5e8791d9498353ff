"""The one place the search prices a graph (through :mod:`planner.cost` when it is installed)."""

from __future__ import annotations

from typing import Any

from planner.search._study import COST_METRICS

__all__ = ["price", "available_metrics"]


def _estimate() -> Any:
    try:
        from planner.cost import estimate
    except ImportError:  # the cost model is not part of this checkout yet
        return None
    return estimate


def available_metrics() -> tuple[str, ...]:
    """The cost metrics this checkout can compute."""
    return COST_METRICS if _estimate() is not None else ("params",)


def price(graph: Any, seconds: float, bops: str = "bayesian_bits") -> dict[str, Any]:
    """Cost metrics of ``graph`` for ``seconds`` of audio: ``{metric: int | float | None}``.

    Uses ``planner.cost.estimate`` (``bops``: its BOP/FLOP convention); without it only ``params``
    (``graph.param_count``) is available.
    """
    estimate = _estimate()
    if estimate is None:
        return {"params": graph.param_count}
    cost = estimate(graph, seconds=seconds, bops=bops, layers=False)
    return {m: getattr(cost, m) for m in COST_METRICS}
