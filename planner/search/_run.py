"""Running a study: one process or ``workers`` processes sharing one storage, resumable."""

from __future__ import annotations

import dataclasses
import errno
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from planner.errors import ConfigError, FieldError, PlannerError, StorageError, WriteError
from planner.ir.io import read_yaml
from planner.search._space import SearchSpace, load_space
from planner.search._study import MAX_SEED, MAX_TRIALS, StudyConfig, study_from_dict

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


def _check_overrides(opts: SearchOptions) -> None:
    """Refuses command-line values the study section would refuse (naming the flag)."""
    errors = []
    if opts.n_trials is not None and not 1 <= opts.n_trials <= MAX_TRIALS:
        errors.append(FieldError("--trials", f"{opts.n_trials} is not a trial count (1 to {MAX_TRIALS:,}: the "
                                             "finished trials the study reaches in total)"))  # fmt: skip
    if opts.timeout is not None and not (math.isfinite(opts.timeout) and opts.timeout > 0):
        errors.append(FieldError("--timeout", f"{opts.timeout} must be a positive number of seconds"))
    if opts.seed is not None and not 0 <= opts.seed <= MAX_SEED:
        errors.append(FieldError("--seed", f"{opts.seed} is out of range (0 to 2**32 - 1 = {MAX_SEED})"))
    if not 1 <= opts.workers <= MAX_WORKERS:
        errors.append(FieldError("--workers", f"{opts.workers} is not a worker count (1 to {MAX_WORKERS} processes)"))
    if opts.storage is not None and not opts.storage.strip():
        errors.append(FieldError("--storage", "is empty (leave it out for sqlite:///studies/NAME.db)"))
    if opts.study is not None and (not opts.study.strip() or any(c in opts.study for c in "/\\ ")):
        errors.append(FieldError("--study", f"{opts.study!r} is not a study name (letters, digits, - and _)"))
    if errors:
        raise ConfigError(errors)


MAX_WORKERS = 256  # processes of one machine; more is a typo


def resolve_study(space: SearchSpace, opts: SearchOptions, study_file: str | None = None) -> StudyConfig:
    """The study config of ``space`` (or of ``study_file``) with ``opts`` applied.

    Raises:
        ConfigError: a mistake in the study section (all of them) or in a command-line override.
    """
    _check_overrides(opts)
    if study_file is not None:
        cfg = study_from_dict(read_yaml(study_file), study_file, path="")
    else:
        cfg = study_from_dict(space.study, space.source)
    changes = {k: getattr(opts, k) for k in ("n_trials", "timeout", "storage", "seed") if getattr(opts, k) is not None}
    if opts.study is not None:
        changes["name"] = opts.study
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _storage_url(cfg: StudyConfig) -> str:
    from planner.search._optuna import default_storage

    return cfg.storage or default_storage(cfg.name)


def _storage_where(cfg: StudyConfig, opts: SearchOptions, source: str | None) -> str:
    """Where the storage URL came from, for error messages."""
    if opts.storage is not None:
        return "--storage"
    if cfg.storage is not None:
        return f"{source}: study.storage" if source else "study.storage"
    return "the default storage"


def finished_count(study: Any) -> int:
    """Complete and pruned trials of ``study``."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _create(cfg: StudyConfig, url: str, where: str = "--storage") -> Any:
    import optuna

    from planner.search._optuna import make_pruner, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, cfg.heartbeat, where)
    directions = cfg.directions
    try:  # loaded first: create_study(load_if_exists=True) appends a failed creation to a journal each time
        study = optuna.load_study(study_name=cfg.name, storage=storage, pruner=make_pruner(cfg))
    except KeyError:
        study = optuna.create_study(study_name=cfg.name, storage=storage, load_if_exists=True, pruner=make_pruner(cfg),
                                    directions=directions if len(directions) > 1 else None,
                                    direction=directions[0] if len(directions) == 1 else None)  # fmt: skip
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError([FieldError("study.objectives", f"study {cfg.name!r} in {where} was created with directions "
                                      f"{[d.name.lower() for d in study.directions]}, this study asks for {directions} "
                                      "(give another --study name)")])  # fmt: skip
    if "objectives" not in study.user_attrs:
        study.set_user_attr("objectives", [o.metric for o in cfg.objectives])
        study.set_user_attr("budgets", dict(cfg.budgets.items()))
        study.set_user_attr("seconds", cfg.seconds)
    return study


def _fail_orphans(study: Any) -> list[int]:
    """Marks FAIL the running trials of a journal study whose worker process is gone (journal files have no
    heartbeats); returns their numbers."""
    from optuna.trial import TrialState

    from planner.search._optuna import owner_alive

    dead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if "owner" in t.user_attrs and not owner_alive(t.user_attrs["owner"])]  # fmt: skip
    for t in dead:
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    return [t.number for t in dead]


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
        if "repeat_of" in trial.user_attrs:
            feas += f", answered from trial {trial.user_attrs['repeat_of']}"
        if "surplus" in trial.user_attrs:
            feas = "surplus (the study has its trials)"
        vals = "" if trial.values is None else " ".join(f"{v:.4g}" for v in trial.values)
        who = f"[worker {self.worker}] " if self.workers > 1 else ""
        total = f"/{self.total}" if self.total else ""
        print(f"{who}trial {trial.number}{total} {trial.state.name.lower()} {feas} values [{vals}] "
              f"({rate:.2f} trials/s)", file=sys.stderr, flush=True)  # fmt: skip


class _StopAtTotal:
    """Stops a worker once the study's trials (of every process on its storage) fill ``total`` places."""

    def __init__(self, total: int) -> None:
        self.total = total

    def __call__(self, study: Any, trial: Any) -> None:
        from planner.search._optuna import occupied

        if occupied(study.get_trials(deepcopy=False)) >= self.total:
            study.stop()


