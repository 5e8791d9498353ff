"""Helpers of the ``planner cost``, ``show`` and ``profile`` subcommands (the CLI stays a thin wrapper)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from planner.errors import ConfigError, FieldError

__all__ = ["MAX_SECONDS", "MAX_SAMPLES", "estimate_lengths", "read_lengths", "seconds_arg"]

MAX_SECONDS = 86_400.0
"""The longest utterance ``--seconds`` prices: one day of audio (attention over it is already absurd)."""

MAX_SAMPLES = 10**10
"""The longest utterance of a ``--lengths`` file, in samples (over 7 days at 16 kHz)."""

_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes '²', which int() refuses


def seconds_arg(text: str) -> float:
    """The argparse type of ``--seconds``: a finite number of seconds in (0, :data:`MAX_SECONDS`].

    Raises:
        argparse.ArgumentTypeError: NaN, infinity, 0, a negative or an absurd length (argparse prints it
            with the option's name and exits 2).

    Example:
        >>> seconds_arg("1.5")
        1.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 < value <= MAX_SECONDS):  # NaN fails it
        raise argparse.ArgumentTypeError(f"{text} is not a length in seconds (allowed: a finite number above 0 "
                                         f"and at most {MAX_SECONDS:g}, one day)")  # fmt: skip
    return value


def read_lengths(path: str) -> list[int]:
    """Reads utterance lengths in samples, one per line (blank lines and ``#`` comments ignored).

    Raises:
        ConfigError: an unreadable or non-UTF-8 file, or a line that is not a positive integer of at most
            :data:`MAX_SAMPLES` (with its line number).
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise ConfigError([FieldError("", f"cannot read the lengths file ({err.strerror})")], path) from err
    except UnicodeDecodeError as err:
        raise ConfigError([FieldError("", f"not UTF-8 text ({err.reason} at byte {err.start})")], path) from None
    out: list[int] = []
    errors: list[FieldError] = []
    for i, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        value = int(text) if _DIGITS.fullmatch(text) and len(text) <= 12 else None
        if value is None or not 1 <= value <= MAX_SAMPLES:
            shown = text if len(text) <= 40 else text[:40] + "..."
            errors.append(FieldError(f"line {i}", f"{shown!r} is not a number of samples (allowed: an integer "
                                                  f"from 1 to {MAX_SAMPLES:,})"))  # fmt: skip
        else:
            out.append(value)
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
        index = int(err.path[len("samples[") :].split("]", 1)[0])
        raise ConfigError([FieldError(f"line {_line_of(path, index)}", err.message)], path) from None


def _line_of(path: str, index: int) -> int:
    """The 1-based line of the ``index``-th length in a lengths file (read_lengths skips blanks, comments)."""
    with open(path, encoding="utf-8") as f:  # read_lengths has read it as UTF-8 already
        lines = f.read().splitlines()
    seen = -1
    for i, line in enumerate(lines, 1):
        if line.split("#", 1)[0].strip():
            seen += 1
            if seen == index:
                return i
    return len(lines)
