"""The statistics of the rank benchmark (supernet_rank.py): how well each scorer ranks the truth table's
candidates, per group of candidates and per truth metric, with 10,000-resample bootstrap 90% intervals.

A row is one candidate: its truth (``truth``: the mean over the table's two seeds of each metric;
``truth_seeds``: the two values) and its scores (``scores``: one number per scorer). Every scorer and every
metric is oriented so that higher means better (:data:`SCORERS`, :data:`METRICS`) before any statistic, so a
positive tau always means "ranks like the truth". Per group (``truth_report.GROUPS``: all, float,
compressed, unsealed, sealed) and metric (``loss``, ``held``, ``real``, and the probe's cross-entropies
``held_nll``, ``real_nll`` where the table's records have them), over the candidates whose truth is finite:

* ``tau_gt_seeds`` / ``rho_gt_seeds`` (with ``_ci``): between the two truth seeds, the noise ceiling;
* ``tau_X`` / ``rho_X`` (with ``_ci``, and ``n_X`` where a scorer left some candidates without a finite
  score) for each scorer ``X``; ``supernet`` is the supernet's score of the metric's own kind
  (:data:`SUPERNET_FOR`: its held-out loss for ``loss``, its probe's accuracy or cross-entropy on the same set
  for the probe metrics);
* ``strata``: tau within each cost stratum (the candidates' parameter quartile in the table's plan),
  ``{"q0": {"n", "tau_X"...}}``, and ``tau_strata_X``: their mean weighted by the stratum's pairs (the
  ranking left once the cost class is known);
* ``regret_X``: ``{"1", "3", "5"}``: how much worse, in the metric's own units, the best of the scorer's top
  k is than the best candidate (0: the scorer's top k holds it); ``regret_random``: the same expected of k
  candidates drawn at random;
* ``diff_supernet_params`` and ``diff_supernet_loss_params`` (with ``_ci``): ``tau_supernet - tau_params`` and
  ``tau_supernet_loss - tau_params`` (the loss is the objective to search with, whatever the metric), the
  intervals from a paired bootstrap (both taus of each resample over the same candidates);
* ``seconds_X``: the median seconds per candidate of each timed scorer.

A statistic over fewer than 2 candidates, or of constant values, is NaN (``null`` in JSON), so a check on it
fails.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from ranking import (
    RESAMPLES,
    bootstrap_rho_ci,
    bootstrap_tau_ci,
    bootstrap_tau_diff_ci,
    kendall_tau,
    spearman_rho,
)
from truth_report import GROUPS

__all__ = ["METRICS", "REGRET_K", "SCORERS", "SUPERNET_FOR", "TIMED", "analyse", "format_report", "scorer_values"]

METRICS = {"loss": -1.0, "held": 1.0, "real": 1.0, "held_nll": -1.0, "real_nll": -1.0}  # -> sign: higher is better
SCORERS = {  # scorer -> sign that makes a higher score predict a better candidate
    "supernet": 1.0,  # oriented per metric: see SUPERNET_FOR
    "supernet_loss": -1.0, "supernet_probe": 1.0, "supernet_probe_real": 1.0,
    "supernet_probe_nll": -1.0, "supernet_probe_real_nll": -1.0,
    "proxy": -1.0, "tse": -1.0, "naswot": 1.0, "params": 1.0, "macs": 1.0, "bops": 1.0,
}  # fmt: skip
SUPERNET_FOR = {
    "loss": "supernet_loss",
    "held": "supernet_probe",
    "real": "supernet_probe_real",
    "held_nll": "supernet_probe_nll",
    "real_nll": "supernet_probe_real_nll",
}
TIMED = ("supernet", "supernet_loss", "proxy", "naswot")  # the scorers whose seconds per candidate are measured
REGRET_K = (1, 3, 5)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _value(v: Any) -> float:
    return float("nan") if v is None else float(v)


def scorer_values(rows: Sequence[dict[str, Any]], scorer: str, metric: str) -> np.ndarray:
    """The oriented scores (higher: predicted better) of ``scorer`` for ``metric``; NaN where there is none."""
    name = SUPERNET_FOR[metric] if scorer == "supernet" else scorer
    return np.array([SCORERS[scorer if scorer != "supernet" else name] * _value(r["scores"].get(name)) for r in rows])


def _corr(a: np.ndarray, b: np.ndarray, seed: int, resamples: int) -> dict[str, Any]:
    """tau, rho and their intervals over the items finite in both."""
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2:
        return {"n": int(len(a)), "tau": None, "tau_ci": [None, None], "rho": None, "rho_ci": [None, None]}
    t_lo, t_hi = bootstrap_tau_ci(a, b, resamples=resamples, seed=seed)
    r_lo, r_hi = bootstrap_rho_ci(a, b, resamples=resamples, seed=seed)
    return {"n": int(len(a)), "tau": _finite(kendall_tau(a, b)), "tau_ci": [_finite(t_lo), _finite(t_hi)],
            "rho": _finite(spearman_rho(a, b)), "rho_ci": [_finite(r_lo), _finite(r_hi)]}  # fmt: skip


def _put(entry: dict[str, Any], name: str, c: dict[str, Any], n: int) -> None:
    entry[f"tau_{name}"], entry[f"tau_{name}_ci"] = c["tau"], c["tau_ci"]
    entry[f"rho_{name}"], entry[f"rho_{name}_ci"] = c["rho"], c["rho_ci"]
    if c["n"] != n:
        entry[f"n_{name}"] = c["n"]


def _tau_point(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    return _finite(kendall_tau(a[ok], b[ok])) if ok.sum() >= 2 else None


def _regret(truth: np.ndarray, scores: np.ndarray, k: int) -> float | None:
    """Best truth minus the best truth among the ``k`` highest scores (oriented values; ties: file order)."""
    ok = np.isfinite(truth) & np.isfinite(scores)
    t, s = truth[ok], scores[ok]
    if len(t) < k:
        return None
    top = np.argsort(-s, kind="stable")[:k]
    return _finite(float(t.max() - t[top].max()))


def _random_regret(truth: np.ndarray, k: int) -> float | None:
    """The expected regret of ``k`` candidates drawn at random without replacement."""
    t = np.sort(truth[np.isfinite(truth)])[::-1]
    n = len(t)
    if n < k:
        return None
    # the best of the draw is the j-th best (1-based) when it is drawn and the other k - 1 come from below it
    p = np.array([math.comb(n - j, k - 1) for j in range(1, n + 1)], dtype=float) / math.comb(n, k)
    return _finite(float(t[0] - (p * t).sum()))


def _metric_entry(rows: list[dict[str, Any]], metric: str, scorers: Sequence[str], seed: int,
                  resamples: int) -> dict[str, Any]:  # fmt: skip
    sign = METRICS[metric]
    keep = [r for r in rows if math.isfinite(_value(r["truth"].get(metric)))]
    truth = np.array([sign * _value(r["truth"][metric]) for r in keep])
    n = len(keep)
    entry: dict[str, Any] = {"n": n}
    a = np.array([_value(r["truth_seeds"][metric][0]) for r in keep])
    b = np.array([_value(r["truth_seeds"][metric][1]) for r in keep])
    _put(entry, "gt_seeds", _corr(a, b, seed, resamples), n)
    oriented = {s: scorer_values(keep, s, metric) for s in scorers}
    for s in scorers:
        _put(entry, s, _corr(oriented[s], truth, seed, resamples), n)
    strata: dict[str, Any] = {}
    for q in sorted({int(r["quartile"]) for r in keep}):
        at = np.array([int(r["quartile"]) == q for r in keep])
        strata[f"q{q}"] = {"n": int(at.sum()), **{f"tau_{s}": _tau_point(oriented[s][at], truth[at]) for s in scorers}}
    entry["strata"] = strata
    for s in scorers:
        pairs = [(v["n"] * (v["n"] - 1) / 2, v[f"tau_{s}"]) for v in strata.values() if v[f"tau_{s}"] is not None]
        weight = sum(w for w, _ in pairs)
        entry[f"tau_strata_{s}"] = _finite(sum(w * t for w, t in pairs) / weight) if weight else None
    for s in scorers:
        entry[f"regret_{s}"] = {str(k): _regret(truth, oriented[s], k) for k in REGRET_K}
    entry["regret_random"] = {str(k): _random_regret(truth, k) for k in REGRET_K}
    for s in ("supernet", "supernet_loss"):  # the metric's own kind, and the loss (the objective to use)
        if s in scorers and "params" in scorers:
            sup, par = oriented[s], oriented["params"]
            ok = np.isfinite(sup) & np.isfinite(par)
            point = (kendall_tau(sup[ok], truth[ok]) - kendall_tau(par[ok], truth[ok])) if ok.sum() >= 2 else math.nan
            lo, hi = bootstrap_tau_diff_ci(sup[ok], par[ok], truth[ok], resamples=resamples, seed=seed)
            entry[f"diff_{s}_params"], entry[f"diff_{s}_params_ci"] = _finite(point), [_finite(lo), _finite(hi)]
    return entry


def analyse(rows: Sequence[dict[str, Any]], scorers: Sequence[str], *, seed: int = 0,
            resamples: int = RESAMPLES) -> dict[str, Any]:  # fmt: skip
    """The statistics of every group and metric (see the module docstring) as plain data.

    Args:
        rows: the candidates (``truth``, ``truth_seeds``, ``scores``, ``seconds``, ``variant``, ``sealed``,
            ``quartile``).
        scorers: the scorers to rank by (keys of :data:`SCORERS`).
        seed: the bootstrap's resampling seed (one seed for every interval: they are paired).
        resamples: bootstrap resamples.
    """
    out: dict[str, Any] = {}
    metrics = [m for m in METRICS if any(math.isfinite(_value(r["truth"].get(m))) for r in rows)]
    present = {k for r in rows for k, v in r["scores"].items() if v is not None}
    for name, keep in GROUPS.items():
        group = [r for r in rows if keep(r)]
        entry: dict[str, Any] = {"candidates": len(group)}
        for s in TIMED:
            times = [r["seconds"][s] for r in group if r["seconds"].get(s) is not None]
            entry[f"seconds_{s}"] = float(np.median(times)) if times else None
        for m in metrics:
            usable = [s for s in scorers if (SUPERNET_FOR[m] if s == "supernet" else s) in present]
            entry[m] = _metric_entry(group, m, usable, seed, resamples)
        out[name] = entry
    return out


def _ci(v: float | None, ci: Sequence[float | None]) -> str:
    if v is None:
        return f"{'-':>5} {'':14}"
    bounds = "[    -,     -]" if ci[0] is None else f"[{ci[0]:5.2f}, {ci[1]:5.2f}]"
    return f"{v:5.2f} {bounds}"


def _num(v: float | None, width: int = 6) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}.3f}"


def format_report(groups: dict[str, Any], scorers: Sequence[str]) -> str:
    """The groups' statistics as text tables: per group and metric, one row per scorer."""
    lines = []
    for g, entry in groups.items():
        times = ", ".join(f"{s} {entry[f'seconds_{s}']:.2f}" for s in TIMED if entry.get(f"seconds_{s}") is not None)
        lines.append(f"== {g}: {entry['candidates']} candidates; median seconds per candidate: {times or '-'}")
        for m in METRICS:
            e = entry.get(m)
            if e is None:
                continue
            lines.append(f"  {m} (n {e['n']}): noise ceiling tau {_ci(e['tau_gt_seeds'], e['tau_gt_seeds_ci'])}  "
                         f"rho {_ci(e['rho_gt_seeds'], e['rho_gt_seeds_ci'])}")  # fmt: skip
            lines.append(f"    {'scorer':20} {'tau [90% CI]':>20} {'rho [90% CI]':>20} {'strata':>6} "
                         + " ".join(f"{'regret@' + str(k):>9}" for k in REGRET_K))  # fmt: skip
            for s in scorers:
                if f"tau_{s}" not in e:
                    continue
                regret = " ".join(f"{_num(e[f'regret_{s}'][str(k)], 9)}" for k in REGRET_K)
                n = f" (n {e[f'n_{s}']})" if f"n_{s}" in e else ""
                lines.append(f"    {s + n:20} {_ci(e[f'tau_{s}'], e[f'tau_{s}_ci']):>20} "
                             f"{_ci(e[f'rho_{s}'], e[f'rho_{s}_ci']):>20} {_num(e[f'tau_strata_{s}'])} {regret}")  # fmt: skip
            regret = " ".join(f"{_num(e['regret_random'][str(k)], 9)}" for k in REGRET_K)
            lines.append(f"    {'random':20} {'':>20} {'':>20} {'':>6} {regret}")
            for s in ("supernet", "supernet_loss"):
                if f"diff_{s}_params" in e:
                    diff = _ci(e[f"diff_{s}_params"], e[f"diff_{s}_params_ci"])
                    lines.append(f"    tau_{s} - tau_params: {diff}")
    return "\n".join(lines)
