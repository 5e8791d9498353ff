"""The ``sample``, ``search`` and ``pareto`` subcommands (registered by :func:`add_commands` in planner/cli.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from planner.errors import PlannerError

__all__ = ["add_commands"]


def _cmd_sample(args: argparse.Namespace) -> int:
    from planner.search import load_space, sample_space

    samples = sample_space(load_space(args.space), args.n, seed=args.seed, out=args.out)
    for s in samples:
        where = f" -> {args.out}/sample-{s.index:03d}.yaml" if args.out and s.graph is not None else ""
        print(f"sample {s.index}: " + (f"{s.graph.param_count:,} parameters{where}" if s.graph is not None
                                       else f"infeasible: {s.error}"))  # fmt: skip
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from planner.search import SearchOptions, run_search, summarize
    from planner.search._run import infeasibility_report

    opts = SearchOptions(n_trials=args.trials, timeout=args.timeout, storage=args.storage, study=args.study,
                         seed=args.seed, workers=args.workers)  # fmt: skip
    t0 = time.perf_counter()
    study = run_search(args.space, opts, study_file=args.study_file)
    print(summarize(study))
    impossible = infeasibility_report(study)
    if impossible is not None:
        print(impossible, file=sys.stderr)
        return 1
    storage = f" --storage {args.storage}" if args.storage else ""
    print(f"wall time {time.perf_counter() - t0:.1f} s; export: planner pareto --study {study.study_name}{storage} --export DIR")
    if args.export:
        from planner.search import export_pareto

        doc = export_pareto(study, args.export)
        print(f"{len(doc['points'])} Pareto points -> {args.export}")
    return 0


def _cmd_pareto(args: argparse.Namespace) -> int:
    import optuna

    from planner.search import export_pareto
    from planner.search._optuna import default_storage, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = args.storage or default_storage(args.study)
    try:
        study = optuna.load_study(study_name=args.study, storage=open_storage(url, heartbeat=None))
    except KeyError:
        raise PlannerError(f"no study named {args.study!r} in {url} (give --storage)") from None
    doc = export_pareto(study, args.export)
    out = Path(args.export)
    print(f"{len(doc['points'])} Pareto points -> {out / 'pareto.csv'}, pareto.json, trial-*.yaml, pareto.png, pareto.html")
    return 0


def add_commands(sub: Any) -> None:
    """Adds ``sample``, ``search`` and ``pareto`` to the ``planner`` subparsers."""
    p = sub.add_parser("sample", help="write random architectures of a search space")
    p.add_argument("space", metavar="SPACE")
    p.add_argument("-n", type=int, default=10, help="number of samples (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="DIR", help="write sample-NNN.yaml files here")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("search", help="run (or resume) the study of a search space")
    p.add_argument("space", metavar="SPACE")
    p.add_argument("--trials", type=int, help="finished trials to reach (overrides study.n_trials)")
    p.add_argument("--timeout", type=float, help="seconds per worker")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the study (default 1)")
    p.add_argument("--storage", metavar="URL", help="SQLAlchemy URL or *.journal file (default sqlite:///studies/NAME.db)")
    p.add_argument("--study", metavar="NAME", help="study name (overrides study.name)")
    p.add_argument("--study-file", metavar="FILE", help="a separate study file instead of the space's study:")
    p.add_argument("--seed", type=int)
    p.add_argument("--export", metavar="DIR", help="also export the Pareto front here when done")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("pareto", help="export the Pareto front of a study")
    p.add_argument("--study", required=True, metavar="NAME")
    p.add_argument("--storage", metavar="URL", help="default sqlite:///studies/NAME.db")
    p.add_argument("--export", required=True, metavar="DIR")
    p.set_defaults(func=_cmd_pareto)
