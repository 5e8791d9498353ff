"""Helpers shared by the hostile-input cases in ``tests/hostile/``: the checks every case makes
(:func:`refused`, :func:`snapshot`, :class:`Result`), the small files they start from (:data:`ARCH`,
:data:`SPACE`, :data:`STUDY_SPACE`) and the YAML bombs.

Modules import them as ``from hostile.support import ...`` (``tests/`` is on ``sys.path`` under both ``pytest``
and ``python -m pytest``); the fixtures (``cli``, ``hang_guard``) are in ``conftest.py`` beside this file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

GUARD_S = 10  # far above the milliseconds a refusal takes: only a hang (an expanded alias bomb) reaches it


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
    return "Traceback (most recent call last)" in text or '\n  File "' in text


def refused(result: Result, *, names: Iterable[str] = (), code: int | None = None) -> None:
    """Asserts that a run was refused cleanly: non-zero exit, no traceback, every ``names`` substring shown."""
    text = result.out + result.err
    assert result.code != 0, f"accepted (exit 0):\n{text}"
    if code is not None:
        assert result.code == code, f"exit {result.code}, expected {code}:\n{text}"
    assert not _looks_like_traceback(text), f"traceback printed:\n{text}"
    for name in names:
        assert name in text, f"{name!r} not named in:\n{text}"


ARCH = """\
format: 1
name: tiny
input: {kind: waveform, sample_rate: 16000}
width: 32
frontend:
  - kind: conv_extractor
    conv_layers: [[16, 10, 5], [32, 4, 4]]
    projection: true
  - kind: layer_norm
layers:
  - {kind: transformer, repeat: 2, heads: 2, ffn: 64}
"""

SPACE = """\
format: 1
name: tiny-space
input: {kind: waveform, sample_rate: 16000}
width: {choice: [32, 64], name: width}
frontend:
  - kind: conv_extractor
    conv_layers: [[16, 10, 5], [32, 4, 4]]
    projection: true
  - kind: layer_norm
layers:
  - {kind: transformer, repeat: {range: [1, 2]}, heads: 2, ffn: {choice: [64, 128]}}
"""

# a capacity-evaluated space whose study section the study and search cases spoil, one mistake each
STUDY_SPACE = """
format: 1
name: tiny
width: {choice: [64, 96], name: width}
frontend:
  - kind: conv_extractor
    conv_layers: [[32, 10, 5], "2 x [32, 3, 2]"]
    projection: true
  - kind: layer_norm
layers:
  - kind: transformer
    repeat: {range: [1, 2]}
    heads: 2
    ffn: 128
study:
  name: tiny
  objectives: [{metric: params}]
  sampler: {kind: random}
  n_trials: 2
  seed: 0
  evaluator: capacity
"""


def bomb(levels: int = 12, fan: int = 9) -> str:
    """A YAML alias bomb: ``fan ** levels`` values from a file of under 1 kB (as the issue describes)."""
    lines = ["b0: &b0 [" + ", ".join(["x"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def nested(levels: int, leaf: str = "1") -> str:
    """A flow mapping nested ``levels`` deep: ``{a: {a: ... leaf}}``."""
    return "{a: " * levels + leaf + "}" * levels
