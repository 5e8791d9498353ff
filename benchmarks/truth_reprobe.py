"""The word probe's cross-entropy for a truth table's float runs that predate it, from their saved weights; and
how steady a downstream truth it is next to the probe's accuracy.

The 2,000-step table's records (``truth/records.jsonl``) hold the probe's held-out word accuracy, counted on
80 utterances: it moves in steps of 1.25%, its 140 runs take 23 distinct values, and its two seeds agree at
tau 0.51. The probe's cross-entropy on the same utterances (``held_out_nll``, kept by records since 1
December 2026) is continuous. Each float run's final weights are in ``weights/<id>-s<seed>.pt`` (not
committed; the compressed variants' are not kept), so the same probe (``truth.probe_run``: the table's probe
steps and seed, one thread) is run again on them:

    python benchmarks/truth_reprobe.py --table benchmarks/results/truth --records benchmarks/results/truth-reprobe.jsonl
    python benchmarks/truth_reprobe.py --table benchmarks/results/truth --records benchmarks/results/truth-reprobe.jsonl \\
        --report --rank benchmarks/results/supernet-rank-seed0.json benchmarks/results/supernet-rank-seed1.json \\
        --json benchmarks/results/truth-reprobe-report.json

``--records`` gets one line per run (``{"type": "planner-truth-reprobe", "id", "seed", "weights", "probe":
{...as a record's...}, "recorded_held_out", "same_accuracy"}``), appended as each probe ends and resumed by
(id, seed). ``same_accuracy`` checks the re-run against the record: the probe is deterministic, so a
mismatch means the weights or the probe are not the run's, and the report counts them.

``--report`` gives, over the float candidates with both seeds re-probed (groups ``float``, ``unsealed``,
``sealed``), with 10,000-resample bootstrap 90% intervals: the noise ceiling (tau between the two seeds) of
the accuracy and of the cross-entropy; tau between them; and, for each ``--rank`` result, tau of its
scorers (``supernet_loss``, ``params``, ``macs``) against the mean-of-seeds cross-entropy and the paired
difference ``supernet_loss - params``. The table itself is only read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ranking import RESAMPLES, bootstrap_tau_diff_ci
from truth import probe_run
from truth_plan import table_plan
from truth_records import append_record, read_records
from truth_report import GROUPS as TABLE_GROUPS
from truth_report import metric_value, tau_entry
from truth_setup import read_setup

import planner
from planner.compress import load_checkpoint_
from planner.errors import ConfigError, FieldError, PlannerError
from planner.files import write_text_atomic

__all__ = ["RECORD_TYPE", "main", "read_reprobe", "reprobe", "steadiness"]

RECORD_TYPE = "planner-truth-reprobe"
GROUPS = {"float": TABLE_GROUPS["all"], "unsealed": TABLE_GROUPS["unsealed"], "sealed": TABLE_GROUPS["sealed"]}
SCORED = {"supernet_loss": -1.0, "params": 1.0, "macs": 1.0}  # -> the sign that makes a higher score better


def _key(record: dict[str, Any]) -> tuple[str, int]:
    return str(record["id"]), int(record["seed"])


def read_reprobe(path: str | Path) -> list[dict[str, Any]]:
    """The re-probe records of ``path`` (none when it does not exist)."""
    return read_records(path, record_type=RECORD_TYPE, key=_key)


def reprobe(table: str | Path, records: str | Path, log: Any = None) -> int:
    """Re-probes every float run of ``table`` whose weights are saved and that ``records`` lacks; returns how
    many it probed.

    Raises:
        ConfigError: the table is not readable, or its space is not this checkout's.
    """
    setup = read_setup(table)
    floats = {c.id: c for c in table_plan(setup) if c.variant == "float"}
    done = {_key(r) for r in read_reprobe(records)}
    ran = 0
    for r in read_records(setup.out / "records.jsonl"):
        weights = setup.out / "weights" / f"{r['id']}-s{r['seed']}.pt"
        if r["id"] not in floats or _key(r) in done or r.get("probe") is None or not weights.is_file():
            continue
        cand = floats[r["id"]]
        student = planner.materialize(cand.graph)
        load_checkpoint_(student, torch.load(weights, weights_only=True))
        probe = probe_run(setup, student, cand.graph, setup.info["training"])
        recorded = r["probe"]["held_out"]
        record = {"id": r["id"], "seed": int(r["seed"]), "weights": weights.relative_to(setup.out).as_posix(),
                  "sealed": cand.sealed, "probe": probe, "recorded_held_out": recorded,
                  "same_accuracy": probe["held_out"] == recorded, "threads": torch.get_num_threads()}  # fmt: skip
        ran += append_record(records, record, record_type=RECORD_TYPE, key=_key)
        if log is not None:
            print(f"{r['id']} s{r['seed']}: held-out accuracy {probe['held_out']:.4f} (recorded {recorded:.4f}), "
                  f"cross-entropy {probe['held_out_nll']:.4f}", file=log, flush=True)  # fmt: skip
    return ran


def steadiness(rows: list[dict[str, Any]], seeds: list[int], ranks: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The report (module docstring) from re-probe records ``rows`` and rank results' candidates ``ranks``."""
    runs = {_key(r): r for r in rows}
    ids = sorted({r["id"] for r in rows if all((r["id"], s) in runs for s in seeds)})
    a, b = seeds[0], seeds[1]
    out: dict[str, Any] = {"runs": len(rows), "same_accuracy": sum(bool(r["same_accuracy"]) for r in rows),
                           "candidates": len(ids), "seeds": seeds, "resamples": RESAMPLES, "groups": {}}  # fmt: skip
    for name, keep in GROUPS.items():
        group = [i for i in ids if keep(runs[(i, a)])]
        acc = {s: np.array([metric_value(runs[(i, s)], "held") for i in group]) for s in seeds}
        nll = {s: np.array([metric_value(runs[(i, s)], "held_nll") for i in group]) for s in seeds}
        mean_nll = -(nll[a] + nll[b]) / 2  # oriented: higher is better
        entry: dict[str, Any] = {"candidates": len(group), "ceiling_accuracy": tau_entry(acc[a], acc[b]),
                                 "ceiling_nll": tau_entry(nll[a], nll[b]),
                                 "accuracy_vs_nll": tau_entry((acc[a] + acc[b]) / 2, mean_nll),
                                 "distinct_accuracies": len(set(np.concatenate([acc[a], acc[b]]).tolist())),
                                 "rank": {}}  # fmt: skip
        for label, cands in ranks.items():
            by_id = {c["id"]: c for c in cands}
            have = [k for k, i in enumerate(group) if i in by_id]
            truth = mean_nll[have]
            scores = {s: np.array([sign * metric_score(by_id[group[k]], s) for k in have])
                      for s, sign in SCORED.items()}  # fmt: skip
            e = {s: tau_entry(v, truth) for s, v in scores.items()}
            if len(have) >= 3:
                diff = bootstrap_tau_diff_ci(scores["supernet_loss"], scores["params"], truth)
                e["diff_supernet_loss_params_ci"] = [float(x) if math.isfinite(x) else None for x in diff]
            entry["rank"][label] = e
        out["groups"][name] = entry
    return out


