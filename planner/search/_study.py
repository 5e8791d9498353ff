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
from typing import Any, ClassVar, Literal

from planner.config import dump_kind, field, from_data, parse_kind, to_data
from planner.errors import ConfigError, FieldError
from planner.search._evaluators import EVALUATORS

__all__ = ["StudyConfig", "Objective", "Budgets", "SamplerConfig", "EvaluatorConfig", "HeartbeatConfig",
           "PrunerConfig", "SAMPLERS", "PRUNERS", "study_from_dict", "parse_sampler", "parse_pruner",
           "COST_METRICS", "MAX_TRIALS", "MAX_SEED"]  # fmt: skip

COST_METRICS = ("params", "storage_bytes", "macs", "flops", "bops", "latency_s", "nvda_est_time")
MAX_TRIALS = 1_000_000  # a study of more trials is a typo (each trial is at least one storage write)
MAX_SEED = 2**32 - 1  # numpy's RandomState, which every Optuna sampler seeds, takes 0 <= seed < 2**32


@dataclass(frozen=True)
class Objective:
    """One objective: a cost metric or a quality metric of the evaluator, minimized or maximized."""

    metric: str
    direction: Literal["minimize", "maximize"] = "minimize"


@dataclass(frozen=True)
class Budgets:
    """Upper bounds; a candidate over any of them is infeasible and never materialized."""

    params: float | None = field(None, gt=0)
    storage_bytes: float | None = field(None, gt=0)
    macs: float | None = field(None, gt=0)
    flops: float | None = field(None, gt=0)
    bops: float | None = field(None, gt=0)
    latency_s: float | None = field(None, gt=0)
    nvda_est_time: float | None = field(None, gt=0)

    def items(self) -> list[tuple[str, float]]:
        return [(n, getattr(self, n)) for n in COST_METRICS if getattr(self, n) is not None]


# ----------------------------------------------------------------------------------------------- samplers
@dataclass(frozen=True)
class SamplerConfig:
    """Base of the sampler kinds; each kind below holds only its own fields (the adapter builds the sampler)."""

    kind: ClassVar[str] = ""


@dataclass(frozen=True)
class TPESamplerConfig(SamplerConfig):
    """``tpe``: Optuna's TPESampler.

    Attributes:
        multivariate: model the parameters jointly (grouped by condition when the space has conditions).
        n_startup_trials: random trials before TPE models the study.
    """

    kind: ClassVar[str] = "tpe"
    multivariate: bool = True
    n_startup_trials: int = field(10, ge=0, le=MAX_TRIALS)


@dataclass(frozen=True)
class NSGA2SamplerConfig(SamplerConfig):
    """``nsga2``: Optuna's NSGAIISampler.

    Attributes:
        population_size: candidates per generation.
    """

    kind: ClassVar[str] = "nsga2"
    population_size: int = field(20, ge=2, le=MAX_TRIALS)


@dataclass(frozen=True)
class NSGA3SamplerConfig(SamplerConfig):
    """``nsga3``: Optuna's NSGAIIISampler.

    Attributes:
        population_size: candidates per generation.
    """

    kind: ClassVar[str] = "nsga3"
    population_size: int = field(20, ge=2, le=MAX_TRIALS)


@dataclass(frozen=True)
class RandomSamplerConfig(SamplerConfig):
    """``random``: independent uniform draws (Optuna's RandomSampler)."""

    kind: ClassVar[str] = "random"


@dataclass(frozen=True)
class GridSamplerConfig(SamplerConfig):
    """``grid``: every combination once, in a seeded order (needs a space without conditions)."""

    kind: ClassVar[str] = "grid"


@dataclass(frozen=True)
class GPSamplerConfig(SamplerConfig):
    """``gp``: Optuna's Gaussian-process sampler (needs torch and scipy)."""

    kind: ClassVar[str] = "gp"


SAMPLERS: dict[str, type[SamplerConfig]] = {c.kind: c for c in (
    TPESamplerConfig, NSGA2SamplerConfig, NSGA3SamplerConfig, RandomSamplerConfig, GridSamplerConfig,
    GPSamplerConfig)}  # fmt: skip


def parse_sampler(value: Any, path: str = "sampler") -> SamplerConfig:
    """A sampler config from ``tpe`` or ``{kind: tpe, ...its own fields}``.

    Example:
        >>> parse_sampler({"kind": "nsga2", "population_size": 8})
        NSGA2SamplerConfig(population_size=8)
    """
    return parse_kind(SAMPLERS, value, path, "sampler")


def _dump_sampler(cfg: SamplerConfig) -> Any:
    return dump_kind(cfg.kind, cfg)


