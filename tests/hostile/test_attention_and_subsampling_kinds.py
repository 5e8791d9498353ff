"""Hostile architecture files for the strided-only attention kind, the padded depthwise separable subsampling and
the time reduction: each is refused with the file and the field named, and left unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.support import refused, snapshot

ARCH = """format: 1
name: hostile
input: {{kind: features, n_mels: {mels}}}
width: 16
frontend:
  - {{kind: dwsep_subsampling, channels: 4}}
layers:
  - {layer}
"""
STRIDED = "{{kind: transformer, heads: 2, ffn: 32, attention: {{kind: sparse_strided_only{stride}}}}}"

CASES = [
    # (case id, n_mels, layer entry, the field the message must name, a word of the reason)
    ("stride-1", 16, STRIDED.format(stride=", stride: 1"), "layers[0].attention.stride", "at least 2"),
    ("stride-nan", 16, STRIDED.format(stride=", stride: .nan"), "layers[0].attention.stride", "integer"),
    ("stride-bool", 16, STRIDED.format(stride=", stride: true"), "layers[0].attention.stride", "integer"),
    ("stride-string", 16, STRIDED.format(stride=", stride: '3'"), "layers[0].attention.stride", "integer"),
    ("stride-missing", 16, STRIDED.format(stride=""), "layers[0].attention.stride", "missing"),
    ("too-few-mels", 3, STRIDED.format(stride=", stride: 2"), "frontend[0]", "3 mels"),
    ("reduction-kernel-0", 16, "{kind: time_reduction, kernel: 0}", "layers[0].kernel", "positive"),
]


@pytest.mark.parametrize(("case", "mels", "layer", "field", "reason"), CASES, ids=[c[0] for c in CASES])
def test_refused(cli, tmp_path: Path, case: str, mels: int, layer: str, field: str, reason: str) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_text(ARCH.format(mels=mels, layer=layer))
    before = snapshot(tmp_path)
    refused(cli(["cost", path]), names=[path.name, field, reason], code=2)
    assert snapshot(tmp_path) == before
