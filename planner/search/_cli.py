"""The ``sample``, ``search``, ``pareto`` and ``repair-journal`` subcommands (registered by :func:`add_commands` in planner/cli.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


def _cmd_sample(args: argparse.Namespace) -> int:
    from planner.errors import ConfigError, FieldError
    from planner.search import load_space, sample_space

    if not 1 <= args.n <= MAX_SAMPLES:
        raise ConfigError([FieldError("-n", f"{args.n} is not a sample count (1 to {MAX_SAMPLES:,})")])

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
    from planner.search._run import pareto_storage_hint, storage_of

    storage = pareto_storage_hint(study.study_name, storage_of(args.space, opts, args.study_file))
    print(
        f"wall time {time.perf_counter() - t0:.1f} s; export: planner pareto --study {study.study_name}{storage} --export DIR"
    )
    if args.export:
        from planner.search import export_pareto

        doc = export_pareto(study, args.export, force=args.force)
        print(f"{len(doc['points'])} Pareto points -> {args.export}")
    return 0


def _cmd_pareto(args: argparse.Namespace) -> int:
    from planner.search import export_pareto
    from planner.search._run import open_existing_study

    study = open_existing_study(args.study, storage=args.storage, space=args.space)
    doc = export_pareto(study, args.export, force=args.force)
    out = Path(args.export)
    print(
        f"{len(doc['points'])} Pareto points -> {out / 'pareto.csv'}, pareto.json, trial-*.yaml, pareto.png, pareto.html"
    )
    return 0


def _cmd_repair_journal(args: argparse.Namespace) -> int:
    from optuna.storages.journal._file import get_lock_file

    from planner.errors import StorageError
    from planner.search._journal import repair_journal
    from planner.search._optuna import journal_lock

    path = Path(args.journal)
    if not path.is_file():
        raise StorageError(f"{path}: no such journal file")
    with get_lock_file(journal_lock(str(path))):  # no worker appends while the file is cut back
        damage, backup = repair_journal(path)
    if damage is None:
        print(f"{path}: every record is intact; nothing changed")
        return 0
    lost = f" and the {damage.after} record(s) after it" if damage.after else ""
    print(f"{path}: kept the {damage.records} intact record(s) before record {damage.line}; dropped record "
          f"{damage.line}{lost}; the original file is kept as {backup}")  # fmt: skip
    return 0


MAX_SAMPLES = 1_000_000


def add_commands(sub: Any) -> None:
    """Adds ``sample``, ``search``, ``pareto`` and ``repair-journal`` to the ``planner`` subparsers."""
    p = sub.add_parser("sample", help="write random architectures of a search space")
    p.add_argument("space", metavar="SPACE")
    p.add_argument("-n", type=int, default=10, help="number of samples (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="DIR", help="write sample-NNN.yaml files here")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("search", help="run (or resume) the study of a search space")
    p.add_argument("space", metavar="SPACE")
    p.add_argument(
        "--trials",
        type=int,
        help="finished trials the study reaches in total, shared by every process "
        "on its storage (overrides study.n_trials)",
    )
    p.add_argument("--timeout", type=float, help="seconds per worker")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the study (default 1)")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="SQLAlchemy URL or *.journal file (default: studies/NAME.db "
        "in the space file's project, printed at the start)",
    )
    p.add_argument(
        "--study",
        metavar="NAME",
        help="study name (overrides study.name; a new name starts a new study, e.g. after editing the space)",
    )
    p.add_argument("--study-file", metavar="FILE", help="a separate study file instead of the space's study:")
    p.add_argument("--seed", type=int)
    p.add_argument("--export", metavar="DIR", help="also export the Pareto front here when done")
    p.add_argument("--force", action="store_true", help="replace an earlier Pareto export in --export DIR")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("pareto", help="export the Pareto front of a study")
    p.add_argument("--study", required=True, metavar="NAME")
    p.add_argument(
        "--storage", metavar="URL", help="default: studies/NAME.db of --space's project (or of this folder's)"
    )
    p.add_argument("--space", metavar="SPACE", help="the space file whose default storage holds the study")
    p.add_argument("--export", required=True, metavar="DIR", help="a new or empty folder (swapped in whole)")
    p.add_argument("--force", action="store_true", help="replace an earlier Pareto export in DIR")
    p.set_defaults(func=_cmd_pareto)

    p = sub.add_parser("repair-journal", help="cut a journal study file back to its intact records (after a kill "
                                              "or a full disk tore its last record)")  # fmt: skip
    p.add_argument("journal", metavar="FILE.journal")
    p.set_defaults(func=_cmd_repair_journal)
