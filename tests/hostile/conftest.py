"""The hostile-input corpus: shared checks for every case in ``tests/hostile/``.

Each case runs one ``planner`` command on a bad input and asserts, through :func:`refused`:

* the exit code is non-zero (and the one the case expects),
* nothing on stdout or stderr looks like a Python traceback,
* the message names the file and the field (substrings the case gives),
* files that existed before (studies, run folders, exports) are unchanged byte for byte (:func:`snapshot`).

Cases live in ``test_<area>.py`` files beside this one (architectures, spaces, studies, recipes, tasks,
manifests, run folders, exports, CLI arguments); ``test_corpus_size.py`` counts them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from planner.cli import main


@dataclass(frozen=True)
class Result:
    """What one CLI run printed and returned."""

    code: int
    out: str
    err: str


def snapshot(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (a missing root snapshots as empty)."""
    digests: dict[str, str] = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for p in files:
            digests[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return digests


def _looks_like_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text or "\n  File \"" in text


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Runs ``planner ARGV`` in this process and returns a :class:`Result`."""

    def run(argv: Sequence[str]) -> Result:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors exit 2 through SystemExit
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(int(code), out, err)

    return run


def refused(result: Result, *, names: Iterable[str] = (), code: int | None = None) -> None:
    """Asserts that a run was refused cleanly: non-zero exit, no traceback, every ``names`` substring shown."""
    text = result.out + result.err
    assert result.code != 0, f"accepted (exit 0):\n{text}"
    if code is not None:
        assert result.code == code, f"exit {result.code}, expected {code}:\n{text}"
    assert not _looks_like_traceback(text), f"traceback printed:\n{text}"
    for name in names:
        assert name in text, f"{name!r} not named in:\n{text}"
