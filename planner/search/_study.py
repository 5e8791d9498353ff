"""The ``study:`` section: objectives, budgets, sampler, trial count, storage, evaluator.

Example (inside a space file, or as a separate file with the same keys at the top level)::

    study:
      name: quickstart
      objectives:
        - {metric: params, direction: minimize}
        - {metric: naswot, direction: maximize}
      budgets: {params: 3000000}
      sampler: {kind: tpe, multivariate: true}
      n_trials: 40
      seed: 0
      evaluator: {kind: naswot, batch: 4, seconds: 0.5}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from planner.errors import ConfigError, FieldError
from planner.ir._schema import field, from_data, join

__all__ = ["StudyConfig", "Objective", "Budgets", "SamplerConfig", "EvaluatorConfig", "HeartbeatConfig",
           "PrunerConfig", "study_from_dict", "COST_METRICS"]  # fmt: skip

COST_METRICS = ("params", "storage_bytes", "macs", "flops", "bops", "latency_s", "nvda_est_time")
SamplerKind = Literal["tpe", "nsga2", "nsga3", "random", "grid", "gp"]


@dataclass(frozen=True)
class Objective:
    """One objective: a cost metric or a quality metric of the evaluator, minimized or maximized."""

    metric: str
    direction: Literal["minimize", "maximize"] = "minimize"


@dataclass(frozen=True)
class Budgets:
    """Upper bounds; a candidate over any of them is infeasible and never materialized."""

    params: float | None = None
    storage_bytes: float | None = None
    macs: float | None = None
    flops: float | None = None
    bops: float | None = None
    latency_s: float | None = None
    nvda_est_time: float | None = None

    def check(self) -> None:
        for name in COST_METRICS:
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise FieldError(name, f"{v} must be positive (or leave the budget out)")

    def items(self) -> list[tuple[str, float]]:
        return [(n, getattr(self, n)) for n in COST_METRICS if getattr(self, n) is not None]


@dataclass(frozen=True)
class SamplerConfig:
    """Optuna sampler. ``multivariate`` and ``n_startup_trials`` apply to tpe; ``population_size`` to nsga2/3."""

    kind: SamplerKind = "tpe"
    multivariate: bool = True
    n_startup_trials: int = 10
    population_size: int = 20

    def check(self) -> None:
        if self.n_startup_trials < 0:
            raise FieldError("n_startup_trials", f"{self.n_startup_trials} must be >= 0")
        if self.population_size < 2:
            raise FieldError("population_size", f"{self.population_size} must be >= 2")


@dataclass(frozen=True)
class HeartbeatConfig:
    """Heartbeats of SQL storages (SQLite, PostgreSQL...): how a killed worker's trial is found and retried.

    A running trial whose last heartbeat is older than ``grace`` seconds is marked FAIL (by the next trial
    of any worker, or by a re-run) and queued again, at most ``retries`` times. Journal files have no
    heartbeats.

    Attributes:
        interval: seconds between heartbeats of a running trial.
        grace: seconds without a heartbeat after which a running trial counts as dead.
        retries: how often one trial is queued again after it died.
    """

    interval: int = 5
    grace: int = 20
    retries: int = 2

    def check(self) -> None:
        if self.interval < 1:
            raise FieldError("interval", f"{self.interval} must be at least 1 (seconds)")
        if self.grace <= self.interval:
            raise FieldError("grace", f"{self.grace} must exceed interval {self.interval} (a live trial would count "
                             "as dead)")  # fmt: skip
        if self.retries < 0:
            raise FieldError("retries", f"{self.retries} must be >= 0")


@dataclass(frozen=True)
class PrunerConfig:
    """Optuna pruner for evaluators that report intermediate values (``distill``, ``naswot``).

    Pruning applies to single-objective studies (Optuna cannot prune multi-objective trials).

    Attributes:
        kind: ``none``, ``median`` (MedianPruner) or ``hyperband`` (HyperbandPruner).
        n_startup_trials: median: trials that finish before pruning starts.
        n_warmup_steps: median: steps of a trial before it can be pruned.
        min_resource: hyperband: the smallest step budget of a bracket.
        reduction_factor: hyperband: the factor between brackets.
    """

    kind: Literal["none", "median", "hyperband"] = "none"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    min_resource: int = 1
    reduction_factor: int = 3

    def check(self) -> None:
        for name in ("n_startup_trials", "n_warmup_steps"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"{getattr(self, name)} must be >= 0")
        if self.min_resource < 1:
            raise FieldError("min_resource", f"{self.min_resource} must be >= 1")
        if self.reduction_factor < 2:
            raise FieldError("reduction_factor", f"{self.reduction_factor} must be >= 2")

    def build(self) -> Any:
        import optuna

        if self.kind == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=self.n_startup_trials, n_warmup_steps=self.n_warmup_steps)
        if self.kind == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=self.min_resource, reduction_factor=self.reduction_factor)
        return optuna.pruners.NopPruner()


def _parse_pruner(value: Any, path: str) -> PrunerConfig:
    if isinstance(value, str):
        value = {"kind": value}
    return from_data(PrunerConfig, value, path)


def _parse_sampler(value: Any, path: str) -> SamplerConfig:
    if isinstance(value, str):
        value = {"kind": value}
    return from_data(SamplerConfig, value, path)


@dataclass(frozen=True)
class EvaluatorConfig:
    """Which registered evaluator scores feasible candidates, and its keyword arguments."""

    kind: str = "capacity"
    options: tuple[tuple[str, Any], ...] = ()

    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


def _parse_evaluator(value: Any, path: str) -> EvaluatorConfig:
    from planner.search._evaluators import EVALUATORS

    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict):
        raise FieldError(path, f"expected an evaluator name or a mapping with kind, got {value!r}")
    kind = value.get("kind", "capacity")
    if kind not in EVALUATORS:
        raise FieldError(join(path, "kind"), f"unknown evaluator {kind!r} (allowed: {EVALUATORS.allowed()})")
    cls = EVALUATORS[kind]
    rest = {k: v for k, v in value.items() if k != "kind"}
    cfg = from_data(cls, rest, path)  # validates the evaluator's own keyword arguments
    from dataclasses import asdict

    return EvaluatorConfig(kind, tuple(asdict(cfg).items()))


def _dump_evaluator(cfg: EvaluatorConfig) -> Any:
    return {"kind": cfg.kind, **cfg.kwargs()}


@dataclass(frozen=True)
class StudyConfig:
    """A validated study.

    Attributes:
        name: the Optuna study name (also the default storage file name under ``studies/``).
        objectives: what to minimize or maximize, in order.
        budgets: upper bounds (constraints).
        sampler: Optuna sampler.
        n_trials: trials to reach in total (a re-run resumes up to this number).
        timeout: stop after this many seconds (per worker), or null.
        storage: an SQLAlchemy URL, a ``*.journal`` path, or null for ``sqlite:///studies/NAME.db``.
        seed: sampler seed; same seed and same storage kind give the same trials.
        seconds: audio length the costs are priced for.
        bops: the cost model's BOP/FLOP convention (``bayesian_bits`` or ``jeon2023``; planner.cost.bops).
        evaluator: the registered evaluator that scores feasible candidates.
        heartbeat: heartbeat interval, grace period and retries of SQL storages.
        pruner: stops poor candidates early from the evaluator's intermediate values.
    """

    name: str
    objectives: tuple[Objective, ...] = (Objective("params"),)
    budgets: Budgets = Budgets()
    sampler: SamplerConfig = field(SamplerConfig(), parse=_parse_sampler)
    n_trials: int | None = 20
    timeout: float | None = None
    storage: str | None = None
    seed: int = 0
    seconds: float = 1.0
    bops: Literal["bayesian_bits", "jeon2023"] = "bayesian_bits"
    evaluator: EvaluatorConfig = field(EvaluatorConfig(), parse=_parse_evaluator, dump=_dump_evaluator)
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    pruner: PrunerConfig = field(PrunerConfig(), parse=_parse_pruner)

    def check(self) -> None:
        if not self.name.strip() or any(c in self.name for c in "/\\ "):
            raise FieldError("name", f"{self.name!r} is not a study name (letters, digits, - and _)")
        if not self.objectives:
            raise FieldError("objectives", "give at least one objective")
        from planner.search._evaluators import EVALUATORS

        quality = EVALUATORS[self.evaluator.kind].metrics
        seen = set()
        for i, obj in enumerate(self.objectives):
            if obj.metric not in COST_METRICS and obj.metric not in quality:
                raise FieldError(f"objectives[{i}].metric", f"{obj.metric!r} is not a metric (allowed: "
                                 f"{', '.join(COST_METRICS + quality)}; quality metrics come from the evaluator)")  # fmt: skip
            if obj.metric in seen:
                raise FieldError(f"objectives[{i}].metric", f"{obj.metric!r} appears twice")
            seen.add(obj.metric)
        if self.n_trials is None and self.timeout is None:
            raise FieldError("n_trials", "give n_trials or timeout (or both)")
        if self.n_trials is not None and self.n_trials < 1:
            raise FieldError("n_trials", f"{self.n_trials} must be positive")
        if self.timeout is not None and self.timeout <= 0:
            raise FieldError("timeout", f"{self.timeout} must be positive")
        if self.seconds <= 0:
            raise FieldError("seconds", f"{self.seconds} must be positive")
        if self.pruner.kind != "none" and len(self.objectives) > 1:
            raise FieldError("pruner", "Optuna prunes single-objective studies only (use one objective, or pruner: none)")
        if self.sampler.kind == "grid" and self.timeout is None and self.n_trials is None:
            raise FieldError("sampler", "grid needs n_trials")

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]


def study_from_dict(data: Any, source: str | None = None, path: str = "study") -> StudyConfig:
    """Validates a ``study:`` mapping.

    Raises:
        ConfigError: naming the file and the field (``FILE: study.budgets.params: ...``).
    """
    if data is None:
        raise ConfigError([FieldError(path, "missing: add a study section (name, objectives, n_trials)")], source)
    try:
        return from_data(StudyConfig, data, path)
    except FieldError as err:
        raise ConfigError([err], source) from None