# ----------------------------------------------------------------------------------------------- pruners
@dataclass(frozen=True)
class PrunerConfig:
    """Base of the pruner kinds, for evaluators that report intermediate values (``distill``, ``naswot``).

    Pruning applies to single-objective studies (Optuna cannot prune multi-objective trials).
    """

    kind: ClassVar[str] = ""


@dataclass(frozen=True)
class NoPrunerConfig(PrunerConfig):
    """``none``: every trial runs to its end."""

    kind: ClassVar[str] = "none"


@dataclass(frozen=True)
class MedianPrunerConfig(PrunerConfig):
    """``median``: Optuna's MedianPruner.

    Attributes:
        n_startup_trials: trials that finish before pruning starts.
        n_warmup_steps: steps of a trial before it can be pruned.
    """

    kind: ClassVar[str] = "median"
    n_startup_trials: int = field(5, ge=0, le=MAX_TRIALS)
    n_warmup_steps: int = field(0, ge=0)


@dataclass(frozen=True)
class HyperbandPrunerConfig(PrunerConfig):
    """``hyperband``: Optuna's HyperbandPruner.

    Attributes:
        min_resource: the smallest step budget of a bracket.
        reduction_factor: the factor between brackets.
    """

    kind: ClassVar[str] = "hyperband"
    min_resource: int = field(1, ge=1)
    reduction_factor: int = field(3, ge=2)


PRUNERS: dict[str, type[PrunerConfig]] = {c.kind: c for c in (NoPrunerConfig, MedianPrunerConfig,
                                                               HyperbandPrunerConfig)}  # fmt: skip


def parse_pruner(value: Any, path: str = "pruner") -> PrunerConfig:
    """A pruner config from ``median`` or ``{kind: median, ...its own fields}``."""
    return parse_kind(PRUNERS, value, path, "pruner")


def _dump_pruner(cfg: PrunerConfig) -> Any:
    return cfg.kind if not to_data(cfg) else dump_kind(cfg.kind, cfg)


# ----------------------------------------------------------------------------------------------- heartbeat
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

    interval: int = field(5, ge=1, le=86400)
    grace: int = field(20, ge=2)
    retries: int = field(2, ge=0, le=100)

    def check(self) -> None:
        if not self.grace > self.interval:
            raise FieldError("grace", f"{self.grace} must exceed interval {self.interval} (a live trial would count "
                             "as dead)")  # fmt: skip


# ----------------------------------------------------------------------------------------------- evaluators
@dataclass(frozen=True)
class EvaluatorConfig:
    """Which registered evaluator scores feasible candidates, and its config (the evaluator's dataclass).

    Attributes:
        kind: the registered evaluator name (``planner.search.EVALUATORS``).
        config: the evaluator's frozen dataclass holding only its own fields, or None for its defaults.
    """

    kind: str = "capacity"
    config: Any = None

    def kwargs(self) -> dict[str, Any]:
        """The evaluator's keyword arguments (only those that differ from its defaults)."""
        return {} if self.config is None else to_data(self.config)


def _parse_evaluator(value: Any, path: str) -> EvaluatorConfig:
    cfg = parse_kind(dict(EVALUATORS.items()), value, path, "evaluator")
    kind = value if isinstance(value, str) else value["kind"]
    return EvaluatorConfig(kind, cfg)


def _dump_evaluator(cfg: EvaluatorConfig) -> Any:
    rest = cfg.kwargs()
    return {"kind": cfg.kind, **rest} if rest else cfg.kind


