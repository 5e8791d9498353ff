"""Where the truth table's curves flatten: a few of a table's float candidates trained at other settings
(learning rate, steps), before a whole table is paid for at one of them.

The truth table's convergence criterion (``truth_report.py``: at most 3% held-out loss gain over the last
quarter, for 90% of the runs) is met by the 2,000-step floats in 6% of runs, and 6,000 steps still gain 5-15%.
A whole table costs 8-18 CPU-hours, so this trains only the candidates named, with the table's own setup
(corpus, teacher, held-out batches and masks, probe: ``truth.train_run``) at each learning rate, length and
training batch (``--batch-seconds``; default the recipe's), and reports each run's last-quarter gain and probe.

    python benchmarks/truth_pilot.py --table benchmarks/results/truth-6k --ids c00 c01 c02 \\
        --lr 0.006 0.012 --steps 4000 --records benchmarks/results/truth-pilot.jsonl
    python benchmarks/truth_pilot.py --records benchmarks/results/truth-pilot.jsonl --report

The table is only read (``truth_setup.read_setup``). ``--records`` gets one line per finished run (the
table's record fields plus ``lr``, ``batch_seconds`` and ``table``), appended under a lock as each run ends;
a second call skips the runs (candidate, seed, lr, steps, batch seconds) it already holds, so it resumes,
and ``--part i/n`` splits the runs between processes. Only float candidates: the compressed variants already
plateau (100% of them, 400 steps).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from truth import _git, _part, train_run
from truth_plan import Candidate, table_plan
from truth_records import append_record, read_records
from truth_report import PLATEAU, loss_at
from truth_setup import TruthSetup, read_setup

from planner.errors import ConfigError, FieldError, PlannerError

__all__ = [
    "RECORD_TYPE",
    "last_quarter_gain",
    "main",
    "pilot_key",
    "pilot_runs",
    "read_pilot",
    "run_pilot",
    "summarize",
]


def last_quarter_gain(record: dict[str, Any]) -> float:
    """``(loss(3T/4) - loss(T)) / loss(3T/4)`` of a run's held-out curve (NaN when diverged)."""
    if record.get("loss") is None:
        return math.nan
    at = loss_at(record, 3 * record["steps"] // 4)
    return (at - loss_at(record, record["steps"])) / at


RECORD_TYPE = "planner-truth-pilot"
STUCK = 0.75  # a run whose final held-out loss is above this share of its step-0 loss has collapsed, not converged


def pilot_key(record: dict[str, Any]) -> tuple[str, int, float, int, float]:
    """``(candidate id, seed, lr, steps, batch seconds)``: what identifies a pilot run."""
    return (str(record["id"]), int(record["seed"]), float(record["lr"]), int(record["steps"]),
            float(record["batch_seconds"]))  # fmt: skip


def read_pilot(path: str | Path) -> list[dict[str, Any]]:
    """The pilot records of ``path`` (none when it does not exist)."""
    return read_records(path, record_type=RECORD_TYPE, key=pilot_key)


def pilot_runs(setup: TruthSetup, ids: list[str], lrs: list[float], steps: list[int], seeds: list[int],
               batches: list[float]) -> list[tuple[Candidate, int, float, int, float]]:  # fmt: skip
    """The runs asked for, in order: ``(candidate, seed, lr, steps, batch seconds)`` for the named float
    candidates.

    Raises:
        ConfigError: an id is not a float candidate of the table's plan; the table's space is not this
            checkout's.
    """
    floats = {c.id: c for c in table_plan(setup) if c.variant == "float"}
    unknown = [i for i in ids if i not in floats]
    if unknown:
        raise ConfigError([FieldError("ids", f"{', '.join(unknown)} not float candidates of this table (it has "
                                             f"{min(floats)}..{max(floats)}): name those")], str(setup.out))  # fmt: skip
    return [(floats[i], s, lr, n, b) for b in batches for n in steps for lr in lrs for i in ids for s in seeds]


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per setting (lr, steps, batch seconds): runs, diverged and stuck runs (a final loss above
    :data:`STUCK` of the step-0 loss: flat because it collapsed), the median gain, the share at or under the
    plateau threshold (of all finite runs, and of those not stuck), the median final loss and the probe's
    held-out accuracy and cross-entropy."""
    rows = []
    for setting in sorted({pilot_key(r)[2:] for r in records}):
        lr, steps, batch = setting
        rs = [r for r in records if pilot_key(r)[2:] == setting]
        ok = [r for r in rs if r.get("loss") is not None]
        gains = [last_quarter_gain(r) for r in ok]
        probes = [r["probe"] for r in ok if r.get("probe")]
        stuck = [r["loss"] > STUCK * r["curve"][0][1] for r in ok]
        learning = [g for g, s in zip(gains, stuck) if not s]
        rows.append({"lr": lr, "steps": steps, "batch_seconds": batch, "runs": len(rs), "diverged": len(rs) - len(ok),
                     "stuck": sum(stuck),
                     "median_gain": statistics.median(gains) if gains else None,
                     "plateaued": sum(g <= PLATEAU for g in gains) / len(gains) if gains else None,
                     "plateaued_learning": sum(g <= PLATEAU for g in learning) / len(learning) if learning else None,
                     "median_loss": statistics.median(r["loss"] for r in ok) if ok else None,
                     "median_probe": statistics.median(p["held_out"] for p in probes) if probes else None,
                     "median_probe_nll": statistics.median(p["held_out_nll"] for p in probes
                                                           if p.get("held_out_nll") is not None) if probes else None,
                     "median_seconds": statistics.median(r["seconds"]["total"] for r in rs if r.get("seconds"))})  # fmt: skip
    return rows


def run_pilot(setup: TruthSetup, runs: list[tuple[Candidate, int, float, int, float]], records: Path,
              log: Any = None) -> int:  # fmt: skip
    """Trains the ``runs`` that ``records`` does not hold yet (checked before each: another process may have
    done one), appending each record as it ends; returns how many it trained."""
    git, ran = _git(), 0
    for cand, seed, lr, steps, batch in runs:
        if (cand.id, seed, lr, steps, batch) in {pilot_key(r) for r in read_pilot(records)}:
            continue
        settings = {**setup.info["training"], "lr": lr, "steps": steps, "batch_seconds": batch}
        fields, _ = train_run(setup, cand, seed, settings)
        record = {"table": str(setup.out), "id": cand.id, "stratum": cand.stratum, "sealed": cand.sealed, "seed": seed,
                  "lr": lr, "batch_seconds": batch, **fields, "git": git, "torch": torch.__version__,
                  "threads": torch.get_num_threads()}  # fmt: skip
        ran += append_record(records, record, record_type=RECORD_TYPE, key=pilot_key)
        if log is not None:
            print(f"{cand.id} s{seed} lr {lr} {steps} steps of {batch:g} s: loss {record['loss']}, gain "
                  f"{last_quarter_gain(record):.3f}, {fields['seconds']['total']} s", file=log, flush=True)  # fmt: skip
    return ran


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_report(records: list[dict[str, Any]]) -> str:
    lines = [f"{'id':<5} {'seed':>4} {'lr':>7} {'steps':>6} {'batch':>5} {'loss':>7} {'gain':>7} {'probe':>6} "
             f"{'nll':>6} {'s':>6}"]  # fmt: skip
    for r in sorted(records, key=lambda r: (*pilot_key(r)[2:], *pilot_key(r)[:2])):
        p = r.get("probe") or {}
        lines.append(f"{r['id']:<5} {r['seed']:>4} {r['lr']:>7.4f} {r['steps']:>6} {r['batch_seconds']:>5g} "
                     f"{_fmt(r.get('loss'), '7.4f')} "
                     f"{last_quarter_gain(r):>7.3f} {_fmt(p.get('held_out'), '6.3f')} "
                     f"{_fmt(p.get('held_out_nll'), '6.3f')} {r['seconds']['total']:>6.0f}")  # fmt: skip
    lines.append(f"\nper setting (plateau: gain <= {PLATEAU:.0%} over the last quarter)")
    for row in summarize(records):
        lines.append(f"  lr {row['lr']:.4f}, {row['steps']} steps of {row['batch_seconds']:g} s: {row['runs']} runs "
                     f"({row['diverged']} diverged, {row['stuck']} stuck), "
                     f"median gain {_fmt(row['median_gain'], '.3f')}, plateaued {_fmt(row['plateaued'], '.0%')} "
                     f"({_fmt(row['plateaued_learning'], '.0%')} of those not stuck), "
                     f"median loss {_fmt(row['median_loss'], '.3f')}, probe {_fmt(row['median_probe'], '.3f')} "
                     f"(nll {_fmt(row['median_probe_nll'], '.3f')}), {row['median_seconds']:.0f} s a run")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", help="the truth table whose setup and plan the runs use (only read)")
    ap.add_argument("--ids", nargs="+", default=[], help="float candidates of its plan (c00 c01 ...)")
    ap.add_argument("--lr", type=float, nargs="+", default=[], help="learning rates")
    ap.add_argument("--steps", type=int, nargs="+", default=[], help="training steps")
    ap.add_argument(
        "--batch-seconds",
        type=float,
        nargs="+",
        default=[],
        help="seconds of audio per training batch (default the table's recipe's)",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[101], help="training seeds (default 101)")
    ap.add_argument("--records", required=True, help="the JSON-lines file the runs are appended to")
    ap.add_argument("--part", type=_part, default=(0, 1), help="i/n: run every n-th run from the i-th")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: repeatable runs)")
    ap.add_argument("--report", action="store_true", help="print the records' report and stop")
    args = ap.parse_args(argv)
    try:
        records = read_pilot(args.records)
        if args.report:
            print(format_report(records))
            return 0
        if not (args.table and args.ids and args.lr and args.steps):
            raise ConfigError([FieldError("", "give --table, --ids, --lr and --steps (or --report)")], "truth_pilot")
        bad = [x for x in [*args.lr, *args.steps, *args.batch_seconds] if not (math.isfinite(x) and x > 0)]
        if bad:
            raise ConfigError([FieldError("lr/steps/batch-seconds", f"{bad} must be positive numbers")], "truth_pilot")
        setup = read_setup(args.table)
        torch.set_num_threads(args.threads)
        batches = args.batch_seconds or [setup.recipe.data.batch_seconds]
        runs = pilot_runs(setup, args.ids, args.lr, args.steps, args.seeds, batches)
        ran = run_pilot(setup, runs[args.part[0] :: args.part[1]], Path(args.records), log=sys.stderr)
    except PlannerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"part {args.part[0]}/{args.part[1]}: ran {ran} of {len(runs)} runs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
