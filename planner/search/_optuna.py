"""The one thin adapter that knows Optuna: domains -> ``trial.suggest_*``, samplers, storages, trials.

Each trial: suggest the active domains -> :meth:`SearchSpace.freeze` -> :func:`planner.from_dict` ->
price the graph. An invalid or over-budget candidate completes as *infeasible* (its constraint values,
``<= 0`` when satisfied, are set with ``trial.set_constraint``, which Optuna 5's constrained samplers (TPE,
NSGA-II/III, GP) and ``plot_pareto_front`` read, and copied to ``trial.user_attrs["constraints"]``) and is
never materialized; a feasible one goes to the evaluator.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from planner.errors import ConfigError, FieldError
from planner.search._domains import Categorical, FloatRange, IntRange
from planner.search._space import SearchSpace
from planner.search._study import COST_METRICS, HeartbeatConfig, StudyConfig

__all__ = ["suggest", "make_sampler", "open_storage", "default_storage", "Objective", "constraints_of",
           "architecture_text", "architecture_yaml"]


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Asks ``trial`` for a value of every active domain of ``space``: ``{label: value}``."""
    values: dict[str, Any] = {}
    for d in space.domains():
        if not space.is_active(d, values):
            continue
        if isinstance(d, Categorical):
            values[d.label] = trial.suggest_categorical(d.label, list(d.choices))
        elif isinstance(d, IntRange):
            values[d.label] = trial.suggest_int(d.label, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, FloatRange):
            values[d.label] = trial.suggest_float(d.label, d.low, d.high, step=d.step, log=d.log)
    return values


def constraints_of(trial: Any) -> list[float]:
    """The constraint values of a finished trial (``<= 0`` is satisfied), as :class:`Objective` stored them."""
    return list(trial.user_attrs.get("constraints", [1.0]))


def _set_constraints(trial: Any, keys: list[str], values: list[float]) -> None:
    """Stores one value per constraint, always the same keys in the same order (the GP sampler needs that).

    Optuna 5 deprecates samplers' ``constraints_func`` for ``trial.set_constraint``; the samplers read the
    values from the trial itself, so no sampler needs a callback.
    """
    for key, value in zip(keys, values):
        trial.set_constraint(key, value)
    trial.set_user_attr("constraints", values)


def _record(trial: Any, attrs: dict[str, Any], constraints: tuple[list[str], list[float]] | None = None) -> None:
    """Sets the user attributes ``attrs`` (and the constraints ``(keys, values)``) of a running trial at once.

    On an SQL storage every ``set_user_attr`` / ``set_constraint`` is its own transaction (a commit, on SQLite
    a file sync), which made these writes most of the planner's time per trial; here they are one
    transaction with the same rows. Other storages (journal files) take the public calls one by one.
    """
    batch = _rdb_batch(trial)
    if batch is None:
        if constraints is not None:
            _set_constraints(trial, *constraints)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    backend, models, session_scope, constraints_key = batch
    system: dict[str, float] = {}
    user = dict(attrs)
    if constraints is not None:
        keys, values = constraints
        for key, value in zip(keys, values):
            value = float(value)
            if math.isnan(value):
                raise ValueError(f"Attempted to set a constraint for {key!r}, but NaN is not allowed.")
            system[f"{constraints_key}:{key}"] = value  # as trial.set_constraint names it
        user = {"constraints": values, **attrs}
    tid = trial._trial_id
    with session_scope(backend.scoped_session, True) as session:
        for key, value in system.items():
            backend._set_trial_attr_without_commit(session, models.TrialSystemAttributeModel, tid, key, value)
        for key, value in user.items():
            backend._set_trial_attr_without_commit(session, models.TrialUserAttributeModel, tid, key, value)
    cached = trial._cached_frozen_trial  # what trial.user_attrs / set_user_attr keep in step with the storage
    cached.system_attrs.update(system)
    cached.user_attrs.update(user)


