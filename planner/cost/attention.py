"""Exact counts of attended (query, key) pairs for each attention kind, in closed form.

Each count equals ``cfg.allowed(i, j).sum()`` over the ``T x T`` index grid (a test checks every kind
against :func:`attended_pairs_grid` on numpy grids); the closed forms keep pricing O(1) per layer.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from planner.ir.attention import (
    AttentionConfig,
    FixedAttention,
    FullAttention,
    LocalAttention,
    ReuseAttention,
    StridedAttention,
    StridedOnlyAttention,
)

__all__ = ["attended_pairs", "attended_pairs_grid"]


def _edge(a: int, t: int) -> int:
    """``sum_{i<t} max(0, a - i)``: positions a one-sided window of ``a`` frames loses at one edge."""
    if a <= 0:
        return 0
    if a >= t:
        return t * a - t * (t - 1) // 2
    return a * (a + 1) // 2


def _band(left: int, right: int, t: int) -> int:
    """Pairs with ``-left <= j - i <= right`` in a ``t x t`` grid."""
    return t * (left + right + 1) - _edge(left, t) - _edge(right, t)


@lru_cache(maxsize=4096)
def attended_pairs(cfg: AttentionConfig, t: int) -> int:
    """Number of ``(i, j)`` with ``cfg.allowed(i, j)`` for ``0 <= i, j < t`` (reuse: its source's full map).

    Example:
        >>> attended_pairs(LocalAttention(window=3), 5)
        13
    """
    if t <= 0:
        return 0
    if isinstance(cfg, (FullAttention, ReuseAttention)):
        return t * t
    if isinstance(cfg, LocalAttention):
        return _band((cfg.window - 1) // 2, cfg.window // 2, t)
    if isinstance(cfg, StridedAttention):
        s = cfg.stride
        k = (t - 1) // s  # multiples of the stride beyond the band, on each side
        far = 0 if k < 1 else 2 * (k * t - s * k * (k + 1) // 2)
        return _band(s - 1, s - 1, t) + far
    if isinstance(cfg, StridedOnlyAttention):
        # frames fall into `stride` residue classes of sizes q + 1 (r of them) and q; each query attends its class
        q, r = divmod(t, cfg.stride)
        return r * (q + 1) ** 2 + (cfg.stride - r) * q * q
    if isinstance(cfg, FixedAttention):
        b, c = cfg.block, cfg.summary
        full, r = divmod(t, b)
        part = max(0, r - (b - c))
        summary = full * c + part  # summary columns in the whole sequence
        pairs = full * b * (b + summary - c)
        if r:
            pairs += r * (r + summary - part)
        return pairs
    raise TypeError(f"no pair count for attention kind {getattr(cfg, 'kind', cfg)!r}")


def attended_pairs_grid(cfg: Any, t: int) -> int:
    """Reference count from ``cfg.allowed`` on a numpy index grid (for tests; O(t^2))."""
    import numpy as np

    if isinstance(cfg, ReuseAttention):
        cfg = FullAttention()
    i = np.arange(t)[:, None]
    j = np.arange(t)[None, :]
    return int(np.broadcast_to(cfg.allowed(i, j), (t, t)).sum())
