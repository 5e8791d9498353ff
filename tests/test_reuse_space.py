"""searchspaces/reuse.yaml against Recycle-and-Distill Table 2: the "-up" patterns reinvest the Q/K parameters
their extra reusing layers save in the FFN, so that every reinvesting pattern has the parameter count of 2by6."""

from __future__ import annotations

import pytest

import planner
from planner.cost import estimate
from planner.search import load_space
from support import ROOT

SPACE = ROOT / "searchspaces" / "reuse.yaml"
PATTERNS = ("2by6", "3by4", "4by3", "6by2")


def _candidate(width: int, pattern: str) -> planner.EncoderGraph:
    return planner.from_dict(load_space(SPACE).freeze({"width": width, "pattern": pattern}))


def _reusers(graph) -> int:
    return sum(1 for n in graph.nodes("layers") if not n.config.attention.computes_map)


@pytest.mark.parametrize("width", [384, 432, 480])
def test_reinvesting_patterns_match_2by6(width):
    """Priced at one width, each pattern's candidate has 2by6's parameters to FFN rounding: each of the 12 FFN
    widths is rounded to an integer (at most half a unit, each unit 2 d + 1 parameters), so the totals differ by
    less than 12 x (2 d + 1) / 2 plus the 4-decimal scales' error (under 0.03 units per layer)."""
    base = _candidate(width, "2by6")
    ref = estimate(base, layers=False).params
    assert _reusers(base) == 6
    tolerance = 12 * (2 * width + 1) * 0.53
    ffns = []
    for pattern, reusers in zip(PATTERNS, (6, 8, 9, 10)):
        graph = _candidate(width, pattern)
        assert _reusers(graph) == reusers  # AbyB: B layers compute a map, 12 - B reuse one
        ffns.append(next(iter(graph.nodes("layers"))).config.ffn)
        assert abs(estimate(graph, layers=False).params - ref) < tolerance, pattern
    assert ffns == sorted(ffns) and len(set(ffns)) == 4  # more reusers, wider FFN (it was backwards)


def test_width_432_is_table_2():
    """At ARMHuBERT-S's width: 2by6 has its FFN 816, no reuse adds back six layers' Q/K (Table 2: 24.64M - 22.39M
    = 2.25M), and the -up patterns sit within 0.01M of 2by6 (Table 2 lists 22.39M for all three)."""
    base = _candidate(432, "2by6")
    assert next(iter(base.nodes("layers"))).config.ffn == 816
    none = _candidate(432, "none")
    assert none.param_count - base.param_count == 6 * 2 * (432 * 432 + 432)
    # each table entry is rounded to 0.01M, so their difference is known to +-0.01M
    assert abs((none.param_count - base.param_count) / 1e6 - (24.64 - 22.39)) <= 0.01
    for pattern in ("3by4", "6by2"):
        assert abs(_candidate(432, pattern).param_count - base.param_count) < 0.005e6