def _rdb_batch(trial: Any) -> tuple[Any, Any, Any, str] | None:
    """What :func:`_record` needs to write in one transaction, or None (not an SQL storage, or an Optuna
    whose internals differ from 4.x/5.x: then the public calls are used)."""
    try:
        from optuna.storages import RDBStorage
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
    except ImportError:
        return None
    storage = getattr(trial, "storage", None)
    backend = getattr(storage, "_backend", storage)
    if (not isinstance(backend, RDBStorage) or not hasattr(backend, "_set_trial_attr_without_commit")
            or not hasattr(trial, "_cached_frozen_trial") or not hasattr(trial, "_trial_id")):  # fmt: skip
        return None
    return backend, models, _create_scoped_session, _CONSTRAINTS_KEY


def make_sampler(cfg: StudyConfig, space: SearchSpace, worker: int = 0) -> Any:
    """The Optuna sampler of ``cfg`` (worker ``k`` is seeded ``seed + k`` so workers do not repeat each other)."""
    import optuna

    s = cfg.sampler
    seed = cfg.seed + worker
    if s.kind == "tpe":
        conditional = any(d.when for d in space.domains())
        return optuna.samplers.TPESampler(seed=seed, multivariate=s.multivariate, group=s.multivariate and conditional,
                                          n_startup_trials=s.n_startup_trials)  # fmt: skip
    if s.kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=s.population_size)
    if s.kind == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=s.population_size)
    if s.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.kind == "gp":
        try:
            return optuna.samplers.GPSampler(seed=seed, deterministic_objective=True)
        except ImportError as err:
            raise ConfigError([FieldError("study.sampler.kind", f"gp needs torch and scipy ({err})")], space.source) from None
    # grid
    if any(d.when for d in space.domains()) or any(isinstance(d, FloatRange) and d.step is None for d in space.domains()):
        raise ConfigError([FieldError("study.sampler.kind", "grid needs a space without conditions and with a step "
                                      "on every float range (use tpe or random)")], space.source)  # fmt: skip
    return optuna.samplers.GridSampler({d.label: d.grid() for d in space.domains()}, seed=seed)


