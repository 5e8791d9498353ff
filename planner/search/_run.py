"""Running a study: one process or ``workers`` processes sharing one storage, resumable."""

from __future__ import annotations

import dataclasses
import errno
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.config import read_yaml
from planner.errors import ConfigError, FieldError, PlannerError, SearchInterrupted, StorageError, WriteError
from planner.search._interrupt import INTERRUPTED, InterruptGuard, exit_interrupted
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
    source = study_file or space.source
    if cfg.hardware is not None and _is_file_name(cfg.hardware) and source:
        # a hardware file is named relative to the file that names it (workers get the absolute path)
        changes["hardware"] = str((Path(source).resolve().parent / cfg.hardware).resolve())
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _is_file_name(text: str) -> bool:
    """Whether ``study.hardware`` names a YAML file rather than a catalog entry."""
    return text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text


def _storage_url(cfg: StudyConfig, source: str | None = None) -> str:
    """The study's storage URL: ``study.storage`` / ``--storage``, else ``sqlite:///ROOT/NAME.db`` with ROOT the
    space file's :func:`~planner.search._optuna.studies_root` (absolute, so it is the same from any folder)."""
    from planner.search._optuna import default_storage, studies_root

    return cfg.storage or default_storage(cfg.name, studies_root(source))


def _shown(url: str) -> str:
    """A storage URL as printed: a local file with its absolute path, a server without its password."""
    from planner.search._optuna import _redacted, is_journal, storage_file

    path = storage_file(url)
    if path is None:
        return _redacted(url)
    return str(path.resolve()) if is_journal(url) else f"sqlite:///{path.resolve()}"


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


def _create(cfg: StudyConfig, url: str, where: str = "--storage", space: SearchSpace | None = None) -> Any:
    """Creates the study, or loads it and checks that it is the same study (directions, space).

    Raises:
        ConfigError: the stored study has other directions, or was created with another space (each domain
            that changed is named, with ``--study NEW`` to start another study).
    """
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
    if space is not None:
        _check_same_space(study, space, cfg, where)
    if "objectives" not in study.user_attrs:
        study.set_user_attr("objectives", [o.metric for o in cfg.objectives])
        study.set_user_attr("budgets", dict(cfg.budgets.items()))
        study.set_user_attr("seconds", cfg.seconds)
        if space is not None:
            study.set_user_attr("space", space_record(space))
    ev = cfg.evaluator
    if ev.kind == "supernet" and ev.config is not None and "supernet" not in study.user_attrs:
        # what planner pareto --export needs to write each point's inherited weights
        study.set_user_attr("supernet", {"checkpoint": os.path.abspath(ev.config.checkpoint),
                                         "recipe": os.path.abspath(ev.config.recipe),
                                         "recalibrate": ev.config.recalibrate})  # fmt: skip
    return study


def space_record(space: SearchSpace) -> dict[str, str]:
    """What a study keeps of its space: ``{domain label: its values and conditions}`` (``one of 96, 128``)."""
    record = {}
    for d in space.domains():
        when = f" when {' and '.join(str(c) for c in d.when)}" if d.when else ""
        record[d.label] = d.describe() + when
    return record


def _check_same_space(study: Any, space: SearchSpace, cfg: StudyConfig, where: str) -> None:
    """Refuses to continue a study with a space whose domains differ from those it was created with.

    A study created by an earlier planner has no record of its space: then the distributions its trials
    used are compared with the space's (what Optuna itself would refuse mid-trial with a traceback).
    """
    stored = study.user_attrs.get("space")
    errors: list[FieldError] = []
    by_label = {d.label: d for d in space.domains()}
    if isinstance(stored, dict):
        now = space_record(space)
        for label, was in stored.items():
            if label not in now:
                errors.append(FieldError(label, f"the study's domain {label!r} ({was}) is not in the space any more"))
            elif now[label] != was:
                errors.append(FieldError(by_label[label].path or label, f"domain {label!r} was {was}, is now "
                                                                        f"{now[label]}"))  # fmt: skip
        for label in now:
            if label not in stored:
                errors.append(FieldError(by_label[label].path or label, f"domain {label!r} ({now[label]}) is new"))
    else:
        from planner.search._optuna import changed_distributions

        for label, was, now_ in changed_distributions(study, space):
            errors.append(FieldError(by_label[label].path or label, f"domain {label!r} was {was}, is now {now_}"))
    if errors:
        errors.append(FieldError("study.name", f"study {cfg.name!r} in {where} was created with another space; "
                                 f"its {len(study.trials)} trial(s) cannot continue with this one: give --study NEW "
                                 "to start another study on the edited space (or undo the edit)"))  # fmt: skip
        raise ConfigError(errors, space.source)


