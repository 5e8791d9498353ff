"""Helpers of the ``planner cost`` and ``planner profile`` subcommands (the CLI stays a thin wrapper)."""

from __future__ import annotations

from typing import Any

from planner.errors import ConfigError, FieldError

__all__ = ["estimate_lengths", "read_lengths"]


def read_lengths(path: str) -> list[int]:
    """Reads utterance lengths in samples, one per line (blank lines and ``#`` comments ignored).

    Raises:
        ConfigError: an unreadable file or a line that is not a positive integer (with its line number).
    """
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise ConfigError([FieldError("", f"cannot read the lengths file ({err.strerror})")], path) from err
    out: list[int] = []
    errors: list[FieldError] = []
    for i, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            errors.append(FieldError(f"line {i}", f"{text!r} is not a positive number of samples"))
        else:
            out.append(int(text))
    if not out and not errors:
        errors.append(FieldError("", "no utterance lengths (one length in samples per line)"))
    if errors:
        raise ConfigError(errors, path)
    return out


def estimate_lengths(graph: Any, path: str | None, **kwargs: Any) -> Any:
    """:func:`planner.estimate` for ``planner cost``: an utterance the model cannot run is reported at its
    line of the lengths file ``path`` (``utts.txt: line 3: an utterance of 399 samples ...``).

    Raises:
        ConfigError: located in ``path`` for a refused utterance; other errors as :func:`planner.estimate`.
    """
    from planner.cost.estimate import estimate

    try:
        return estimate(graph, **kwargs)
    except FieldError as err:
        if path is None or not err.path.startswith("samples["):
            raise
        index = int(err.path[len("samples["):].split("]", 1)[0])
        raise ConfigError([FieldError(f"line {_line_of(path, index)}", err.message)], path) from None


def _line_of(path: str, index: int) -> int:
    """The 1-based line of the ``index``-th length in a lengths file (read_lengths skips blanks, comments)."""
    with open(path) as f:
        lines = f.read().splitlines()
    seen = -1
    for i, line in enumerate(lines, 1):
        if line.split("#", 1)[0].strip():
            seen += 1
            if seen == index:
                return i
    return len(lines)
