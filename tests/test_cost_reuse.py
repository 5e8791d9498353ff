"""A layer that reuses a sparse map costs its source's attended pairs, not ``T^2`` (issue 12).

The reuse layer's ``AV`` product applies the source's probabilities, which are exactly zero outside the
source's pattern: exact mode prices the source's pairs (checked against the closed form, the numpy grid of
``allowed``, and the nonzero entries of the map the materialized layer applies); dense mode and DeepSpeed
count the executed ``T x T`` product, and the difference is exactly the masked pairs. Integer counts, so
every comparison is exact.
"""

from __future__ import annotations

import pytest
import torch

from planner.cost import attended_pairs, estimate
from planner.cost.attention import attended_pairs_grid
from planner.ir import from_dict
from planner.ir.attention import FixedAttention, LocalAttention, StridedAttention

D, HEADS = 16, 4
SOURCES = {0: LocalAttention(window=5), 2: StridedAttention(stride=4), 5: FixedAttention(block=8, summary=2)}
# layer -> the layer whose map it applies in the end (4 reuses 3, itself a reuse of 2)
REUSE = {1: 0, 3: 2, 4: 2, 6: 5}


def _layer(attention: dict) -> dict:
    return {"kind": "transformer", "heads": HEADS, "ffn": 32, "attention": attention}


def _graph(first: dict | None = None):
    """Seven layers at one frame per input sample (1-sample framing, 1x1 subsampling)."""
    att = {0: first or {"kind": "local", "window": 5}, 1: {"kind": "reuse", "source": 0},
           2: {"kind": "sparse_strided", "stride": 4}, 3: {"kind": "reuse", "source": 2},
           4: {"kind": "reuse", "source": 3}, 5: {"kind": "sparse_fixed", "block": 8, "summary": 2},
           6: {"kind": "reuse", "source": 5}}  # fmt: skip
    return from_dict({
        "name": "reuse-sparse", "input": {"kind": "features", "n_mels": 8, "win_length": 1, "hop_length": 1},
        "width": D, "frontend": [{"kind": "conv2d_subsampling", "channels": [2], "kernel": 1, "stride": 1}],
        "layers": [_layer(att[i]) for i in range(7)],
    })  # fmt: skip


def _context_macs(cost) -> dict[int, int]:
    return {int(lc.parent.split(".")[1]): lc.macs for lc in cost.layers if lc.kind == "attention_context"}


@pytest.mark.parametrize("t", [1, 7, 64, 1001])
def test_reuse_prices_the_source_pairs(t):
    graph = _graph()
    exact = _context_macs(estimate(graph, samples=t))
    dense = _context_macs(estimate(graph, samples=t, attention="dense"))
    for layer, src in REUSE.items():
        pairs = attended_pairs(SOURCES[src], t)
        if t <= 64:  # the O(T^2) grid of allowed(i, j)
            assert pairs == attended_pairs_grid(SOURCES[src], t)
        assert exact[layer] == exact[src] == pairs * D
        assert dense[layer] == t * t * D
    if t == 1001:  # the figure: a reused 5-frame window at T = 1001 was priced 200x too high
        assert exact[1] == (5 * t - 6) * D and dense[1] / exact[1] > 200


def test_reuse_of_a_full_map_is_still_t_squared():
    cost = _context_macs(estimate(_graph({"kind": "full"}), samples=50))
    assert cost[1] == cost[0] == 50 * 50 * D


def test_memo_tells_reuse_layers_of_different_sources_apart():
    t = 40
    full = _context_macs(estimate(_graph({"kind": "full"}), samples=t))  # priced first: warms the memo
    local = _context_macs(estimate(_graph(), samples=t))
    assert full[1] == t * t * D and local[1] == attended_pairs(SOURCES[0], t) * D


def test_reuse_pairs_equal_the_nonzero_map_the_materialized_layer_applies(one_thread):
    from planner.nn import build

    t = 48
    graph = _graph()
    cost = _context_macs(estimate(graph, samples=t))
    torch.manual_seed(0)
    model = build(graph).eval()
    with torch.no_grad():
        out = model(torch.randn(1, t, 8))
    for layer, src in REUSE.items():
        probs = out.attentions[layer]  # (1, H, T, T): the source's map, applied to this layer's values
        assert torch.equal(probs, out.attentions[src])
        nonzero = int((probs > 0).sum())  # masked scores are exactly 0 after the softmax
        assert nonzero * (D // HEADS) == cost[layer]  # AV MACs that are not multiplications by zero


def test_deepspeed_counts_the_dense_product_the_exact_count_omits_the_masked_pairs():
    from planner.profile import profile

    t = 32
    graph = _graph()
    r = profile(graph, samples=t, attention="dense")
    assert r.measured_macs == r.analytic_macs == estimate(graph, samples=t, attention="dense").macs
    masked = sum((t * t - attended_pairs(cfg, t)) * D for cfg in SOURCES.values())  # QK^T and AV of a source
    masked_reuse = sum((t * t - attended_pairs(SOURCES[src], t)) * D for src in REUSE.values())  # AV only
    assert r.measured_macs - estimate(graph, samples=t).macs == 2 * masked + masked_reuse > 0