def update_budgets(study: Any, cfg: StudyConfig) -> str | None:
    """Makes the study's budgets those of ``cfg`` (the space file's, now); says what changed on the front.

    The front and every export are filtered by the study's current budgets
    (:func:`planner.search._pareto.pareto_trials`): tightening a budget drops the points over it; a
    loosened one lets later trials reach further (candidates that were over the old one were never
    evaluated, so they stay off the front).

    Returns:
        one line for the user, or None when the budgets did not change.
    """
    from planner.search._pareto import pareto_trials

    old = study.user_attrs.get("budgets")
    new = dict(cfg.budgets.items())
    if old is None or old == new:
        return None
    before = pareto_trials(study, budgets=old)
    study.set_user_attr("budgets", new)
    after = {t.number for t in pareto_trials(study, budgets=new)}
    dropped = [t.number for t in before if t.number not in after]
    change = ", ".join(f"{m} {_bound(old.get(m))} -> {_bound(new.get(m))}" for m in sorted({*old, *new})
                       if old.get(m) != new.get(m))  # fmt: skip
    what = (
        (
            f"{len(dropped)} of its {len(before)} Pareto point(s) are over them and left the front (trial(s) "
            f"{', '.join(map(str, dropped))})"
        )
        if dropped
        else f"all {len(before)} Pareto point(s) are within them"
    )
    return f"study {study.study_name}: budgets changed ({change}); {what}"


def _bound(v: float | None) -> str:
    return "none" if v is None else f"{v:g}"


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
    """Prints one line per finished trial: ``trial N [finished/total] ...`` (the count never passes the total:
    trial numbers also count failed and surplus trials, which take no place)."""

    def __init__(self, total: int | None, worker: int, workers: int, enabled: bool,
                 stopper: _StopAtTotal | None = None) -> None:  # fmt: skip
        self.total, self.worker, self.workers, self.enabled = total, worker, workers, enabled
        self.stopper = stopper
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
        count = ""
        if self.total and "surplus" not in trial.user_attrs:
            finished = self.stopper.finished if self.stopper is not None else finished_count(study)
            count = f" [{min(finished, self.total)}/{self.total}]"
        print(f"{who}trial {trial.number}{count} {trial.state.name.lower()} {feas} values [{vals}] "
              f"({rate:.2f} trials/s)", file=sys.stderr, flush=True)  # fmt: skip


