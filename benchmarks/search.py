"""Overhead of the planner per trial against bare Optuna, on the same sampler and storage (one run).

For each sampler (TPE, NSGA-II) a cost-only study (the ``capacity`` evaluator: suggest, freeze, validate,
price, check budgets) of ``--trials`` trials runs on a fresh SQLite file with heartbeats, as
``planner search`` runs it; then bare Optuna runs the same sampler on the same kind of storage with a
trivial objective that returns as many values as the study has objectives. Prints seconds per trial and
their ratio (target: planner / bare <= 1.2). The bare study uses the planner's own sampler settings (``make_sampler``: for TPE multivariate, grouped
when the space has conditions, the same startup trials; NSGA-II with the same population) and suggests the
same parameters with the same distributions, so the ratio is what freezing, validating, pricing, checking
budgets and recording a trial cost on top of Optuna itself.

    python benchmarks/search.py [--space searchspaces/joint.yaml] [--trials 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import optuna

from planner.search import SearchOptions, load_space, resolve_study
from planner.search._optuna import Objective, make_sampler, open_storage, suggest
from planner.search._study import parse_sampler


def planner_s_per_trial(space_path: str, sampler: str, n: int, url: str) -> float:
    space = load_space(space_path)
    cfg = resolve_study(space, SearchOptions(n_trials=n, storage=url, progress=False))
    cfg = dataclasses.replace(cfg, sampler=parse_sampler(sampler))
    study = optuna.create_study(storage=open_storage(url, cfg.heartbeat), sampler=make_sampler(cfg, space),
                                directions=cfg.directions)  # fmt: skip
    objective = Objective(space, cfg)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n)
    return (time.perf_counter() - t0) / n


def bare_s_per_trial(space_path: str, sampler: str, n: int, url: str) -> float:
    """Bare Optuna on the same footing: the same sampler object settings (``make_sampler``), the same
    parameters with the same distributions (categorical, int, float; conditional ones only when active),
    the same storage with the same heartbeats, and as many objective values; only a trivial objective."""
    space = load_space(space_path)
    cfg = resolve_study(space, SearchOptions(n_trials=n, storage=url, progress=False))
    cfg = dataclasses.replace(cfg, sampler=parse_sampler(sampler))
    m = len(cfg.objectives)
    study = optuna.create_study(storage=open_storage(url, cfg.heartbeat), sampler=make_sampler(cfg, space),
                                directions=cfg.directions)  # fmt: skip

    def trivial(trial: optuna.Trial) -> list[float]:
        values = suggest(trial, space)  # the trial.suggest_* calls and nothing else
        s = float(sum(zlib.crc32(repr(v).encode()) % 97 for v in values.values()))
        return [s + i for i in range(m)]

    t0 = time.perf_counter()
    study.optimize(trivial, n_trials=n)
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="searchspaces/joint.yaml", help="a space whose study uses capacity")
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--samplers", nargs="+", default=["tpe", "nsga2"], choices=["tpe", "nsga2"])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE group=True
    print(
        f"{args.space}: {len(load_space(args.space).domains())} domains, {args.trials} trials, SQLite with heartbeats"
    )
    print(f"{'sampler':8} {'planner s/trial':>16} {'bare s/trial':>13} {'planner trials/s':>17} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.samplers:
            ours = planner_s_per_trial(args.space, s, args.trials, f"sqlite:///{Path(tmp) / f'p-{s}.db'}")
            bare = bare_s_per_trial(args.space, s, args.trials, f"sqlite:///{Path(tmp) / f'b-{s}.db'}")
            print(f"{s:8} {ours:16.4f} {bare:13.4f} {1 / ours:17.1f} {ours / bare:6.2f}", flush=True)
    print("(planner and bare runs alternate per sampler in this one run; ratio = planner s/trial / bare s/trial)")


if __name__ == "__main__":
    main()
