"""How stable is a truth table? Its own rank statistics, each with a 10,000-resample bootstrap 90% interval.

Over the runs done so far (``records.jsonl``) against the plan (``candidates.json``), per group of candidates
(``all``, ``float``, ``compressed``, ``unsealed``, ``sealed``):

* ``seed_tau``: Kendall's tau-b between the two seeds' values of each metric over the candidates with both
  seeds done (the noise ceiling of any scorer against one seed); with ``seed_rho`` (Spearman).
* ``half_tau``: per seed, tau between each run's held-out loss at T/2 and at T (T: the run's own steps), over
  the candidates: would a run of half the length rank them the same?
* ``plateau``: the fraction of runs whose held-out loss fell by at most 3% over the last quarter
  (``(L(3T/4) - L(T)) / L(3T/4) <= 0.03``), intervals by resampling runs.
* ``metric_tau``: tau between the metrics, each the mean over seeds: ``loss_vs_held`` and ``loss_vs_real``
  are tau(-loss, accuracy), positive when a lower loss goes with a higher accuracy; ``held_vs_real``;
  ``loss_vs_held_nll`` (-loss, -held_nll) and ``held_vs_held_nll`` (held, -held_nll).
* ``counts``: runs and candidates planned and done, per group; runs that diverged.
* ``against`` (``truth.py --report DIR --against OTHER``): tau between two tables of one plan, e.g. 2,000
  and 6,000 steps, per group and metric over the candidates complete in both (:func:`between_tables`); and
  both tables' noise ceilings on those candidates with their paired difference (do the seeds agree better
  after longer training, on the same candidates?).

Metrics: ``loss`` (the final held-out distillation loss, lower is better), ``held`` and ``real`` (the linear
probe's word accuracy on the held-out voices and on the real recordings), ``held_nll`` and ``real_nll``
(the probe's cross-entropy on those sets, lower is better: continuous where an accuracy over 80 utterances
moves in steps of 1.25%; records before 1 December 2026 do not have them, so their statistics are null). A statistic with fewer than 2
items, or whose values are constant, is NaN (null in JSON), so a check on it fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ranking import RESAMPLES, bootstrap_ci, bootstrap_tau_ci, bootstrap_taus_diff_ci, kendall_tau, spearman_rho

__all__ = [
    "GROUPS",
    "groups_for",
    "METRICS",
    "PLATEAU",
    "between_tables",
    "format_stability",
    "metric_value",
    "stability",
    "tau_entry",
]

GROUPS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "all": lambda c: True,
    "float": lambda c: c["variant"] == "float",
    "compressed": lambda c: c["variant"] != "float",
    "unsealed": lambda c: not c["sealed"],
    "sealed": lambda c: bool(c["sealed"]),
}


def groups_for(items: Sequence[dict[str, Any]]) -> dict[str, Callable[[dict[str, Any]], bool]]:
    """:data:`GROUPS` and one group per block kind of ``items`` (candidates with a ``block_name``), named
    ``block <name>`` in the order they first appear: where a scorer's ranking comes from, across the kinds or
    within them."""
    names = list(dict.fromkeys(c["block_name"] for c in items if c.get("block_name")))
    return GROUPS | {f"block {n}": (lambda c, n=n: c.get("block_name") == n) for n in names}


METRICS = ("loss", "held", "real", "held_nll", "real_nll")
PROBE_FIELD = {"held": "held_out", "real": "real", "held_nll": "held_out_nll", "real_nll": "real_nll"}
PLATEAU = 0.03  # the issue's criterion: at most 3% held-out loss gain over the last quarter


def metric_value(record: dict[str, Any], metric: str) -> float:
    """A run's value of one of :data:`METRICS`; NaN where it has none (diverged, no real recordings, or a
    probe cross-entropy of a record made before the probe reported it)."""
    if metric == "loss":
        v = record.get("loss")
    else:
        v = (record.get("probe") or {}).get(PROBE_FIELD[metric])
    return float("nan") if v is None else float(v)


def loss_at(record: dict[str, Any], step: int) -> float:
    """The held-out loss of the curve at ``step`` (the last point at or before it); NaN if none is."""
    points = [v for s, v in record.get("curve", []) if s <= step]
    return float("nan") if not points or points[-1] is None else float(points[-1])


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def tau_entry(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """tau-b, rho and the tau interval of paired lists, leaving out the items NaN in either."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2:
        return {"tau": None, "rho": None, "ci": [None, None], "n": int(len(a))}
    lo, hi = bootstrap_tau_ci(a, b, resamples=RESAMPLES, seed=seed)
    return {"tau": _finite(kendall_tau(a, b)), "rho": _finite(spearman_rho(a, b)), "ci": [_finite(lo), _finite(hi)],
            "n": int(len(a))}  # fmt: skip