class _StopAtTotal:
    """Stops a worker once the study's trials (of every process on its storage) fill ``total`` places; keeps
    the study's finished count for :class:`_Progress` (one read of the trials per trial for both)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.finished = 0

    def __call__(self, study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        from planner.search._optuna import occupied

        trials = study.get_trials(deepcopy=False)
        self.finished = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
        if occupied(trials) >= self.total:
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

    if workers > 1:  # K processes share the cores: one thread each
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
        else:  # torch reads it when an evaluator first imports it; a cost-only search never pays for the import
            os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a surplus trial is reported by _Progress, not a warning
    space = load_space(space_path)
    sampler = make_sampler(cfg, space)
    study = optuna.load_study(study_name=cfg.name, storage=open_storage(url, cfg.heartbeat, where),
                              sampler=sampler, pruner=make_pruner(cfg))  # fmt: skip
    objective = Objective(space, cfg, total=cfg.n_trials, journal=is_journal(url))
    stopper = _StopAtTotal(cfg.n_trials) if cfg.n_trials is not None else None
    callbacks: list[Any] = [_Progress(cfg.n_trials, worker, workers, progress, stopper)]
    if stopper is not None:
        callbacks.insert(0, stopper)
    from sqlalchemy.exc import SQLAlchemyError

    _RUNNING_OWNERS.add(objective.owner)
    guard = InterruptGuard(study, (signal.SIGINT, signal.SIGTERM) if _SPAWNED else (signal.SIGINT,))
    try:
        # a full disk: say so (the next open finds any record it tore)
        with guard:
            study.optimize(objective, n_trials=share, timeout=cfg.timeout, catch=(SurplusTrial,),
                           callbacks=callbacks)  # fmt: skip
            guard.check()
    except KeyboardInterrupt:
        _fail_current(study, sampler.current)  # only if Optuna could not record it (it always can, inside a guard)
        raise
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


def _fail_current(study: Any, number: int | None) -> None:
    """Marks FAIL the trial ``number`` when it is still running (Ctrl-C outside the objective: while the
    sampler drew it, or while Optuna stored its result), so an interrupted search leaves no trial RUNNING."""
    from optuna.trial import TrialState

    if number is None:
        return
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number == number:
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


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


_SPAWNED = False  # this process is a worker spawned by run_search (its parent stops it with SIGTERM)


def _worker_process(*args: Any) -> None:
    """A spawned worker: :func:`_worker`, its planner errors printed as messages (no traceback).

    It starts with SIGINT ignored (inherited from :func:`run_search`, so a Ctrl-C while Python starts it
    cannot print a traceback; the parent's SIGTERM ends it then). From here on, Ctrl-C and SIGTERM end it with
    exit 130 and no output (the parent prints the one line): at once while no trial of it runs
    (:func:`~planner.search._interrupt.exit_interrupted`), after marking its trial FAIL while its study runs
    (:class:`~planner.search._interrupt.InterruptGuard`).
    """
    global _SPAWNED
    _SPAWNED = True
    signal.signal(signal.SIGINT, exit_interrupted)
    signal.signal(signal.SIGTERM, exit_interrupted)  # how the parent stops it
    try:
        _worker(*args)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
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
    url = _storage_url(cfg, space.source)
    where = _storage_where(cfg, opts, study_file or space.source)
    from planner.search._optuna import Objective, experimental_ok, is_journal, make_sampler

    Objective(space, cfg)  # fail on missing metrics before starting workers
    make_sampler(cfg, space)  # and on a sampler that cannot serve this space
    if opts.progress:
        print(f"study {cfg.name}: storage {_shown(url)}", file=sys.stderr)
    study = _create(cfg, url, where, space)
    changed = update_budgets(study, cfg)
    if changed and opts.progress:
        print(changed, file=sys.stderr)
    if is_journal(url):
        orphans = _fail_orphans(study)
        if orphans and opts.progress:
            print(f"study {cfg.name}: trial(s) {orphans} of a killed worker marked failed", file=sys.stderr)
    else:  # a killed worker's trial: FAIL and queued again now, so it is counted once below
        import optuna

        with experimental_ok():
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

    remaining = (
        None
        if cfg.n_trials is None
        else max(cfg.n_trials - occupied(study.get_trials(deepcopy=False), waiting=False), 1)
    )
    shares = [None] * k if remaining is None else [remaining // k + (i < remaining % k) for i in range(k)]
    try:
        if k == 1:
            _worker(space_path, cfg, url, 0, 1, opts.progress, where, shares[0])
        else:
            _run_workers(space_path, cfg, url, k, opts.progress, where, shares)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            study = _create(cfg, url, where)
            if is_journal(url):
                _fail_orphans(study)  # a worker that had to be killed: its trial fails now, not at the next run
            done = finished_count(study)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        raise SearchInterrupted(f"study {cfg.name}: interrupted; its {done} finished trial(s) are kept in {url}: "
                                "rerun the same command to resume") from None  # fmt: skip
    return _create(cfg, url, where)


STOP_GRACE_S = 10.0  # how long interrupted workers get to fail their trial and exit before they are killed


def _run_workers(space_path: str, cfg: StudyConfig, url: str, k: int, progress: bool, where: str,
                 shares: list[int | None]) -> None:  # fmt: skip
    """Runs ``k`` spawned worker processes to their end; on Ctrl-C stops them all, then raises KeyboardInterrupt."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_process, args=(space_path, cfg, url, i, k, progress, where, n))
             for i, n in enumerate(shares) if n != 0]  # fmt: skip
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited: see _worker_process
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        _join(procs)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(procs)
        raise
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise PlannerError(f"{len(bad)} worker(s) failed (exit codes {bad}); their messages are above. Rerun "
                           "the same command to resume the study")  # fmt: skip


_INTERRUPTED_EXITS = (INTERRUPTED, -signal.SIGINT, -signal.SIGTERM)  # multiprocessing: -N for "died of signal N"


