"""Hostile inputs around BiT-style blocks: FFN activations, activation signedness, the ``layers`` scope."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.support import refused, snapshot

BASE = """format: 1
name: bit-hostile
input: {kind: features, n_mels: 16}
width: 32
frontend: [{kind: conv2d_subsampling, channels: [8, 4]}]
layers:
  - {kind: conformer, heads: 2, ffn: 64, kernel: 3, activation: %(activation)s}
compression:
  - %(rule)s
"""
GOOD = {"activation": "relu", "rule": "{layers: layers, weight: binary, activation: binary}"}

CASES = [
    # (what to change, substrings the message must show)
    ({"activation": "tanh"}, ["layers[0].activation", "relu"]),
    ({"activation": "[relu]"}, ["layers[0].activation"]),
    (
        {"rule": "{layers: layers, activation: {bits: 1, symmetric: sometimes}}"},
        ["compression[0].activation.symmetric"],
    ),
    (
        {"rule": "{layers: layers, activation: {bits: 32, symmetric: false}}"},
        ["compression[0].activation.symmetric", "drop symmetric"],
    ),
    ({"rule": "{layers: layer, weight: binary}"}, ["compression[0].layers", "layers, post, heads"]),
    ({"rule": "{layers: layers, modules: [subsampling], weight: binary}"}, ["compression[0].modules", "selects no"]),
]


@pytest.mark.parametrize("change, names", CASES)
def test_bit_block_mistakes_are_refused_with_their_field(cli, tmp_path: Path, change: dict, names: list[str]) -> None:
    path = tmp_path / "arch.yaml"
    path.write_text(BASE % {**GOOD, **change})
    before = snapshot(tmp_path)
    for command in ("validate", "cost"):
        result = cli([command, path])
        refused(result, names=[str(path), *names])
    assert snapshot(tmp_path) == before


def test_the_good_base_is_accepted(cli, tmp_path: Path) -> None:
    path = tmp_path / "arch.yaml"
    path.write_text(BASE % GOOD)
    assert cli(["validate", path]).code == 0
