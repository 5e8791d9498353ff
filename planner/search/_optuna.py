"""The one thin adapter that knows Optuna: domains -> ``trial.suggest_*``, samplers, storages, trials.

Each trial: suggest the active domains -> :meth:`SearchSpace.freeze` -> :func:`planner.from_dict` ->
price the graph. An invalid or over-budget candidate completes as *infeasible* (its constraint values,
``<= 0`` when satisfied, are set with ``trial.set_constraint``, which Optuna 5's constrained samplers (TPE,
NSGA-II/III, GP) and ``plot_pareto_front`` read, and copied to ``trial.user_attrs["constraints"]``) and is
never materialized; a feasible one goes to the evaluator.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from optuna.samplers import BaseSampler

from planner.errors import ConfigError, FieldError, Pruned, StorageError, SurplusTrial
from planner.ir.io import from_dict
from planner.ir.spec import dump_spec
from planner.search._cost import available_metrics, load_study_hardware, price
from planner.search._domains import Categorical, FloatRange, IntRange
from planner.search._evaluators import evaluator_of
from planner.search._interrupt import evaluating, storage_write
from planner.search._journal import check_journal, find_damage
from planner.search._space import SearchSpace
from planner.search._study import COST_METRICS, HeartbeatConfig, StudyConfig

__all__ = [
    "suggest",
    "make_sampler",
    "make_pruner",
    "open_storage",
    "default_storage",
    "Objective",
    "constraints_of",
    "architecture_text",
    "architecture_yaml",
    "architecture_key",
    "trial_seed",
    "occupied",
    "SurplusTrial",
    "SAMPLER_BUILDERS",
    "PRUNER_BUILDERS",
    "is_journal",
    "journal_path",
    "journal_lock",
    "studies_root",
    "storage_file",
    "experimental_ok",
]


@contextlib.contextmanager
def experimental_ok() -> Iterator[None]:
    """Hides Optuna's ExperimentalWarning (and only it) for the experimental APIs the planner uses on purpose:
    TPE's ``group``, NSGA-III, GP's ``deterministic_objective``, heartbeats, ``fail_stale_trials``."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


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