def metric_score(candidate: dict[str, Any], scorer: str) -> float:
    """A rank result's score of ``candidate`` by ``scorer``; NaN where it has none."""
    v = (candidate.get("scores") or {}).get(scorer)
    return math.nan if v is None else float(v)


def _ci(e: dict[str, Any]) -> str:
    if e["tau"] is None:
        return "-"
    lo, hi = e["ci"]
    return f"{e['tau']:.2f}" + ("" if lo is None else f" [{lo:.2f}, {hi:.2f}]") + f" (n {e['n']})"


def format_steadiness(report: dict[str, Any]) -> str:
    lines = [f"{report['runs']} runs re-probed, {report['same_accuracy']} with the recorded accuracy exactly; "
             f"{report['candidates']} candidates with both seeds; tau, {report['resamples']:,}-resample 90% CI"]  # fmt: skip
    for name, e in report["groups"].items():
        lines.append(f"== {name}: {e['candidates']} candidates ({e['distinct_accuracies']} distinct accuracies)")
        lines.append(f"  noise ceiling: accuracy {_ci(e['ceiling_accuracy'])}; cross-entropy {_ci(e['ceiling_nll'])}")
        lines.append(f"  accuracy vs cross-entropy: {_ci(e['accuracy_vs_nll'])}")
        for label, r in e["rank"].items():
            diff = r.get("diff_supernet_loss_params_ci")
            d = f"; supernet_loss - params [{diff[0]:.2f}, {diff[1]:.2f}]" if diff and diff[0] is not None else ""
            lines.append(f"  {label}: " + ", ".join(f"{s} {_ci(r[s])}" for s in SCORED) + d)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True, help="the truth table (only read; its weights/ folder is used)")
    ap.add_argument("--records", required=True, help="the JSON-lines file the re-probed runs are appended to")
    ap.add_argument("--report", action="store_true", help="report on the records instead of probing")
    ap.add_argument("--rank", nargs="*", default=[], help="with --report: supernet_rank.py results to rank")
    ap.add_argument("--json", help="with --report: also write the report here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the table's probes were run so)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if not args.report:
            ran = reprobe(args.table, args.records, log=sys.stderr)
            print(f"re-probed {ran} runs", file=sys.stderr)
            return 0
        setup = read_setup(args.table)
        ranks = {}
        for path in args.rank:
            try:
                ranks[Path(path).name] = json.loads(Path(path).read_text(encoding="utf-8"))["candidates"]
            except (OSError, ValueError, KeyError) as err:
                raise ConfigError([FieldError("candidates", f"not a supernet_rank.py result ({err})")], path) from None
        result = steadiness(read_reprobe(args.records), [int(s) for s in setup.info["training"]["seeds"]], ranks)
    except PlannerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:  # written first: a closed stdout does not lose it
        write_text_atomic(args.json, json.dumps({"type": "planner-truth-reprobe-report", "format": 1, **result},
                                                indent=1, allow_nan=False) + "\n")  # fmt: skip
    print(format_steadiness(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
