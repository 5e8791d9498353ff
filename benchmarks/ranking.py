"""Rank statistics shared by the ranking benchmarks (proxy_rank.py, truth.py, supernet_rank.py).

Kendall's tau-b and Spearman's rho as ``scipy.stats`` defines them (scipy is not a dependency), and a
percentile bootstrap over the items being ranked: a statistic is a function of an index array (the items of
one resample, drawn with replacement), so one call covers a tau between two lists, a paired difference of two
taus against one reference, or a fraction of runs.

    >>> kendall_tau([1, 2, 3], [1, 3, 2])
    0.3333333333333333
    >>> lo, hi = bootstrap_ci(lambda i: kendall_tau(np.arange(6.0)[i], np.arange(6.0)[i]), 6, resamples=200)
    >>> lo, hi
    (1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["RESAMPLES", "bootstrap_ci", "bootstrap_rho_ci", "bootstrap_tau_ci", "bootstrap_tau_diff_ci", "kendall_tau",
           "kendall_tau_rows", "resample_indices", "spearman_rho", "spearman_rho_rows"]  # fmt: skip

RESAMPLES = 10_000  # bootstrap resamples: between resampling seeds, a tau interval of 40-70 items moves by <= 0.003
# (measured; 0.02 at 10 items, where tau takes few values)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists (tau-a when neither has ties; as ``scipy.stats.kendalltau``).

    ``(concordant - discordant) / sqrt((n0 - ties_a) * (n0 - ties_b))`` over the ``n0 = n (n - 1) / 2``
    pairs; a pair tied in either list is neither concordant nor discordant. NaN when a list is constant or
    holds a NaN (a NaN compares as neither larger nor smaller, which would read as agreement).

    Example:
        >>> kendall_tau([1, 2, 3], [1, 3, 2])
        0.3333333333333333
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two lists of the same length >= 2, got {len(a)} and {len(b)}")
    return float(kendall_tau_rows(np.asarray(a, dtype=float)[None], np.asarray(b, dtype=float)[None])[0])


def kendall_tau_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tau-b of each row pair of two ``(R, n)`` arrays, vectorised (R resamples of n items): ``(R,)``."""
    iu = np.triu_indices(a.shape[1], 1)
    da = np.sign(a[:, :, None] - a[:, None, :])[:, iu[0], iu[1]]
    db = np.sign(b[:, :, None] - b[:, None, :])[:, iu[0], iu[1]]
    s = (da * db).sum(1)
    den = np.sqrt(np.count_nonzero(da, 1).astype(float) * np.count_nonzero(db, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(den > 0, s / np.where(den > 0, den, 1.0), np.nan)
    bad = np.isnan(a).any(1) | np.isnan(b).any(1)
    return np.where(bad, np.nan, tau)


def _ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (as ``scipy.stats.spearmanr``).

    NaN when a list is constant or holds a NaN.

    Example:
        >>> spearman_rho([1, 2, 3], [1, 3, 2])
        0.5
    """
    if np.isnan(np.asarray(a, dtype=float)).any() or np.isnan(np.asarray(b, dtype=float)).any():
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den else float("nan")


def _average_ranks_rows(x: np.ndarray) -> np.ndarray:
    """1-based average ranks of each row of ``(R, n)``: below + (equal + 1) / 2, by pairwise comparison."""
    below = (x[:, None, :] < x[:, :, None]).sum(2)
    equal = (x[:, None, :] == x[:, :, None]).sum(2)
    return below + (equal + 1) / 2


def spearman_rho_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`spearman_rho` of each row pair of two ``(R, n)`` arrays, vectorised: ``(R,)``; NaN for a row that
    is constant or holds a NaN."""
    ra, rb = _average_ranks_rows(a), _average_ranks_rows(b)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), np.nan)
    bad = np.isnan(a).any(1) | np.isnan(b).any(1)
    return np.where(bad, np.nan, rho)


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, *, resamples: int = RESAMPLES,
                 level: float = 0.90, seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """The percentile bootstrap interval of ``statistic`` over ``n`` items.

    Args:
        statistic: the statistic of one resample, given its ``(n,)`` item indices (drawn with replacement;
            the identity ``arange(n)`` is the statistic itself).
        n: the items (candidates); below 2 the interval is ``(nan, nan)``.
        resamples: bootstrap resamples.
        level: the central coverage (0.90: the 5th and 95th percentiles).
        seed: the resampling generator's seed, so a report is repeatable.

    Returns:
        ``(low, high)`` over the resamples whose statistic is finite (a resample of one repeated item has no
        ranking); ``(nan, nan)`` when fewer than half are, so that a check on the bound fails.
    """
    if n < 2:
        return float("nan"), float("nan")
    idx = resample_indices(n, resamples=resamples, seed=seed)
    values = np.array([statistic(i) for i in idx], dtype=float)
    return _percentiles(values, level)


