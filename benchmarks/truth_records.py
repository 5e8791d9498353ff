"""``records.jsonl`` of the truth table: one JSON object per line per (candidate, seed) run, appended as runs
finish, by one or several processes.

An append takes an exclusive ``flock`` on the file, drops a torn last line (a line without its newline: a
process killed mid-write; its run is not done and is run again), skips the record if another process has
written the same run meanwhile, writes the line and ``fsync``s before unlocking. A reader needs no lock: it
ignores a last line without its newline (being written, or torn). A complete line that is not a record is an
error naming the file and the line.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from planner.errors import ConfigError, FieldError

__all__ = ["RECORD_TYPE", "append_record", "read_records", "run_key"]

RECORD_TYPE = "planner-truth-record"
RECORD_FORMAT = 1
Key = Callable[[dict[str, Any]], Hashable]


def run_key(record: dict[str, Any]) -> tuple[str, int]:
    """``(candidate id, seed)``: what identifies a run."""
    return str(record["id"]), int(record["seed"])


def _parse(data: bytes, path: Path, record_type: str = RECORD_TYPE, key: Key = run_key) -> list[dict[str, Any]]:
    """The complete lines' records (a last line without its newline is left out)."""
    records, errors = [], []
    lines = data.split(b"\n")[:-1]  # after the last newline: empty, or a torn line
    for n, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or record.get("type") != record_type:
                raise ValueError(f"not a {record_type} object")
            if record.get("format") != RECORD_FORMAT:
                raise ValueError(f"format {record.get('format')!r}; this truth.py reads {RECORD_FORMAT}")
            key(record)
        except (ValueError, KeyError, TypeError) as err:
            errors.append(FieldError(f"line {n}", f"{err}; the line is not a record: remove it (the run is redone)"))
            continue
        records.append(record)
    if errors:
        raise ConfigError(errors[:20], str(path))
    return records


def read_records(path: str | os.PathLike[str], *, record_type: str = RECORD_TYPE,
                 key: Key = run_key) -> list[dict[str, Any]]:  # fmt: skip
    """The records of ``path`` in file order (none when it does not exist); ``record_type`` and ``key`` are
    another file's (``truth_pilot.py``'s runs), the table's by default.

    Raises:
        ConfigError: ``records.jsonl: line N: ...`` for a complete line that is not a record.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return _parse(data, path, record_type, key)


def append_record(path: str | os.PathLike[str], record: dict[str, Any], *, record_type: str = RECORD_TYPE,
                  key: Key = run_key) -> bool:  # fmt: skip
    """Appends ``record`` (type and format added) as one line, durably; False if a record of the same ``key``
    (the run) is there already.

    Raises:
        ConfigError: a complete line of the file is not a record.
    """
    path = Path(path)
    line = json.dumps({"type": record_type, "format": RECORD_FORMAT, **record}, allow_nan=False).encode() + b"\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
        keep = data.rfind(b"\n") + 1
        if key(record) in {key(r) for r in _parse(data, path, record_type, key)}:
            return False
        if keep != size:  # a torn last line: dropped, so the new line starts a line of its own
            os.ftruncate(fd, keep)
        done = 0
        while done < len(line):  # one call writes it all on a local file system; a short write goes on
            done += os.pwrite(fd, line[done:], keep + done)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)  # closing releases the lock