def stability(records: Sequence[dict[str, Any]], plan: Sequence[dict[str, Any]], seeds: Sequence[int],
              *, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The stability report of a table (see the module docstring) as plain data.

    Args:
        records: the runs done (``records.jsonl``'s objects).
        plan: the candidates planned (``candidates.json``'s ``candidates``).
        seeds: the table's training seeds (the first two are compared).
        seed: the bootstrap's resampling seed.
    """
    runs = {(r["id"], int(r["seed"])): r for r in records}
    a, b = seeds[0], seeds[1] if len(seeds) > 1 else seeds[0]
    out: dict[str, Any] = {"seeds": list(seeds), "resamples": RESAMPLES, "level": 0.90, "plateau_threshold": PLATEAU,
                           "counts": {}, "seed_tau": {}, "half_tau": {}, "plateau": {}, "metric_tau": {}}  # fmt: skip
    for name, keep in groups_for(plan).items():
        cands = [c for c in plan if keep(c)]
        done = [runs[(c["id"], s)] for c in cands for s in seeds if (c["id"], s) in runs]
        both = [c for c in cands if (c["id"], a) in runs and (c["id"], b) in runs]
        out["counts"][name] = {"candidates": len(cands), "runs_planned": len(cands) * len(seeds), "runs_done": len(done),
                               "candidates_complete": len(both),
                               "diverged": sum(r.get("diverged") is not None for r in done)}  # fmt: skip
        out["seed_tau"][name] = {m: tau_entry([metric_value(runs[(c["id"], a)], m) for c in both],
                                               [metric_value(runs[(c["id"], b)], m) for c in both], seed)
                                 for m in METRICS}  # fmt: skip
        out["half_tau"][name] = {}
        for s in seeds:
            rs = [runs[(c["id"], s)] for c in cands if (c["id"], s) in runs]
            out["half_tau"][name][str(s)] = tau_entry([loss_at(r, r["steps"] // 2) for r in rs],
                                                       [loss_at(r, r["steps"]) for r in rs], seed)  # fmt: skip
        gains = np.array([(loss_at(r, 3 * r["steps"] // 4) - loss_at(r, r["steps"])) / loss_at(r, 3 * r["steps"] // 4)
                          for r in done], dtype=float)  # fmt: skip
        gains = gains[np.isfinite(gains)]
        flat = (gains <= PLATEAU).astype(float)
        lo, hi = bootstrap_ci(lambda i, f=flat: float(f[i].mean()), len(flat), seed=seed)
        out["plateau"][name] = {"fraction": _finite(float(flat.mean())) if len(flat) else None,
                                "ci": [_finite(lo), _finite(hi)], "n": int(len(flat)),
                                "median_gain": _finite(float(np.median(gains))) if len(gains) else None}  # fmt: skip

        def mean(c: dict[str, Any], m: str) -> float:
            values = [metric_value(runs[(c["id"], s)], m) for s in seeds if (c["id"], s) in runs]
            return float(np.mean(values)) if values else float("nan")

        full = [c for c in cands if all((c["id"], s) in runs for s in seeds)]
        loss = [-mean(c, "loss") for c in full]
        held, real = [mean(c, "held") for c in full], [mean(c, "real") for c in full]
        nll = [-mean(c, "held_nll") for c in full]
        out["metric_tau"][name] = {"loss_vs_held": tau_entry(loss, held, seed),
                                   "loss_vs_real": tau_entry(loss, real, seed),
                                   "held_vs_real": tau_entry(held, real, seed),
                                   "loss_vs_held_nll": tau_entry(loss, nll, seed),
                                   "held_vs_held_nll": tau_entry(held, nll, seed)}  # fmt: skip
    return out


def between_tables(records: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]], plan: Sequence[dict[str, Any]],
                   seeds: Sequence[int], *, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Two tables of one plan (e.g. 2,000 and 6,000 steps), per group and metric, over the candidates with
    every seed done in both. Does training longer reorder the candidates, and do its seeds agree better?

    ``{group: {"n": candidates, metric: {"tau", "rho", "ci", "n"}, "ceiling": {metric: {"here", "other",
    "diff"}}}}``: ``metric`` is tau between the tables (each table's mean over its seeds); ``ceiling`` holds
    each table's noise ceiling (tau between its first two seeds) on these candidates and their paired
    difference (this table minus ``other``, one bootstrap over the candidates for both: ``{"tau", "ci"}``).
    """
    a = {(r["id"], int(r["seed"])): r for r in records}
    b = {(r["id"], int(r["seed"])): r for r in other}
    s1, s2 = seeds[0], seeds[1] if len(seeds) > 1 else seeds[0]
    out: dict[str, Any] = {}
    for name, keep in groups_for(plan).items():
        both = [c for c in plan if keep(c) and all((c["id"], s) in a and (c["id"], s) in b for s in seeds)]

        def mean(runs: dict[tuple[str, int], dict[str, Any]], c: dict[str, Any], m: str) -> float:
            return float(np.mean([metric_value(runs[(c["id"], s)], m) for s in seeds]))

        ceiling = {}
        for m in METRICS:  # rows: this table's two seeds, then the other's
            v = np.array([[metric_value(runs[(c["id"], s)], m) for c in both] for runs in (a, b) for s in (s1, s2)],
                         dtype=float).reshape(4, len(both))  # fmt: skip
            v = v[:, np.isfinite(v).all(axis=0)]  # the same candidates in both ceilings
            here, there = tau_entry(v[0], v[1], seed), tau_entry(v[2], v[3], seed)
            lo, hi = bootstrap_taus_diff_ci((v[0], v[1]), (v[2], v[3]), seed=seed)
            diff = None if here["tau"] is None or there["tau"] is None else here["tau"] - there["tau"]
            ceiling[m] = {"here": here, "other": there,
                          "diff": {"tau": diff, "ci": [_finite(lo), _finite(hi)], "n": here["n"]}}  # fmt: skip
        out[name] = {"n": len(both), **{m: tau_entry([mean(a, c, m) for c in both], [mean(b, c, m) for c in both], seed)
                                        for m in METRICS}, "ceiling": ceiling}  # fmt: skip
    return out


def _ci(e: dict[str, Any], key: str = "tau") -> str:
    v, (lo, hi) = e[key], e["ci"]
    if v is None:
        return f"{'-':>6} {'':15}"
    bounds = "[   -,    -]" if lo is None else f"[{lo:5.2f}, {hi:5.2f}]"
    return f"{v:6.2f} {bounds:15}"


def format_stability(report: dict[str, Any]) -> str:
    """The report as text tables (groups as rows)."""
    a, b = report["seeds"][0], report["seeds"][-1]
    w = max([10, *map(len, report["counts"])])  # the groups' names: the tables' first column
    lines = [f"runs done / planned (candidates with both seeds / planned), {report['resamples']:,}-resample "
             f"bootstrap {report['level']:.0%} intervals"]  # fmt: skip
    for g, c in report["counts"].items():
        lines.append(f"  {g:{w}} {c['runs_done']:4d} / {c['runs_planned']:4d} runs ({c['candidates_complete']:3d} / "
                     f"{c['candidates']:3d} candidates), {c['diverged']} diverged")  # fmt: skip
    lines.append(f"tau between seeds {a} and {b} (noise ceiling), n candidates")
    lines.append(f"  {'group':{w}} " + " ".join(f"{m:>22}" for m in METRICS) + "    n")
    for g, row in report["seed_tau"].items():
        lines.append(f"  {g:{w}} " + " ".join(f"{_ci(row[m]):>22}" for m in METRICS) + f" {row['loss']['n']:4d}")
    lines.append("tau between the held-out loss at T/2 and at T, per seed")
    for g, row in report["half_tau"].items():
        lines.append(f"  {g:{w}} " + " ".join(f"{s}: {_ci(e)} n {e['n']:3d}" for s, e in row.items()))
    lines.append(f"runs whose held-out loss fell <= {report['plateau_threshold']:.0%} over the last quarter")
    for g, e in report["plateau"].items():
        frac = "-" if e["fraction"] is None else f"{e['fraction']:.2f}"
        lo, hi = e["ci"]
        ci = "" if lo is None else f" [{lo:.2f}, {hi:.2f}]"
        med = "" if e["median_gain"] is None else f", median gain {e['median_gain']:.1%}"
        lines.append(f"  {g:{w}} {frac}{ci} of {e['n']} runs{med}")
    pairs = ("loss_vs_held", "loss_vs_real", "held_vs_real", "loss_vs_held_nll", "held_vs_held_nll")
    lines.append("tau between the metrics (means over seeds): -loss vs held, -loss vs real, held vs real, "
                 "-loss vs -held_nll, held vs -held_nll")  # fmt: skip
    for g, row in report["metric_tau"].items():
        lines.append(f"  {g:{w}} " + " ".join(f"{_ci(row[k]):>22}" for k in pairs if k in row))
    if "against" in report:
        lines.append(f"tau between this table and {report['against']['out']} (means over seeds), n candidates")
        lines.append(f"  {'group':{w}} " + " ".join(f"{m:>22}" for m in METRICS) + "    n")
        for g, row in report["against"]["groups"].items():
            lines.append(f"  {g:{w}} " + " ".join(f"{_ci(row[m]):>22}" for m in METRICS) + f" {row['n']:4d}")
        for key, title in [("other", f"the noise ceiling of {report['against']['out']} on these candidates"),
                           ("diff", "the noise ceilings' paired difference, this table minus that one")]:  # fmt: skip
            lines.append(title)
            for g, row in report["against"]["groups"].items():
                if "ceiling" in row:
                    lines.append(f"  {g:{w}} " + " ".join(f"{_ci(row['ceiling'][m][key]):>22}" for m in METRICS)
                                 + f" {row['n']:4d}")  # fmt: skip
    return "\n".join(lines)
