"""Absurd and non-finite values in search-space files: range bounds and steps, options, scales, grids.

Each CLI case is refused with exit 2, no traceback, the file and the field named, and at once: a range up to
10**29 is neither listed nor sampled.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.support import SPACE, refused
from planner.errors import FieldError
from planner.search._domains import MAX_GRID, FloatRange, IntRange
from planner.search._space import loads_space

pytestmark = pytest.mark.usefixtures("hang_guard")  # each case must be refused within GUARD_S seconds

WIDTH = "width: {choice: [32, 64], name: width}"
REPEAT = "repeat: {range: [1, 2]}"
FFN = "ffn: {choice: [64, 128]}"


def _space(tmp_path: Path, old: str, new: str) -> Path:
    assert old in SPACE
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace(old, new), encoding="utf-8")
    return path


CASES = [
    ("range to 1e29", WIDTH, "width: {range: [1, 100000000000000000000000000000]}", "width.range", "at most 2**53"),
    ("repeat to 1e8", REPEAT, "repeat: {range: [1, 100000000]}", "layers[0].repeat", "ceiling of 1024"),
    ("width past its ceiling", WIDTH, "width: {range: [32, 1048576], step: 32}", "width", "ceiling of 16384"),
    ("nan low", FFN, "ffn: 64, dropout: {range: [.nan, 0.5]}", "layers[0].dropout.range", "finite number"),
    ("inf high", FFN, "ffn: 64, dropout: {range: [0.0, .inf]}", "layers[0].dropout.range", "finite number"),
    ("nan step", FFN, "ffn: 64, dropout: {range: [0.0, 0.5], step: .nan}", "layers[0].dropout.step", "positive step"),
    ("zero step", FFN, "ffn: 64, dropout: {range: [0.0, 0.5], step: 0.0}", "layers[0].dropout.step", "positive step"),
    (
        "tiny step",
        FFN,
        "ffn: 64, dropout: {range: [0.0, 0.5], step: 1.0e-300}",
        "layers[0].dropout.step",
        "more than 2**53 points",
    ),
    ("nan option", FFN, "ffn: 64, dropout: {choice: [.nan, 0.1]}", "layers[0].dropout.choice", "NaN and infinity"),
    ("nan scale", FFN, "ffn: {ref: width, scale: .nan}", "layers[0].ffn.scale", "not a scale"),
    ("zero scale", FFN, "ffn: {ref: width, scale: 0}", "layers[0].ffn.scale", "not a scale"),
    ("negative scale", FFN, "ffn: {ref: width, scale: -2}", "layers[0].ffn.scale", "not a scale"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_absurd_domains_are_refused_at_load(tmp_path, cli, case) -> None:
    _, old, new, field, message = case
    path = _space(tmp_path, old, new)
    for argv in (["validate", path], ["sample", path, "-n", "2"]):
        refused(cli(argv), names=[f"{path}: {field}", message], code=2)


def test_a_huge_range_is_counted_without_being_listed() -> None:
    # 5 * 10**14 + 1 points: validation probes the ends only, and counting is arithmetic
    space = loads_space(SPACE.replace(FFN, "ffn: 64, dropout: {range: [0.0, 0.5], step: 1.0e-15}"), "big.yaml")
    assert space.cardinality() == 2 * 2 * (5 * 10**14 + 1)  # width x repeat x dropout


@pytest.mark.parametrize("domain", [IntRange("w", 1, 10**12, "width"), FloatRange("d", 0.0, 1.0, "drop", step=1e-9)])
def test_a_grid_too_large_to_enumerate_is_a_field_error(domain) -> None:
    with pytest.raises(FieldError, match=rf"^{domain.path}: a grid of [0-9,]+ points is more than the {MAX_GRID:,}"):
        domain.grid()
