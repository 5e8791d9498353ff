"""Helpers of the ``planner cost`` and ``planner profile`` subcommands (the CLI stays a thin wrapper)."""

from __future__ import annotations

from planner.errors import ConfigError, FieldError

__all__ = ["read_lengths"]


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
