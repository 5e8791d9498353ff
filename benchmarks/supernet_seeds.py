"""Is the supernet's ranking stable across its own training seeds? Two or more rank-benchmark results compared.

Reads ``supernet_rank.py --json`` results of the same truth table with different ``--seed`` (a second seed
can run with ``--skip probe --skip proxy``: only ``supernet_loss`` is compared), or with one seed and other
settings (``--random 0``: a design choice; such a result is named by its seed and the settings that differ,
``0-random0``, in the keys below), and, over the candidates every result scored, per group (``truth_report.groups_for``: all, float, compressed, unsealed, sealed, each block kind) and truth metric
(``loss``, ``held``):

* ``tau_seed<S>`` with ``_ci``: each supernet seed's ``supernet_loss`` against the mean-of-seeds truth
  (Kendall tau-b, 10,000-resample bootstrap 90% interval; the same resamples for every seed: paired);
* ``diff_<S>_<T>_ci``: the paired bootstrap interval of the difference between two seeds' taus;
* ``tau_params`` with ``_ci`` and ``diff_<S>_params_ci``: the parameter count against the same truth, and
  each seed's paired difference to it;
* ``tau_between`` with ``_ci`` (per group): between the seeds' ``supernet_loss`` themselves, the supernet's
  own seed noise (two seeds: their tau; more: the mean over pairs).

The groups are ``truth_report.groups_for``'s: those of the truth table and one per block kind (``block
conformer``), which shows whether a ranking comes from ordering the kinds or from ordering within them.

    python benchmarks/supernet_seeds.py benchmarks/results/supernet-rank-seed0.json \\
        benchmarks/results/supernet-rank-seed1.json --json benchmarks/results/supernet-rank-seeds.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ranking import RESAMPLES, bootstrap_tau_ci, bootstrap_tau_diff_ci, kendall_tau
from supernet_rank import _json_safe
from truth_report import groups_for

from planner.files import write_text_atomic

__all__ = ["RESULT_TYPE", "compare", "main"]

RESULT_TYPE = "planner-supernet-seeds"
TRUTH = {"loss": -1.0, "held": 1.0}  # truth metric -> the sign that makes higher better


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable as JSON ({err}): give a supernet_rank.py --json result") from None
    if not isinstance(doc, dict) or doc.get("type") != "planner-supernet-rank" or "candidates" not in doc:
        raise ValueError(f"{path}: not a supernet_rank.py result with scored candidates")
    return doc


def _interval(lo: float, hi: float) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in (lo, hi)]


def labels(results: list[dict[str, Any]]) -> list[str]:
    """Each result's name in the comparison: its seed, followed by the settings in which the results differ
    (``0-random0`` against ``0-random2``: a design choice at one seed); just the seed when only seeds differ."""
    settings = [r.get("settings", {}) for r in results]
    differ = sorted({k for st in settings for k in st if any(o.get(k) != st.get(k) for o in settings)})
    return [str(int(r["seed"])) + "".join(f"-{k}{st.get(k)}" for k in differ) for r, st in zip(results, settings)]


def compare(results: list[dict[str, Any]], *, resamples: int = RESAMPLES) -> dict[str, Any]:
    """The comparison (see the module docstring) of rank results of different seeds (or settings, see
    :func:`labels`) and one truth table.

    Raises:
        ValueError: fewer than two results, one seed and settings twice, or results of different truth tables
            (a candidate's truth differs).
    """
    seeds = labels(results)
    if len(results) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"need results of two or more different seeds or settings, got {seeds}")
    by_id = [{c["id"]: c for c in r["candidates"]} for r in results]
    common = [i for i in by_id[0] if all(i in b for b in by_id[1:])]

    def same(x: dict[str, Any], y: dict[str, Any]) -> bool:  # the metrics both know (newer results have more)
        return all(x[m] == y[m] for m in x.keys() & y.keys())

    for i in common:  # one table, wherever it lay: the same truth for every candidate both scored
        if not all(same(b[i]["truth_seeds"], by_id[0][i]["truth_seeds"]) for b in by_id[1:]):
            raise ValueError(f"the results' truths of {i} differ: they score different truth tables")
    out: dict[str, Any] = {"type": RESULT_TYPE, "format": 1, "seeds": [int(r["seed"]) for r in results],
                           "labels": seeds, "truth_dirs": [r["truth_dir"] for r in results],
                           "candidates": len(common), "groups": {}}  # fmt: skip
    for name, keep in groups_for([by_id[0][i] for i in common]).items():
        ids = [i for i in common if keep(by_id[0][i])]
        scores = {s: np.array([-float(b[i]["scores"]["supernet_loss"]) for i in ids]) for s, b in zip(seeds, by_id)}
        params = np.array([float(by_id[0][i]["scores"]["params"]) for i in ids])
        entry: dict[str, Any] = {"candidates": len(ids)}
        if len(ids) >= 3:
            pairs = list(itertools.combinations(seeds, 2))
            between = [kendall_tau(scores[a], scores[b]) for a, b in pairs]
            entry["tau_between"] = float(np.mean(between))
            if len(pairs) == 1:
                entry["tau_between_ci"] = _interval(*bootstrap_tau_ci(scores[pairs[0][0]], scores[pairs[0][1]],
                                                                      resamples=resamples))  # fmt: skip
            for m, sign in TRUTH.items():
                truth = np.array([sign * float(by_id[0][i]["truth"][m]) for i in ids])
                ok = np.isfinite(truth)
                e: dict[str, Any] = {"n": int(ok.sum())}
                for s in seeds:
                    e[f"tau_seed{s}"] = float(kendall_tau(scores[s][ok], truth[ok]))
                    e[f"tau_seed{s}_ci"] = _interval(*bootstrap_tau_ci(scores[s][ok], truth[ok], resamples=resamples))
                for a, b in pairs:
                    e[f"diff_{a}_{b}_ci"] = _interval(*bootstrap_tau_diff_ci(scores[a][ok], scores[b][ok], truth[ok],
                                                                             resamples=resamples))  # fmt: skip
                e["tau_params"] = float(kendall_tau(params[ok], truth[ok]))
                e["tau_params_ci"] = _interval(*bootstrap_tau_ci(params[ok], truth[ok], resamples=resamples))
                for s in seeds:
                    e[f"diff_{s}_params_ci"] = _interval(*bootstrap_tau_diff_ci(scores[s][ok], params[ok], truth[ok],
                                                                                resamples=resamples))  # fmt: skip
                entry[m] = e
        out["groups"][name] = entry
    return out


def format_comparison(result: dict[str, Any]) -> str:
    seeds = result["labels"]
    lines = [f"supernets {seeds}, {result['candidates']} candidates scored by all",
             "| group | n | " + " | ".join(f"seed {s}: loss / held" for s in seeds) + " | params | between seeds |",
             "| --- | --- | " + " | ".join("---" for _ in seeds) + " | --- | --- |"]  # fmt: skip
    for name, e in result["groups"].items():
        if "loss" not in e:
            lines.append(f"| {name} | {e['candidates']} | " + " | ".join("-" for _ in seeds) + " | - | - |")
            continue
        cells = []
        for s in seeds:
            lo_l, hi_l = e["loss"][f"tau_seed{s}_ci"]
            cells.append(f"{e['loss'][f'tau_seed{s}']:.2f} [{lo_l:.2f}, {hi_l:.2f}] / {e['held'][f'tau_seed{s}']:.2f}")
        ci = e.get("tau_between_ci")
        between = f"{e['tau_between']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        params = (f"{e['loss']['tau_params']:.2f} / {e['held']['tau_params']:.2f}"
                  if "tau_params" in e["loss"] else "-")  # fmt: skip
        lines.append(f"| {name} | {e['candidates']} | " + " | ".join(cells) + f" | {params} | {between} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="supernet_rank.py --json results, one per seed")
    ap.add_argument("--json", type=Path, help="also write the comparison here")
    ap.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples (default 10,000)")
    args = ap.parse_args(argv)
    try:
        result = compare([_read(p) for p in args.results], resamples=args.resamples)
        if not any("loss" in e for e in result["groups"].values()):
            raise ValueError(f"the results have {result['candidates']} candidates in common: a ranking needs 3")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(_json_safe(result), indent=1, allow_nan=False) + "\n")
    print(format_comparison(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
