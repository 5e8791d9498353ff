"""Running a study: one process or ``workers`` processes sharing one storage, resumable."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from typing import Any

from planner.errors import ConfigError, FieldError
from planner.search._space import SearchSpace, load_space
from planner.search._study import StudyConfig, study_from_dict

__all__ = ["SearchOptions", "resolve_study", "run_search", "summarize", "finished_count"]


@dataclass(frozen=True)
class SearchOptions:
    """Command-line overrides of the ``study:`` section (None keeps the file's value)."""

    n_trials: int | None = None
    timeout: float | None = None
    storage: str | None = None
    study: str | None = None
    seed: int | None = None
    workers: int = 1
    progress: bool = True


def resolve_study(space: SearchSpace, opts: SearchOptions, study_file: str | None = None) -> StudyConfig:
    """The study config of ``space`` (or of ``study_file``) with ``opts`` applied."""
    if study_file is not None:
        from planner.ir.io import read_yaml

        cfg = study_from_dict(read_yaml(study_file), study_file, path="")
    else:
        cfg = study_from_dict(space.study, space.source)
    changes = {k: getattr(opts, k) for k in ("n_trials", "timeout", "storage", "seed") if getattr(opts, k) is not None}
    if opts.study is not None:
        changes["name"] = opts.study
    if opts.workers < 1:
        raise ConfigError([FieldError("--workers", f"{opts.workers} must be at least 1")])
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _storage_url(cfg: StudyConfig) -> str:
    from planner.search._optuna import default_storage

    return cfg.storage or default_storage(cfg.name)


def finished_count(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _create(cfg: StudyConfig, url: str) -> Any:
    import optuna

    from planner.search._optuna import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, cfg.heartbeat)
    directions = cfg.directions
    study = optuna.create_study(study_name=cfg.name, storage=storage, load_if_exists=True, pruner=cfg.pruner.build(),
                                directions=directions if len(directions) > 1 else None,
                                direction=directions[0] if len(directions) == 1 else None)  # fmt: skip
    if "objectives" not in study.user_attrs:
        study.set_user_attr("objectives", [o.metric for o in cfg.objectives])
        study.set_user_attr("budgets", dict(cfg.budgets.items()))
        study.set_user_attr("seconds", cfg.seconds)
    return study


class _Progress:
    def __init__(self, total: int | None, worker: int, workers: int, enabled: bool) -> None:
        self.total, self.worker, self.workers, self.enabled = total, worker, workers, enabled
        self.t0 = time.perf_counter()
        self.done = 0

    def __call__(self, study: Any, trial: Any) -> None:
        self.done += 1
        if not self.enabled:
            return
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        feas = "feasible" if trial.user_attrs.get("feasible") else "infeasible"
        vals = "" if trial.values is None else " ".join(f"{v:.4g}" for v in trial.values)
        who = f"[worker {self.worker}] " if self.workers > 1 else ""
        total = f"/{self.total}" if self.total else ""
        print(f"{who}trial {trial.number}{total} {trial.state.name.lower()} {feas} values [{vals}] "
              f"({rate:.2f} trials/s)", file=sys.stderr, flush=True)  # fmt: skip


def _worker(space_path: str, cfg: StudyConfig, url: str, n: int, worker: int, workers: int, progress: bool) -> None:
    """One process: loads the study by name and runs ``n`` trials of it."""
    import optuna

    from planner.search._optuna import Objective, make_sampler, open_storage

    if workers > 1:
        try:
            import torch

            torch.set_num_threads(1)  # K processes share the cores
        except ImportError:  # a capacity-only search runs without torch
            pass
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(space_path)
    study = optuna.load_study(study_name=cfg.name, storage=open_storage(url, cfg.heartbeat), sampler=make_sampler(cfg, space, worker),
                              pruner=cfg.pruner.build())
    study.optimize(Objective(space, cfg), n_trials=n, timeout=cfg.timeout, catch=(),
                   callbacks=[_Progress(cfg.n_trials, worker, workers, progress)])  # fmt: skip


def run_search(space_path: str, opts: SearchOptions = SearchOptions(), study_file: str | None = None) -> Any:
    """Runs (or resumes) the study of a space file until it has ``n_trials`` finished trials.

    Example:
        >>> from planner.search import run_search, SearchOptions
        >>> study = run_search("searchspaces/quickstart.yaml", SearchOptions(n_trials=4, storage="sqlite:///x.db"))

    Returns:
        the Optuna study.
    """
    space = load_space(space_path)
    cfg = resolve_study(space, opts, study_file)
    url = _storage_url(cfg)
    from planner.search._optuna import Objective

    Objective(space, cfg)  # fail on missing metrics before starting workers
    study = _create(cfg, url)
    remaining = None if cfg.n_trials is None else max(cfg.n_trials - finished_count(study), 0)
    if remaining == 0:
        if opts.progress:
            print(f"study {cfg.name} already has {cfg.n_trials} finished trials", file=sys.stderr)
        return study
    k = opts.workers
    shares = [None] * k if remaining is None else [remaining // k + (i < remaining % k) for i in range(k)]
    if k == 1:
        _worker(space_path, cfg, url, shares[0], 0, 1, opts.progress)
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(space_path, cfg, url, n, i, k, opts.progress))
                 for i, n in enumerate(shares) if n != 0]  # fmt: skip
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"{len(bad)} worker(s) failed (exit codes {bad}); re-run to resume")
    return _create(cfg, url)


def infeasibility_report(study: Any) -> str | None:
    """When no trial met the budgets, says which budget failed and the smallest value seen; else None."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("cost")]
    if not trials or any(t.user_attrs.get("feasible") for t in trials):
        return None
    budgets = study.user_attrs.get("budgets", {})
    parts = []
    for metric, bound in budgets.items():
        best = min(t.user_attrs["cost"].get(metric, float("inf")) for t in trials)
        if best > bound:
            parts.append(f"{metric} <= {bound:.6g} (the smallest of {len(trials)} candidates: {best:.6g})")
    why = "; ".join(parts) or "every candidate was invalid"
    return (f"study {study.study_name}: no candidate met the budgets: {why}. Loosen the budgets in study.budgets "
            "or make the space smaller (fewer/narrower layers, lower bits).")


def summarize(study: Any, limit: int = 10) -> str:
    """A table of the Pareto (or best) feasible trials and the trial counts."""
    from planner.search._pareto import pareto_trials

    trials = study.get_trials(deepcopy=False)
    feasible = [t for t in trials if t.user_attrs.get("feasible") and t.values is not None]
    front = pareto_trials(study)
    lines = [f"study {study.study_name}: {len(trials)} trials, {len(feasible)} feasible, "
             f"{sum(1 for t in trials if 'invalid' in t.user_attrs)} invalid, {len(front)} on the Pareto front"]  # fmt: skip
    names = [o for o in study.user_attrs.get("objectives", [])] or [f"obj{i}" for i in range(len(study.directions))]
    header = ["trial", *names, "params"]
    rows = [[str(t.number), *(f"{v:.5g}" for v in t.values), f"{t.user_attrs.get('cost', {}).get('params', '')}"]
            for t in front[:limit]]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    if len(front) > limit:
        lines.append(f"... {len(front) - limit} more (planner pareto --export DIR writes them all)")
    return "\n".join(lines)
