"""Compression rules with non-ASCII digits and absurd N:M strings are refused with the rule's field."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.support import ARCH, refused

RULES = [
    ("{layers: '²-³', weight: int8}", "compression[0].layers"),
    ("{layers: all, sparsity: '²:⁴'}", "compression[0].sparsity"),
    ("{layers: all, sparsity: '2:4:8'}", "compression[0].sparsity"),
    ("{layers: '3-1', weight: int8}", "compression[0].layers"),
]


@pytest.mark.parametrize(("rule", "field"), RULES)
def test_bad_compression_rule(tmp_path: Path, cli, rule: str, field: str) -> None:
    path = tmp_path / "arch.yaml"
    path.write_text(ARCH + f"compression:\n  - {rule}\n", encoding="utf-8")
    refused(cli(["validate", path]), names=[str(path), field], code=2)