def _join(procs: list[Any]) -> None:
    """Waits for every worker; raises KeyboardInterrupt as soon as one exits interrupted.

    A worker that took an interrupt means the run was interrupted: a terminal's Ctrl-C that ended it before
    this process ran its own handler (a loaded machine), or a signal sent to it alone. It exits 130, or dies of
    the signal while Python still starts it. The others are then stopped (by the caller) rather than left to
    run their share. A worker killed otherwise (SIGKILL, the out-of-memory killer) is a failed worker.
    """
    from multiprocessing.connection import wait

    running = list(procs)
    while running:
        wait([p.sentinel for p in running])
        for p in [p for p in running if not p.is_alive()]:
            p.join()
            running.remove(p)
            if p.exitcode in _INTERRUPTED_EXITS:
                raise KeyboardInterrupt


def _stop(procs: list[Any]) -> None:
    """Stops the workers still running with SIGTERM (each fails its trial and exits; one still starting
    dies at once), waits for them, and kills those that do not stop within :data:`STOP_GRACE_S`."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.0))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


def infeasibility_report(study: Any) -> str | None:
    """When no trial met the budgets, says which budget failed and the smallest value seen; else None."""
    from planner.search._pareto import current_budgets, within

    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("cost")]
    budgets = current_budgets(study)
    if not trials or any(t.user_attrs.get("feasible") and within(t, budgets) for t in trials):
        return None
    parts = []
    for metric, bound in budgets.items():
        best = min(t.user_attrs["cost"].get(metric, float("inf")) for t in trials)
        if best > bound:
            parts.append(f"{metric} <= {bound:.6g} (the smallest of {len(trials)} candidates: {best:.6g})")
    why = "; ".join(parts) or "every candidate was invalid"
    return (
        f"study {study.study_name}: no candidate met the budgets: {why}. Loosen the budgets in study.budgets "
        "or make the space smaller (fewer/narrower layers, lower bits)."
    )


def summarize(study: Any, limit: int = 10) -> str:
    """A table of the Pareto (or best) feasible trials and the trial counts."""
    from planner.search._pareto import _feasible, current_budgets, pareto_trials

    trials = study.get_trials(deepcopy=False)
    budgets = current_budgets(study)
    feasible = [t for t in trials if _feasible(t, budgets)]
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


def _default_url(name: str, space: str | None) -> str:
    from planner.search._optuna import default_storage, studies_root

    return default_storage(name, studies_root(space), create=False)


def storage_of(space_path: str, opts: SearchOptions = SearchOptions(), study_file: str | None = None) -> str:
    """The storage URL ``planner search SPACE`` with ``opts`` uses (creates nothing)."""
    space = load_space(space_path)
    cfg = resolve_study(space, opts, study_file)
    return cfg.storage or _default_url(cfg.name, space.source)


def pareto_storage_hint(name: str, url: str) -> str:
    """`` --storage URL`` when ``planner pareto --study NAME`` run from this folder would not find the study
    on ``url`` by itself (else empty)."""
    from planner.search._optuna import storage_file

    a, b = storage_file(url), storage_file(_default_url(name, None))
    if a is not None and b is not None and a.resolve() == b.resolve():
        return ""
    return f" --storage {url}"


def _studies_in(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*") if p.suffix in (".db", ".journal")) if folder.is_dir() else []


def open_existing_study(name: str, storage: str | None = None, space: str | None = None) -> Any:
    """Opens the study ``name`` for reading, creating nothing: no database, no folder, no study.

    Args:
        name: the study.
        storage: its storage URL; default ``studies/NAME.db`` of ``space``'s project (or of the current
            folder's, :func:`~planner.search._optuna.studies_root`).
        space: the space file whose default storage to read.

    Raises:
        PlannerError: no such storage file (the studies found beside it are listed), or no such study in it
            (the storage's studies are listed).
    """
    import optuna

    from planner.search._optuna import open_storage, storage_file

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or _default_url(name, space)
    where = "--storage" if storage else "--study"
    path = storage_file(url)
    if path is not None and not path.is_file():
        found = _studies_in(path.parent)
        listing = f"storages found there: {', '.join(found)}" if found else "none is there"
        hint = "" if storage or space else "; give --space SPACE or --storage URL if the study is elsewhere"
        raise PlannerError(f"{where}: no study {name!r}: {path.resolve()} does not exist ({listing}{hint}); nothing "
                           "was created")  # fmt: skip
    opened = open_storage(url, heartbeat=None, where=where)
    try:
        return optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        names = optuna.get_all_study_names(storage=opened)
        listing = f"its studies: {', '.join(sorted(names))}" if names else "it holds no study"
        raise PlannerError(f"--study: no study named {name!r} in {url} ({listing})") from None