def resample_indices(n: int, *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The ``(resamples, n)`` item indices of a bootstrap (drawn with replacement); every interval function of
    this module draws these, so intervals of one seed over the same items are paired."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _rows(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], a: np.ndarray, b: np.ndarray,
          idx: np.ndarray) -> np.ndarray:  # fmt: skip
    """``fn`` of every resample row of ``a`` and ``b``, in chunks of a few 10 MB of pair comparisons."""
    chunk = max(1, 2_000_000 // (a.size * a.size))
    return np.concatenate([fn(a[idx[i : i + chunk]], b[idx[i : i + chunk]]) for i in range(0, len(idx), chunk)])


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"need two lists of the same length, got {len(a)} and {len(b)}")
    return a, b


def bootstrap_tau_ci(a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, level: float = 0.90,
                     seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """:func:`bootstrap_ci` of :func:`kendall_tau` between ``a`` and ``b`` (paired items), vectorised."""
    a, b = _paired(a, b)
    if len(a) < 2:
        return float("nan"), float("nan")
    idx = resample_indices(len(a), resamples=resamples, seed=seed)
    return _percentiles(_rows(kendall_tau_rows, a, b, idx), level)


def bootstrap_rho_ci(a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, level: float = 0.90,
                     seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """:func:`bootstrap_ci` of :func:`spearman_rho` between ``a`` and ``b`` (paired items), vectorised."""
    a, b = _paired(a, b)
    if len(a) < 2:
        return float("nan"), float("nan")
    idx = resample_indices(len(a), resamples=resamples, seed=seed)
    return _percentiles(_rows(spearman_rho_rows, a, b, idx), level)


def bootstrap_tau_diff_ci(a: Sequence[float], b: Sequence[float], ref: Sequence[float], *,
                          resamples: int = RESAMPLES, level: float = 0.90, seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """The paired bootstrap interval of ``kendall_tau(a, ref) - kendall_tau(b, ref)``: both taus of each
    resample over the same items, so what the two scorers share (hard and easy items) cancels.

    Example:
        >>> x = np.arange(8.0)
        >>> bootstrap_tau_diff_ci(x, -x, x, resamples=200)
        (2.0, 2.0)
    """
    return bootstrap_taus_diff_ci((a, ref), (b, ref), resamples=resamples, level=level, seed=seed)


def bootstrap_taus_diff_ci(first: tuple[Sequence[float], Sequence[float]],
                           second: tuple[Sequence[float], Sequence[float]], *, resamples: int = RESAMPLES,
                           level: float = 0.90, seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """The paired bootstrap interval of ``kendall_tau(*first) - kendall_tau(*second)``, all four lists over the
    same items (e.g. two tables' noise ceilings over the candidates both have).

    Example:
        >>> x = np.arange(8.0)
        >>> bootstrap_taus_diff_ci((x, x), (x, -x), resamples=200)
        (2.0, 2.0)
    """
    a1, a2 = _paired(*first)
    b1, b2 = _paired(*second)
    _paired(a1, b1)  # both pairs over the same items
    if len(a1) < 2:
        return float("nan"), float("nan")
    idx = resample_indices(len(a1), resamples=resamples, seed=seed)
    return _percentiles(_rows(kendall_tau_rows, a1, a2, idx) - _rows(kendall_tau_rows, b1, b2, idx), level)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval of the finite ``values``; NaN when fewer than half are finite."""
    finite = values[np.isfinite(values)]
    if len(finite) < len(values) / 2:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
