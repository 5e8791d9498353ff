"""A hang guard for the hostile cases that must be refused quickly, and the small files they start from."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

GUARD_S = 10  # far above the milliseconds a refusal takes: only a hang (an expanded alias bomb) reaches it

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


@pytest.fixture(autouse=True)
def hang_guard() -> Iterator[None]:
    """Fails a case that runs past :data:`GUARD_S` seconds (SIGALRM; a no-op where there is none)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {GUARD_S} s: the refusal did not come quickly")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(GUARD_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def bomb(levels: int = 12, fan: int = 9) -> str:
    """A YAML alias bomb: ``fan ** levels`` values from a file of under 1 kB (as the issue describes)."""
    lines = ["b0: &b0 [" + ", ".join(["x"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


def nested(levels: int, leaf: str = "1") -> str:
    """A flow mapping nested ``levels`` deep: ``{a: {a: ... leaf}}``."""
    return "{a: " * levels + leaf + "}" * levels
