"""The README's architecture example is the real file it names, and its compression section is valid."""

from __future__ import annotations

import re
from pathlib import Path

from planner.ir import load, loads
from planner.ir.io import dumps

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


def test_the_architecture_example_is_the_file_it_names() -> None:
    example = BLOCKS[0]
    named = re.match(r"# (\S+\.yaml)", example)
    assert named, "the README's first YAML block starts with '# FILE.yaml' naming the file it shows"
    path = ROOT / "studies" / named.group(1).removeprefix("studies/")
    assert dumps(loads(example)) == dumps(load(path))


def test_the_compression_example_applies_to_that_file() -> None:
    compressed = loads(BLOCKS[0] + BLOCKS[1])
    assert compressed.spec.compression, "the second YAML block is a compression section"
    assert dumps(compressed) != dumps(loads(BLOCKS[0]))