def _worker(space_path: str, cfg: StudyConfig, url: str, worker: int, workers: int, progress: bool,
            where: str = "--storage", share: int | None = None) -> int:  # fmt: skip
    """One process: loads the study by name and runs trials until the study has ``cfg.n_trials`` in total
    (counted on the storage, so every process and worker shares one count), and at most ``share`` trials
    itself; returns its evaluator calls."""
    import optuna

    from planner.search._optuna import (
        _RUNNING_OWNERS,
        Objective,
        SurplusTrial,
        is_journal,
        make_pruner,
        make_sampler,
        open_storage,
    )

    if workers > 1:
        try:
            import torch

            torch.set_num_threads(1)  # K processes share the cores
        except ImportError:  # a capacity-only search runs without torch
            pass
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a surplus trial is reported by _Progress, not a warning
    space = load_space(space_path)
    study = optuna.load_study(study_name=cfg.name, storage=open_storage(url, cfg.heartbeat, where),
                              sampler=make_sampler(cfg, space), pruner=make_pruner(cfg))  # fmt: skip
    objective = Objective(space, cfg, total=cfg.n_trials, journal=is_journal(url))
    callbacks: list[Any] = [_Progress(cfg.n_trials, worker, workers, progress)]
    if cfg.n_trials is not None:
        callbacks.insert(0, _StopAtTotal(cfg.n_trials))
    from sqlalchemy.exc import SQLAlchemyError

    _RUNNING_OWNERS.add(objective.owner)
    try:
        # a full disk: say so (the next open finds any record it tore)
        study.optimize(objective, n_trials=share, timeout=cfg.timeout, catch=(SurplusTrial,), callbacks=callbacks)
    except SQLAlchemyError as err:  # e.g. SQLite's "database or disk is full", a server gone mid-study
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(f"{where}: the storage failed during the study ({reason}); the finished trials are "
                           "kept: fix the cause and rerun the same command to resume") from None  # fmt: skip
    except Exception as err:  # Optuna turns a failed write while it fails the trial into an AssertionError
        full = _disk_full(err)
        if full is None:
            raise
        raise WriteError(f"{url}: the disk is full ({os.strerror(full.errno)}); the finished trials are kept: "
                         "free space and rerun the same command to resume") from err  # fmt: skip
    finally:
        _RUNNING_OWNERS.discard(objective.owner)
    return objective.evaluations


def _disk_full(err: BaseException) -> OSError | None:
    """The "no space left" OSError in ``err`` or the errors it was raised while handling, or None."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _worker_process(*args: Any) -> None:
    """A spawned worker: :func:`_worker`, its planner errors printed as messages (no traceback)."""
    try:
        _worker(*args)
    except PlannerError as err:
        print(f"[worker {args[3]}] {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)


def run_search(space_path: str, opts: SearchOptions = SearchOptions(), study_file: str | None = None) -> Any:
    """Runs (or resumes) the study of a space file until it has ``n_trials`` finished trials.

    ``n_trials`` is the study's total: a re-run continues up to it, and any number of ``planner search``
    processes (and ``workers`` within each) on one storage share it. Each trial draws from a generator
    seeded by the study seed and its trial number, so a resume continues the sequence; a candidate the study
    already evaluated is answered from its earlier trial.

    Example:
        >>> from planner.search import run_search, SearchOptions
        >>> study = run_search("searchspaces/quickstart.yaml", SearchOptions(n_trials=4, storage="sqlite:///x.db"))

    Returns:
        the Optuna study.
    """
    space = load_space(space_path)
    cfg = resolve_study(space, opts, study_file)
    url = _storage_url(cfg)
    where = _storage_where(cfg, opts, study_file or space.source)
    from planner.search._optuna import Objective, is_journal, make_sampler

    Objective(space, cfg)  # fail on missing metrics before starting workers
    make_sampler(cfg, space)  # and on a sampler that cannot serve this space
    study = _create(cfg, url, where)
    if is_journal(url):
        orphans = _fail_orphans(study)
        if orphans and opts.progress:
            print(f"study {cfg.name}: trial(s) {orphans} of a killed worker marked failed", file=sys.stderr)
    else:  # a killed worker's trial: FAIL and queued again now, so it is counted once below
        import warnings

        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental in Optuna
            optuna.storages.fail_stale_trials(study)
    if cfg.n_trials is not None and finished_count(study) >= cfg.n_trials:
        if opts.progress:
            print(f"study {cfg.name} already has {finished_count(study)} finished trials (n_trials "
                  f"{cfg.n_trials}); raise --trials to run more", file=sys.stderr)  # fmt: skip
        return study
    k = opts.workers
    # Each worker also gets a share of the places still open, so the workers of one run never race each
    # other for the last place; the storage-side count stops them (and other processes) at the total.
    from planner.search._optuna import occupied

    remaining = None if cfg.n_trials is None else max(cfg.n_trials - occupied(study.get_trials(deepcopy=False), waiting=False), 1)
    shares = [None] * k if remaining is None else [remaining // k + (i < remaining % k) for i in range(k)]
    if k == 1:
        _worker(space_path, cfg, url, 0, 1, opts.progress, where, shares[0])
    else:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker_process, args=(space_path, cfg, url, i, k, opts.progress, where, n))
                 for i, n in enumerate(shares) if n != 0]  # fmt: skip
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            raise PlannerError(f"{len(bad)} worker(s) failed (exit codes {bad}); their messages are above. Rerun "
                               "the same command to resume the study")  # fmt: skip
    return _create(cfg, url, where)


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