def distribution_of(domain: Any) -> Any:
    """The Optuna distribution :func:`suggest` asks for a domain with."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(domain, Categorical):
        return CategoricalDistribution(list(domain.choices))
    if isinstance(domain, IntRange):
        return IntDistribution(domain.low, domain.high, step=domain.step, log=domain.log)
    return FloatDistribution(domain.low, domain.high, step=domain.step, log=domain.log)


def changed_distributions(study: Any, space: SearchSpace) -> list[tuple[str, str, str]]:
    """The domains of ``space`` whose distribution differs from one its study's trials used, in a way Optuna
    refuses (``(label, was, now)``; a categorical's other choices): for studies that kept no record of
    their space."""
    from optuna.distributions import check_distribution_compatibility

    now = {d.label: distribution_of(d) for d in space.domains()}
    changed: dict[str, tuple[str, str, str]] = {}
    for t in study.get_trials(deepcopy=False):
        for label, dist in t.distributions.items():
            if label in now and label not in changed:
                try:
                    check_distribution_compatibility(dist, now[label])
                except ValueError:
                    changed[label] = (label, _describe(dist), _describe(now[label]))
    return list(changed.values())


def _describe(dist: Any) -> str:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return "one of " + ", ".join(repr(c) for c in dist.choices)
    return f"a range [{dist.low}, {dist.high}]"


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


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` of a study seeded ``seed``: a 32-bit hash of both.

    Every worker and every resume of one study draws trial ``k`` from its own generator, so a resumed
    study continues the sequence instead of replaying it, and two processes (which get distinct trial
    numbers from the storage) never draw the same sequence.
    """
    digest = hashlib.sha256(f"planner-trial:{seed}:{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _tpe(s: Any, space: SearchSpace, seed: int) -> Any:
    import optuna

    conditional = any(d.when for d in space.domains())
    with experimental_ok():  # `group` is experimental
        return optuna.samplers.TPESampler(seed=seed, multivariate=s.multivariate, group=s.multivariate and conditional,
                                          n_startup_trials=s.n_startup_trials)  # fmt: skip


def _nsga2(s: Any, space: SearchSpace, seed: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=s.population_size)


def _nsga3(s: Any, space: SearchSpace, seed: int) -> Any:
    import optuna

    with experimental_ok():
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=s.population_size)


def _random(s: Any, space: SearchSpace, seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _gp(s: Any, space: SearchSpace, seed: int) -> Any:
    import optuna

    try:
        with experimental_ok():  # `deterministic_objective` is experimental
            return optuna.samplers.GPSampler(seed=seed, deterministic_objective=True)
    except ImportError as err:
        raise ConfigError(
            [FieldError("study.sampler.kind", f"gp needs torch and scipy ({err})")], space.source
        ) from None


def _grid(s: Any, space: SearchSpace, seed: int) -> Any:
    import optuna

    if any(d.when for d in space.domains()) or any(
        isinstance(d, FloatRange) and d.step is None for d in space.domains()
    ):
        raise ConfigError([FieldError("study.sampler.kind", "grid needs a space without conditions and with a step "
                                      "on every float range (use tpe or random)")], space.source)  # fmt: skip
    return optuna.samplers.GridSampler({d.label: d.grid() for d in space.domains()}, seed=seed)


# one builder per sampler kind of planner.search._study.SAMPLERS (a test asserts the key sets are equal)
SAMPLER_BUILDERS: dict[str, Callable[[Any, SearchSpace, int], Any]] = {
    "tpe": _tpe, "nsga2": _nsga2, "nsga3": _nsga3, "random": _random, "grid": _grid, "gp": _gp}  # fmt: skip


def _make_pruner_none(p: Any) -> Any:
    import optuna

    return optuna.pruners.NopPruner()


def _make_pruner_median(p: Any) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)


def _make_pruner_hyperband(p: Any) -> Any:
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)


# one builder per pruner kind of planner.search._study.PRUNERS (a test asserts the key sets are equal)
PRUNER_BUILDERS: dict[str, Callable[[Any], Any]] = {
    "none": _make_pruner_none, "median": _make_pruner_median, "hyperband": _make_pruner_hyperband}  # fmt: skip


def make_pruner(cfg: StudyConfig) -> Any:
    """The Optuna pruner of ``cfg.pruner``."""
    return PRUNER_BUILDERS[cfg.pruner.kind](cfg.pruner)


def make_sampler(cfg: StudyConfig, space: SearchSpace, worker: int = 0) -> Any:
    """The Optuna sampler of ``cfg``, seeded per trial from the study seed and the trial number.

    Args:
        cfg: the study.
        space: the search space (conditions decide TPE's grouping; grid needs its domains).
        worker: unused; kept for callers of earlier versions (workers no longer need their own seed: each
            trial number belongs to one worker, and each trial number has its own seed).

    Raises:
        ConfigError: a sampler that cannot serve this space (grid with conditions, gp without torch).
    """
    build = SAMPLER_BUILDERS[cfg.sampler.kind]
    build(cfg.sampler, space, cfg.seed)  # refuses what cannot work, before any trial
    return _PerTrialSeeded(lambda seed: build(cfg.sampler, space, seed), cfg.seed)


