"""The one place the search prices a graph (through :mod:`planner.cost` when it is installed)."""

from __future__ import annotations

from typing import Any

__all__ = ["price", "available_metrics", "load_study_hardware"]


def _estimate() -> Any:
    try:
        from planner.cost import estimate
    except ImportError:  # the cost model is not part of this checkout yet
        return None
    return estimate


def available_metrics() -> tuple[str, ...]:
    """The cost metrics this checkout can compute."""
    from planner.search._study import COST_METRICS

    return COST_METRICS if _estimate() is not None else ("params",)


def price(graph: Any, seconds: float, bops: str = "bayesian_bits", hardware: Any = None) -> dict[str, Any]:
    """Cost metrics of ``graph`` for ``seconds`` of audio: ``{metric: int | float | None}``.

    Uses ``planner.cost.estimate`` (``bops``: its BOP/FLOP convention; ``hardware``: the
    :class:`planner.cost.hardware.Hardware` ``latency_s`` is priced on, None for no latency); without it only
    ``params`` (``graph.param_count``) is available.
    """
    from planner.search._study import COST_METRICS

    estimate = _estimate()
    if estimate is None:
        return {"params": graph.param_count}
    cost = estimate(graph, seconds=seconds, bops=bops, layers=False, hardware=hardware)
    return {m: getattr(cost, m) for m in COST_METRICS}


def load_study_hardware(name: str | None, source: str | None = None) -> Any:
    """The :class:`~planner.cost.hardware.Hardware` of ``study.hardware`` (None for none).

    Raises:
        ConfigError: an unknown catalog entry or a bad hardware file, located at ``study.hardware``.
    """
    if name is None or _estimate() is None:
        return None
    from planner.cost.hardware import load_hardware
    from planner.errors import ConfigError, FieldError

    try:
        return load_hardware(name)
    except ConfigError as err:
        if err.source is not None:
            raise  # a hardware file's own mistakes, located in that file
        raise ConfigError([FieldError("study.hardware", "; ".join(e.message for e in err.errors))], source) from None