@dataclass(frozen=True)
class StudyConfig:
    """A validated study.

    Attributes:
        name: the Optuna study name (also the default storage file name under ``studies/``).
        objectives: what to minimize or maximize, in order.
        budgets: upper bounds (constraints).
        sampler: Optuna sampler: one of :data:`SAMPLERS`, with only that kind's fields.
        n_trials: finished trials the study reaches in total, shared by every process and worker on its
            storage (a re-run resumes up to this number).
        timeout: stop after this many seconds (per worker), or null.
        storage: an SQLAlchemy URL, a ``*.journal`` path, or null for ``sqlite:///studies/NAME.db``.
        seed: study seed, ``0 <= seed < 2**32``; trial ``k`` draws from a generator seeded by the seed and
            ``k``, so a resumed or shared study continues the sequence instead of replaying it.
        seconds: audio length the costs are priced for.
        bops: the cost model's BOP/FLOP convention (``bayesian_bits`` or ``jeon2023``; planner.cost.bops).
        evaluator: the registered evaluator that scores feasible candidates.
        heartbeat: heartbeat interval, grace period and retries of SQL storages.
        pruner: stops poor candidates early from the evaluator's intermediate values (:data:`PRUNERS`).
        hardware: a catalog entry of the latency roofline (``a100``; ``planner.cost.hardware``) or a YAML file
            of that layout, relative to the space file: the hardware ``latency_s`` is priced for. A
            ``latency_s`` budget or objective needs it.
    """

    name: str
    objectives: tuple[Objective, ...] = (Objective("params"),)
    budgets: Budgets = Budgets()
    sampler: SamplerConfig = field(TPESamplerConfig(), parse=parse_sampler, dump=_dump_sampler)
    n_trials: int | None = field(20, ge=1, le=MAX_TRIALS)
    timeout: float | None = field(None, gt=0)
    storage: str | None = None
    seed: int = field(0, ge=0, le=MAX_SEED)
    seconds: float = field(1.0, gt=0)
    bops: Literal["bayesian_bits", "jeon2023"] = "bayesian_bits"
    evaluator: EvaluatorConfig = field(EvaluatorConfig(), parse=_parse_evaluator, dump=_dump_evaluator)
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    pruner: PrunerConfig = field(NoPrunerConfig(), parse=parse_pruner, dump=_dump_pruner)
    hardware: str | None = None

    def check(self) -> None:
        """Every cross-field mistake at once (the field-level ones were reported by the schema)."""
        errors: list[FieldError] = []
        if not self.name.strip() or any(c in self.name for c in "/\\ "):
            errors.append(FieldError("name", f"{self.name!r} is not a study name (letters, digits, - and _)"))
        if not self.objectives:
            errors.append(FieldError("objectives", "give at least one objective"))
        quality = EVALUATORS[self.evaluator.kind].metrics
        seen = set()
        for i, obj in enumerate(self.objectives):
            if obj.metric not in COST_METRICS and obj.metric not in quality:
                errors.append(FieldError(f"objectives[{i}].metric", f"{obj.metric!r} is not a metric (allowed: "
                                         f"{', '.join(COST_METRICS + quality)}; quality metrics come from the "
                                         "evaluator)"))  # fmt: skip
            elif obj.metric in seen:
                errors.append(FieldError(f"objectives[{i}].metric", f"{obj.metric!r} appears twice"))
            seen.add(obj.metric)
        if self.n_trials is None and self.timeout is None:
            errors.append(FieldError("n_trials", "give n_trials or timeout (or both)"))
        if self.storage is not None and not self.storage.strip():
            errors.append(FieldError("storage", "is empty (leave it out for sqlite:///studies/NAME.db)"))
        if self.pruner.kind != "none" and len(self.objectives) > 1:
            errors.append(FieldError("pruner", "Optuna prunes single-objective studies only (use one objective, or "
                                               "pruner: none)"))  # fmt: skip
        errors += self._check_hardware()
        if errors:
            raise FieldError.group(errors)

    def _check_hardware(self) -> list[FieldError]:
        """A latency budget or objective without hardware, or hardware that is not in the catalog."""
        latency = [f"budgets.{m}" for m, _ in self.budgets.items() if m == "latency_s"]
        latency += [f"objectives[{i}].metric" for i, o in enumerate(self.objectives) if o.metric == "latency_s"]
        if self.hardware is None:
            return [FieldError(p, "latency_s is priced on a hardware: add study.hardware (a catalog entry such as "
                                  "a100, or a hardware YAML file)") for p in latency]  # fmt: skip
        if not self.hardware.strip():
            return [FieldError("hardware", "is empty (a catalog entry such as a100, or a hardware YAML file)")]
        try:
            from planner.cost.hardware import catalog_names
        except ImportError:  # no cost model in this checkout: Objective refuses latency_s with the reason
            return []
        text = self.hardware
        if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
            return []  # a file, read relative to the space file by resolve_hardware
        if text not in catalog_names():
            return [FieldError("hardware", f"{text!r} is not in the hardware catalog (allowed: "
                                           f"{', '.join(catalog_names())}, or a path to a hardware YAML file)")]  # fmt: skip
        return []

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]


def study_from_dict(data: Any, source: str | None = None, path: str = "study") -> StudyConfig:
    """Validates a ``study:`` mapping, reporting all of its mistakes at once.

    Raises:
        ConfigError: naming the file and the field (``FILE: study.budgets.params: ...``), one line per mistake.
    """
    if data is None:
        raise ConfigError([FieldError(path, "missing: add a study section (name, objectives, n_trials)")], source)
    try:
        return from_data(StudyConfig, data, path)
    except FieldError as err:
        raise ConfigError([err], source) from None