class _PerTrialSeeded(BaseSampler):
    """Delegates to a sampler rebuilt for each trial with :func:`trial_seed` (study seed, trial number).

    Optuna's samplers keep their state in the study (TPE's and GP's models are fitted on its trials,
    NSGA-II/III's generations are in its system attributes), so a fresh sampler per trial loses nothing but
    the random generator, which is exactly what must not repeat across resumes and processes.
    """

    def __init__(self, build: Callable[[int], Any], seed: int) -> None:
        self._build = build
        self._seed = seed
        self._inner = build(seed)
        self.current: int | None = None  # the trial this sampler serves now (to fail it on Ctrl-C)

    def __str__(self) -> str:
        return f"{type(self._inner).__name__} seeded per trial from {self._seed}"

    def before_trial(self, study: Any, trial: Any) -> None:
        self.current = trial.number
        self._inner = self._build(trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


PROJECT_MARKERS = (".git", "pyproject.toml")  # what makes a folder the root of a project of spaces


def studies_root(source: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the default study storages of a space file (or, without one, of the current folder).

    It is ``studies/`` in the nearest folder above the space file that holds ``.git`` or ``pyproject.toml``
    (a project), else beside the space file: the same folder whichever folder ``planner`` runs from, so a
    rerun from elsewhere finds the study instead of starting a new one. Without a space file (``planner
    pareto``) the search starts at the current folder.
    """
    start = Path(source).resolve().parent if source is not None else Path.cwd().resolve()
    for folder in (start, *start.parents):
        if any((folder / m).exists() for m in PROJECT_MARKERS):
            return folder / "studies"
    return start / "studies"


def default_storage(study_name: str, root: str | os.PathLike[str] = "studies", create: bool = True) -> str:
    """The embedded default: an SQLite file ``ROOT/NAME.db`` (needs nothing started; see docs/search.md).

    Args:
        study_name: the study.
        root: the folder (:func:`studies_root` finds a space's); an absolute one gives an absolute URL.
        create: make the folder (a search); False leaves the file system as it is (``planner pareto``).
    """
    if create:
        Path(root).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(root) / study_name}.db"


def storage_file(url: str) -> Path | None:
    """The local file of a SQLite or journal storage URL (None for a server or an in-memory database)."""
    if is_journal(url):
        return Path(journal_path(url))
    if url.startswith("sqlite:///"):
        name = url.removeprefix("sqlite:///").split("?", 1)[0]
        return Path(name) if name and name != ":memory:" else None
    return None


_DEFAULT_HEARTBEAT = HeartbeatConfig()

# the Python module each SQLAlchemy driver imports, and the package that installs it
_DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pymysql": "PyMySQL",
                    "MySQLdb": "mysqlclient", "asyncpg": "asyncpg", "pg8000": "pg8000", "cx_Oracle": "cx_Oracle",
                    "oracledb": "oracledb", "pyodbc": "pyodbc", "mysql": "mysql-connector-python"}  # fmt: skip
_URL_FORMS = (
    "sqlite:///PATH.db, postgresql+psycopg2://USER@HOST/DB, mysql+pymysql://USER@HOST/DB, or a PATH.journal file"
)


def _redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (error messages must not print secrets)."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def is_journal(url: str) -> bool:
    """Whether ``url`` names a journal file (``*.journal`` or ``journal:PATH``) rather than an SQL database."""
    return url.startswith("journal:") or url.endswith(".journal")


def journal_path(url: str) -> str:
    """The file of a journal storage URL."""
    return url.removeprefix("journal:")


def journal_lock(path: str) -> Any:
    """The lock Optuna's :class:`JournalFileBackend` appends under (so holding it means no append is half done)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    return JournalFileSymlinkLock(path)


def _open_journal(url: str, where: str) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import get_lock_file

    path = journal_path(url)
    if not path.strip():
        raise StorageError(f"{where}: {url!r} names no journal file (give PATH.journal)")
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if Path(path).exists() and find_damage(path) is not None:
            # a last line without its newline may be an append in progress: look again holding the lock
            # the writers hold while they append
            with get_lock_file(journal_lock(path)):
                check_journal(path)
        return JournalStorage(JournalFileBackend(path, lock_obj=journal_lock(path)))
    except OSError as err:
        raise StorageError(f"{where}: cannot open the journal file {path} ({os.strerror(err.errno or 0) or err}); "
                           "give a writable PATH.journal") from None  # fmt: skip


def _check_sql_url(url: str, where: str) -> Any:
    """The parsed SQLAlchemy URL, its dialect known and its driver importable; else a :class:`StorageError`."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = _redacted(url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise StorageError(f"{where}: {shown!r} is not a storage URL ({str(err).splitlines()[0]}); give "
                           f"{_URL_FORMS}") from None  # fmt: skip
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        backend = parsed.get_backend_name()
        what = (f"no driver {parsed.drivername.partition('+')[2]!r} for {backend}" if "+" in parsed.drivername
                else f"no database kind {backend!r}")  # fmt: skip
        raise StorageError(f"{where}: {shown!r}: SQLAlchemy knows {what}; give {_URL_FORMS}") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        module = (err.name or parsed.get_driver_name() or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module)
        other = f"name an installed driver: {parsed.get_backend_name()}+DRIVER://..."
        if parsed.get_backend_name() == "postgresql" and module != "psycopg2" and _importable("psycopg2"):
            other = "psycopg2 is installed here: write postgresql+psycopg2://..."
        raise StorageError(f"{where}: {shown!r} needs the Python driver {module!r}, which is not installed: "
                           f"pip install {package} (or {other})") from None  # fmt: skip
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(f"{where}: {shown!r}: cannot create the folder of {parsed.database} "
                               f"({os.strerror(err.errno or 0)})") from None  # fmt: skip
    return parsed


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def open_storage(url: str, heartbeat: HeartbeatConfig | None = _DEFAULT_HEARTBEAT, where: str = "--storage") -> Any:
    """An Optuna storage for ``url``: ``*.journal`` / ``journal:PATH`` (journal file) or an SQLAlchemy URL.

    SQL storages get heartbeats (unless ``heartbeat`` is None) and
    :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, so the trial of a worker killed with SIGKILL
    is marked FAIL once its heartbeat is ``grace`` seconds old, and queued to run again. A journal with a
    torn record is refused with its repair command (never appended to).

    Args:
        url: the storage URL.
        heartbeat: heartbeat settings of SQL storages, or None for none (read-only use).
        where: where the URL came from, for error messages (``--storage`` or ``FILE: study.storage``).

    Raises:
        StorageError: a malformed URL, an unknown database kind, a driver that is not installed, a database
            that cannot be reached or opened, a torn journal.
    """
    if is_journal(url):
        return _open_journal(url, where)
    parsed = _check_sql_url(url, where)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    elif parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg2":
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 20}}  # an unreachable host: refuse, not hang
    with experimental_ok():  # heartbeats are marked experimental in Optuna
        if heartbeat is not None:
            from optuna.storages import RetryHeartbeatStaleTrialCallback

            kwargs.update(heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.retries))  # fmt: skip
        return _rdb(url, kwargs, where)


def _rdb(url: str, kwargs: dict[str, Any], where: str) -> Any:
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    try:
        for attempt in range(5):
            try:
                return RDBStorage(url, **kwargs)
            except SQLAlchemyError as err:
                # two processes creating a new database at once: one's CREATE TABLE (or its schema
                # version row) loses the race; the tables exist a moment later
                racing = isinstance(err, IntegrityError) or "already exists" in str(err)
                if not racing or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(f"{where}: cannot open the storage {_redacted(url)!r} ({reason}); check that the "
                           "database is reachable, exists and accepts these credentials") from None  # fmt: skip
    except RuntimeError as err:  # Optuna: the database was written by an incompatible Optuna version
        raise StorageError(f"{where}: {_redacted(url)!r}: {str(err).splitlines()[0]} (optuna storage upgrade "
                           f"--storage URL upgrades it)") from None  # fmt: skip


def architecture_text(graph: Any) -> str:
    """The frozen architecture of a trial as stored in ``user_attrs["architecture"]``: compact JSON of the
    architecture document (a tenth of the time of YAML, which a search paid per trial);
    :func:`architecture_yaml` turns it into the architecture file."""
    import json

    return json.dumps(dump_spec(graph.spec), separators=(",", ":"))


def architecture_yaml(stored: str) -> str:
    """The architecture file (exactly :func:`planner.dumps`) of a stored ``user_attrs["architecture"]``: the
    JSON :func:`architecture_text` writes, or the YAML that earlier planners stored (returned as it is)."""
    import json

    import yaml

    if not stored.startswith("{"):
        return stored  # YAML text of an older study
    return yaml.safe_dump(json.loads(stored), sort_keys=False, default_flow_style=None, width=110)


_RUNNING_OWNERS: set[str] = set()  # owners of the objectives running in this process now


def new_owner() -> str:
    """A fresh owner tag ``host:pid:nonce`` for the trials of one worker run (see :func:`owner_alive`)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def architecture_key(text: str) -> str:
    """The canonical key of a candidate: SHA-256 of its stored architecture text (:func:`architecture_text`)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def owner_alive(owner: str | None) -> bool:
    """Whether the worker run ``host:pid:nonce`` that runs a trial may still be alive.

    A process of another host counts as alive (it cannot be asked); one of this host is alive while its pid
    exists, and a run of this very process while it is running.
    """
    if not owner or owner.count(":") < 2:
        return True
    rest, _, _nonce = owner.rpartition(":")
    host, _, pid = rest.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return owner in _RUNNING_OWNERS
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def occupied(trials: list[Any], below: int | None = None, waiting: bool = True) -> int:
    """How many of ``trials`` (numbered below ``below``) take a place of the study's ``n_trials``.

    Finished (complete, pruned), waiting (queued retries) and running trials count, except a running trial
    of a journal study whose owner process is gone (journal files have no heartbeats; SQL storages mark a
    dead worker's trial FAIL by its heartbeat before each new trial). Failed trials give their place back.
    ``waiting=False`` leaves out the waiting ones (places taken, but still to be run by some worker).
    """
    from optuna.trial import TrialState

    n = 0
    for t in trials:
        if below is not None and t.number >= below:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (waiting and t.state == TrialState.WAITING):
            n += 1
        elif t.state == TrialState.RUNNING and owner_alive(t.user_attrs.get("owner")):
            n += 1
    return n


class Objective:
    """The Optuna objective of one study: freeze, validate, price, check budgets, evaluate.

    A candidate whose architecture an earlier complete (or pruned) trial of the study already evaluated is
    answered from that trial (``repeat_of``: its number), never evaluated again: every trial records its
    architecture's canonical key (``arch_key``, :func:`architecture_key`).

    Args:
        space: the search space.
        cfg: the study config.
        total: the study's ``n_trials``, shared by every worker: a trial numbered past it is surplus
            (:class:`SurplusTrial`); None for no limit (a timeout-only study).
        journal: the study is a journal file (trials record their ``owner`` process, see :func:`occupied`).
    """

    def __init__(self, space: SearchSpace, cfg: StudyConfig, total: int | None = None, journal: bool = False) -> None:
        self.space = space
        self.cfg = cfg
        self.total = total
        self.journal = journal
        self.evaluator = evaluator_of(cfg.evaluator)
        self.owner = new_owner()  # tags this run's trials of a journal study (journal files have no heartbeats)
        self.evaluations = 0  # evaluator calls of this process (repeats answered from the study do not count)
        have = available_metrics()
        missing = [(f"study.budgets.{m}", m) for m, _ in cfg.budgets.items() if m not in have]
        missing += [(f"study.objectives[{i}].metric", o.metric) for i, o in enumerate(cfg.objectives)
                    if o.metric in COST_METRICS and o.metric not in have]  # fmt: skip
        if missing:
            raise ConfigError([FieldError(p, f"{m} needs planner.cost, which this checkout lacks (available: "
                                             f"{', '.join(have)})") for p, m in missing], space.source)  # fmt: skip
        self.hardware = load_study_hardware(cfg.hardware, space.source)  # latency_s is priced on it

    def _worst(self) -> list[float]:
        return [math.inf if o.direction == "minimize" else -math.inf for o in self.cfg.objectives]

    def _claim(self, trial: Any) -> None:
        """Raises :class:`SurplusTrial` when the study had its ``n_trials`` before this trial was created."""
        if self.journal:
            trial.set_user_attr("owner", self.owner)
        if self.total is None or trial.number < self.total:
            return  # fewer than `total` trials exist below this one: it cannot be surplus
        if occupied(trial.study.get_trials(deepcopy=False), below=trial.number) >= self.total:
            trial.set_user_attr("surplus", f"the study had its {self.total} trials when this one was created; "
                                           "nothing was drawn or evaluated")  # fmt: skip
            trial.study.stop()
            raise SurplusTrial(f"trial {trial.number}: the study already has its {self.total} trials")

    def _earlier(self, trial: Any, key: str) -> Any:
        """The first complete or pruned trial of the study that evaluated the architecture ``key``, or None."""
        from optuna.trial import TrialState

        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if t.number != trial.number and t.user_attrs.get("arch_key") == key and t.user_attrs.get("feasible"):
                if t.state == TrialState.PRUNED or "quality" in t.user_attrs:
                    return t
        return None

    def __call__(self, trial: Any) -> list[float] | float:
        import optuna

        self._claim(trial)
        values = suggest(trial, self.space)
        keys = ["invalid", *(f"budget.{m}" for m, _ in self.cfg.budgets.items())]
        try:
            graph = from_dict(self.space.freeze(values), f"{self.space.source} (trial {trial.number})")
        except ConfigError as err:
            _record(trial, {"feasible": False, "invalid": str(err)}, (keys, [1.0] * len(keys)))
            return self._ret(self._worst())
        cost = price(graph, self.cfg.seconds, self.cfg.bops, self.hardware)
        constraints = [0.0]
        over = []
        for metric, bound in self.cfg.budgets.items():
            v = cost.get(metric)
            c = 1.0 if v is None else v / bound - 1.0
            constraints.append(c)
            if c > 0:
                over.append(f"{metric} {v} > {bound:g}")
        objective = [cost.get(o.metric) for o in self.cfg.objectives]
        text = architecture_text(graph)
        key = architecture_key(text)
        attrs: dict[str, Any] = {"architecture": text, "arch_key": key, "cost": cost}
        if over:
            _record(trial, {**attrs, "feasible": False, "over_budget": ", ".join(over)}, (keys, constraints))
            worst = self._worst()
            return self._ret([worst[i] if v is None else float(v) for i, v in enumerate(objective)])
        earlier = self._earlier(trial, key)
        if earlier is not None:  # the same architecture was evaluated: answer from that trial
            repeat = {**attrs, "feasible": True, "repeat_of": earlier.number}
            if earlier.state == optuna.trial.TrialState.PRUNED:
                _record(trial, repeat, (keys, constraints))
                raise optuna.TrialPruned(f"the same architecture as trial {earlier.number}, which was pruned")
            _record(trial, {**repeat, "quality": earlier.user_attrs["quality"]}, (keys, constraints))
            return self._ret(list(earlier.values))
        # written before the evaluation, so a worker killed while training leaves its cost behind
        _record(trial, {**attrs, "feasible": True}, (keys, constraints))
        ctx = _TrialContext(trial, len(self.cfg.objectives) > 1)
        t0 = time.perf_counter()
        self.evaluations += 1
        try:
            with evaluating():  # where a Ctrl-C raises at once (see planner.search._interrupt)
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
        with storage_write():
            if self.multi:
                self.reports.append([step, value])
                self.trial.set_user_attr("intermediate", self.reports)
            else:
                self.trial.report(value, step)

    def should_prune(self) -> bool:
        with storage_write():
            return False if self.multi else self.trial.should_prune()
