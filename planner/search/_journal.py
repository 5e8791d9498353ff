"""Journal files: find a torn record before anything appends after it, and repair one (no Optuna here).

Optuna's journal file is one JSON record per line, appended under a lock. A kill or a full disk in the middle
of an append leaves a last line without its newline (or with broken JSON); Optuna's reader skips such a
line, but the next append lands right after it, which glues the new record onto the torn one and makes every
later record unreadable. :func:`check_journal` therefore refuses a journal whose records do not all parse,
naming the repair command; :func:`repair_journal` keeps the intact records before the first bad one (and a
copy of the original file beside it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from planner.errors import StorageError
from planner.files import write_bytes_atomic

__all__ = ["JournalDamage", "find_damage", "check_journal", "repair_journal"]


@dataclass(frozen=True)
class JournalDamage:
    """The first unreadable record of a journal file.

    Attributes:
        line: its 1-based line number.
        offset: the byte offset where it starts (the intact records are the bytes before it).
        records: the intact records before it.
        after: complete records after it (lost by a repair).
        torn: True when it is the last line and lacks its newline or its end (an interrupted append).
    """

    line: int
    offset: int
    records: int
    after: int
    torn: bool


def find_damage(path: str | Path) -> JournalDamage | None:
    """The first record of ``path`` that is not a complete JSON line, or None when every record is."""
    data = Path(path).read_bytes()
    offset = 0
    lines = data.splitlines(keepends=True)
    for i, line in enumerate(lines):
        bad = not line.endswith(b"\n")
        if not bad:
            try:
                json.loads(line)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError
                bad = True
        if bad:
            return JournalDamage(line=i + 1, offset=offset, records=i, after=len(lines) - i - 1,
                                 torn=i == len(lines) - 1)  # fmt: skip
        offset += len(line)
    return None


def _repair_command(path: str | Path) -> str:
    return f"planner repair-journal {path}"


def check_journal(path: str | Path) -> None:
    """Refuses a journal with a torn or unreadable record, naming the repair command.

    Raises:
        StorageError: ``PATH: journal record N ...: repair with planner repair-journal PATH``.
    """
    damage = find_damage(path)
    if damage is None:
        return
    what = ("is torn (an append interrupted by a kill or a full disk)" if damage.torn else
            f"is not a complete JSON record ({damage.after} complete record(s) follow it)")  # fmt: skip
    raise StorageError(f"{path}: journal record {damage.line} (byte {damage.offset}) {what}; nothing was "
                       f"appended to it. The {damage.records} record(s) before it are intact: keep them with "
                       f"`{_repair_command(path)}` (a copy of the file is kept beside it), then rerun")  # fmt: skip


def repair_journal(path: str | Path) -> tuple[JournalDamage | None, Path | None]:
    """Cuts a journal back to its intact records before the first bad one; keeps the original beside it.

    The caller holds the journal's lock (no worker may append meanwhile). Both writes are atomic: a kill
    leaves the original journal, or the copy and the repaired one.

    Returns:
        ``(damage, backup)``: what was cut and where the original is kept, or ``(None, None)`` when the
        journal was intact (then nothing is written).
    """
    path = Path(path)
    damage = find_damage(path)
    if damage is None:
        return None, None
    data = path.read_bytes()
    backup = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    write_bytes_atomic(backup, data)
    write_bytes_atomic(path, data[: damage.offset])
    return damage, backup
