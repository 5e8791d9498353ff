"""One exception tree for the whole planner: every exception class of ``planner`` and ``trainers`` is here.

Every user-facing mistake raises a subclass of :class:`PlannerError`. Errors about a file carry a
location (``FILE: field.path``) so that the CLI can print ``FILE: field.path: what is wrong (what is
allowed)`` and exit non-zero without a traceback. The modules that raise them re-export them under their
old names (``planner.compress.CompressionError``, ``trainers.distributed.PeerError``, ...).

::

    PlannerError
    ├── FieldError                 one problem at a field path (before the file is known)
    │   └── YamlRefusal            the YAML reader refuses a document while composing it (at ``line N``)
    ├── ConfigError                FILE: field.path: problem, one line each
    │   └── GraphError             the file parses, the graph cannot work
    ├── WeightMappingError, CompressionError, DataError, WriteError, StorageError, CheckpointError
    ├── LaunchError, PeerError, RunConflictError           the trainer's job and run folder
    ├── NonFiniteError             NaN / infinite loss or gradient norm
    │   └── DivergedError          ... named with the step, the loss and the recipe field
    ├── SearchInterrupted          Ctrl-C stopped a search (exit 130; a rerun resumes)
    ├── DemoError                  the demo corpus cannot be built (``planner data demo``)
    ├── SupernetError              a candidate outside a supernet, a supernet folder that does not fit
    └── Pruned, SurplusTrial       the search's signals to Optuna (not mistakes)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "PlannerError",
    "ConfigError",
    "GraphError",
    "FieldError",
    "WeightMappingError",
    "WriteError",
    "StorageError",
    "YamlRefusal",
    "CompressionError",
    "DataError",
    "LaunchError",
    "PeerError",
    "RunConflictError",
    "Pruned",
    "SurplusTrial",
    "SearchInterrupted",
    "CheckpointError",
    "NonFiniteError",
    "DivergedError",
    "DemoError",
    "SupernetError",
]


class PlannerError(Exception):
    """Base class of every error the planner raises on purpose."""

    exit_code = 1


class FieldError(PlannerError):
    """A single problem at one field path, before the file name is known.

    Args:
        path: dotted path of the field inside the document, e.g. ``layers[3].heads``.
        message: what is wrong, and what is allowed.
    """

    exit_code = 2

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        self.errors: list[FieldError] = [self]
        super().__init__(f"{path}: {message}" if path else message)

    @classmethod
    def group(cls, errors: Iterable[FieldError]) -> FieldError:
        """One error that carries several (each kept in ``errors``), so that a document reports all at once."""
        flat = [e for err in errors for e in err.errors]
        if len(flat) == 1:
            return flat[0]
        first = flat[0]
        grouped = cls(first.path, first.message)
        grouped.errors = flat
        grouped.args = ("\n".join(str(e) for e in flat),)
        return grouped

    def prefixed(self, path: str) -> FieldError:
        """The same error(s) with ``path`` joined in front of every field path."""
        if not path:
            return self

        def one(e: FieldError) -> FieldError:
            if not e.path:
                return FieldError(path, e.message)
            sep = "" if e.path.startswith("[") else "."
            return FieldError(f"{path}{sep}{e.path}", e.message)

        return FieldError.group(one(e) for e in self.errors)

    def __str__(self) -> str:
        return "\n".join(f"{e.path}: {e.message}" if e.path else e.message for e in self.errors)


class ConfigError(PlannerError):
    """A document (architecture, search space, study) is malformed.

    Holds one or more :class:`FieldError` s and the file they come from; ``str()`` gives one line per
    problem, each ``FILE: field.path: message``.
    """

    exit_code = 2

    def __init__(self, errors: Iterable[FieldError], source: str | None = None) -> None:
        self.errors = [e for err in errors for e in getattr(err, "errors", [err])]
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(f"{prefix}{e}" for e in self.errors)

    def with_source(self, source: str) -> ConfigError:
        """Returns the same errors attributed to ``source`` (a file name)."""
        return ConfigError(self.errors, source)


class GraphError(ConfigError):
    """The document parses, but the encoder graph it describes cannot work (shapes, references)."""


class WeightMappingError(PlannerError):
    """Pretrained weights do not fit a materialized model (missing, unexpected or mis-shaped keys)."""


class WriteError(PlannerError):
    """A file or folder could not be written (a full disk, no permission, a file where a folder must be)."""


class StorageError(PlannerError):
    """A study storage cannot be used: a malformed or unreachable URL, a missing driver, a torn journal."""

    exit_code = 2


class YamlRefusal(FieldError):
    """A refusal the YAML reader finds while composing (a self-containing alias, too deep, too many values),
    located at ``line N``; :mod:`planner._yaml` turns it into a :class:`ConfigError` naming the file.

    Args:
        mark: the YAML mark of the refused node (``mark.line`` is 0-based), or None.
        message: what is refused, and the fix.
    """

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(f"line {mark.line + 1}" if mark is not None else "", message)


class CompressionError(PlannerError):
    """A compression plan cannot be applied to (or exported from) a model."""


class DataError(PlannerError):
    """A manifest, labels file or audio file cannot be used."""


class LaunchError(PlannerError):
    """The launcher's environment does not describe a usable job (names the variable and the fix)."""

    exit_code = 2


class PeerError(PlannerError):
    """Another process of the job stopped with a :class:`PlannerError`; this one stops with the same message
    and exit code. The CLI prints it only in the process that hit it."""


class RunConflictError(PlannerError):
    """The output folder holds a different run, or another process is training into it."""

    exit_code = 3


class Pruned(PlannerError):
    """Raised by an evaluator when ``ctx.should_prune()`` says the candidate is not worth finishing."""


class SurplusTrial(PlannerError):
    """A trial that started after the study had its ``n_trials`` (two workers asked at once); it is marked
    FAIL with a ``surplus`` attribute before any candidate is drawn, and its worker stops. Not a mistake: the
    objective raises it for Optuna to catch."""


class SearchInterrupted(PlannerError):
    """Ctrl-C (SIGINT) stopped the search; the finished trials are kept and a rerun resumes."""

    exit_code = 130


class CheckpointError(PlannerError):
    """A checkpoint or state file cannot be read as plain data (damaged, truncated, or holding code)."""

    exit_code = 4


class NonFiniteError(PlannerError):
    """Training produced a NaN or infinite loss or gradient norm (the caller adds the step and the recipe)."""

    exit_code = 5


class DivergedError(NonFiniteError):
    """The loss or the gradients became NaN or infinite (names the step, the loss and the recipe field)."""


class SupernetError(PlannerError):
    """A candidate the supernet does not hold (a different space), or a supernet folder that cannot be used."""

    exit_code = 3


class DemoError(PlannerError):
    """The demo corpus cannot be built (a tool is missing, a bad option)."""