def default_storage(study_name: str, root: str | os.PathLike[str] = "studies") -> str:
    """The embedded default: an SQLite file ``studies/NAME.db`` (needs nothing started; see docs/search.md)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(root) / study_name}.db"


_DEFAULT_HEARTBEAT = HeartbeatConfig()


def open_storage(url: str, heartbeat: HeartbeatConfig | None = _DEFAULT_HEARTBEAT) -> Any:
    """An Optuna storage for ``url``: ``*.journal`` / ``journal:PATH`` (journal file) or an SQLAlchemy URL.

    SQL storages get heartbeats (unless ``heartbeat`` is None) and
    :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, so the trial of a worker killed with SIGKILL
    is marked FAIL once its heartbeat is ``grace`` seconds old, and queued to run again.
    """
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url.startswith("journal:") or url.endswith(".journal"):
        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat is not None:
        import warnings

        with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
            warnings.simplefilter("ignore")
            from optuna.storages import RetryHeartbeatStaleTrialCallback

            kwargs.update(heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.retries))  # fmt: skip
            return RDBStorage(url, **kwargs)
    return RDBStorage(url, **kwargs)


def architecture_text(graph: Any) -> str:
    """The frozen architecture of a trial as stored in ``user_attrs["architecture"]``: compact JSON of the
    architecture document (a tenth of the time of YAML, which a search paid per trial);
    :func:`architecture_yaml` turns it into the architecture file."""
    import json

    from planner.ir.spec import dump_spec

    return json.dumps(dump_spec(graph.spec), separators=(",", ":"))


def architecture_yaml(stored: str) -> str:
    """The architecture file (exactly :func:`planner.dumps`) of a stored ``user_attrs["architecture"]``: the
    JSON :func:`architecture_text` writes, or the YAML that earlier planners stored (returned as it is)."""
    import json

    import yaml

    if not stored.startswith("{"):
        return stored  # YAML text of an older study
    return yaml.safe_dump(json.loads(stored), sort_keys=False, default_flow_style=None, width=110)


class Objective:
    """The Optuna objective of one study: freeze, validate, price, check budgets, evaluate.

    Args:
        space: the search space.
        cfg: the study config.
    """

    def __init__(self, space: SearchSpace, cfg: StudyConfig) -> None:
        from planner.search._cost import available_metrics
        from planner.search._evaluators import build_evaluator

        self.space = space
        self.cfg = cfg
        self.evaluator = build_evaluator(cfg.evaluator.kind, cfg.evaluator.kwargs())
        have = available_metrics()
        missing = [(f"study.budgets.{m}", m) for m, _ in cfg.budgets.items() if m not in have]
        missing += [(f"study.objectives[{i}].metric", o.metric) for i, o in enumerate(cfg.objectives)
                    if o.metric in COST_METRICS and o.metric not in have]  # fmt: skip
        if missing:
            raise ConfigError([FieldError(p, f"{m} needs planner.cost, which this checkout lacks (available: "
                                             f"{', '.join(have)})") for p, m in missing], space.source)  # fmt: skip

    def _worst(self) -> list[float]:
        return [math.inf if o.direction == "minimize" else -math.inf for o in self.cfg.objectives]

    def __call__(self, trial: Any) -> list[float] | float:
        import optuna

        from planner.ir.io import from_dict
        from planner.search._cost import price
        from planner.search._evaluators import Pruned

        values = suggest(trial, self.space)
        keys = ["invalid", *(f"budget.{m}" for m, _ in self.cfg.budgets.items())]
        try:
            graph = from_dict(self.space.freeze(values), f"{self.space.source} (trial {trial.number})")
        except ConfigError as err:
            _record(trial, {"feasible": False, "invalid": str(err)}, (keys, [1.0] * len(keys)))
            return self._ret(self._worst())
        cost = price(graph, self.cfg.seconds, self.cfg.bops)
        constraints = [0.0]
        over = []
        for metric, bound in self.cfg.budgets.items():
            v = cost.get(metric)
            c = 1.0 if v is None else v / bound - 1.0
            constraints.append(c)
            if c > 0:
                over.append(f"{metric} {v} > {bound:g}")
        objective = [cost.get(o.metric) for o in self.cfg.objectives]
        attrs: dict[str, Any] = {"architecture": architecture_text(graph), "cost": cost}
        if over:
            _record(trial, {**attrs, "feasible": False, "over_budget": ", ".join(over)}, (keys, constraints))
            worst = self._worst()
            return self._ret([worst[i] if v is None else float(v) for i, v in enumerate(objective)])
        # written before the evaluation, so a worker killed while training leaves its cost behind
        _record(trial, {**attrs, "feasible": True}, (keys, constraints))
        ctx = _TrialContext(trial, len(self.cfg.objectives) > 1)
        t0 = time.perf_counter()
        try:
            quality = self.evaluator.evaluate(graph, ctx)
        except Pruned:
            raise optuna.TrialPruned() from None
        _record(trial, {"eval_s": round(time.perf_counter() - t0, 4), "quality": quality})
        both = {**cost, **quality}
        return self._ret([float(both[o.metric]) for o in self.cfg.objectives])

    def _ret(self, vals: list[float]) -> list[float] | float:
        return vals if len(vals) > 1 else vals[0]


class _TrialContext:
    """Maps an evaluator's reports onto ``trial.report`` (single objective) or user attrs (multi-objective,
    where Optuna has no pruning)."""

    def __init__(self, trial: Any, multi: bool) -> None:
        self.trial = trial
        self.multi = multi
        self.reports: list[list[float]] = []

    def report(self, value: float, step: int) -> None:
        if self.multi:
            self.reports.append([step, value])
            self.trial.set_user_attr("intermediate", self.reports)
        else:
            self.trial.report(value, step)

    def should_prune(self) -> bool:
        return False if self.multi else self.trial.should_prune()
