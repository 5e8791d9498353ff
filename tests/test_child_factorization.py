"""Child et al.'s interleaved factorization of the strided pattern (Generating Long Sequences with Sparse
Transformers, 2019, section 4.2): the strided-only head ``A(2) = {j : (i - j) mod l = 0}`` as its own attention
kind, its closed-form pair count against the mask it implies, and the Sparseformer studies built from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import planner
from planner.cost import attended_pairs, estimate
from planner.cost.attention import attended_pairs_grid
from planner.ir import load
from planner.ir.attention import LocalAttention, StridedAttention, StridedOnlyAttention
from planner.nn.attention import pattern_mask
from support import STUDIES

SPARSEFORMERS = [STUDIES / "jeon-2023" / "sparseformer-dn-s.yaml", STUDIES / "jeon-2023" / "sparseformer-sw-s.yaml"]


def _grid(cfg, t: int) -> np.ndarray:
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    return np.broadcast_to(cfg.allowed(i, j), (t, t))


@pytest.mark.parametrize("stride", [2, 3, 5, 32])
def test_strided_only_pairs_closed_form_equals_its_mask(stride):
    for t in (0, 1, 2, stride - 1, stride, stride + 1, 2 * stride, 3 * stride + 2, 100):
        assert attended_pairs(StridedOnlyAttention(stride), t) == attended_pairs_grid(StridedOnlyAttention(stride), t)


def test_strided_only_hand_count():
    # t = 7, l = 3: residue classes {0, 3, 6}, {1, 4}, {2, 5}; each query attends its own class: 9 + 4 + 4
    assert attended_pairs(StridedOnlyAttention(3), 7) == 17
    assert _grid(StridedOnlyAttention(3), 7)[4].nonzero()[0].tolist() == [1, 4]


def test_strided_only_is_a_2_of_child_and_the_merged_kind_is_unchanged():
    """A(2) is exactly the stride lattice, without the local band; ``sparse_strided`` still merges both heads,
    and the band is a ``local`` window of ``2 l - 1``: A(1) | A(2) is the merged pattern, A(1) & A(2) only the
    diagonal."""
    for stride in (2, 4, 7):
        t = 5 * stride + 3
        a1, a2 = _grid(LocalAttention(2 * stride - 1), t), _grid(StridedOnlyAttention(stride), t)
        d = np.arange(t)[:, None] - np.arange(t)[None, :]
        assert np.array_equal(a2, d % stride == 0)
        assert np.array_equal(a1 | a2, _grid(StridedAttention(stride), t))
        assert np.array_equal(a1 & a2, np.eye(t, dtype=bool))


def test_strided_only_materialized_mask_is_the_pattern():
    """The torch mask the materializer applies is the numpy pattern the cost model counts, and the probabilities
    of a materialized layer are zero exactly outside it."""
    cfg = StridedOnlyAttention(4)
    assert np.array_equal(pattern_mask(cfg, 19).numpy(), _grid(cfg, 19))
    graph = planner.from_dict({
        "format": 1, "name": "strided-only", "input": {"kind": "features", "n_mels": 16}, "width": 16,
        "frontend": [{"kind": "conv2d_subsampling", "channels": [4], "kernel": 3, "stride": 1}],
        "layers": [{"kind": "transformer", "heads": 2, "ffn": 32, "attention": {"kind": "sparse_strided_only", "stride": 4}}],
    })  # fmt: skip
    samples = 3200
    frames = graph.spec.input.frames(samples)
    t = graph.lengths(samples)["layers.0"]
    torch.manual_seed(0)
    model = planner.materialize(graph).eval()
    with torch.no_grad():
        out = model(torch.randn(1, frames, 16), torch.tensor([frames]))
    probs = out.attentions[0][0]  # (H, T, T)
    assert probs.shape[-1] == t > 8
    allowed = pattern_mask(cfg, t)
    assert torch.all(probs[:, ~allowed] == 0)
    assert torch.all(probs[:, allowed] > 0)
    # the cost model prices this layer's products on the pattern's pairs, not T^2
    rows = {r.name: r for r in estimate(graph, samples=samples).layers}
    assert rows["layers.0.attention.context"].macs == attended_pairs(cfg, t) * 16 < t * t * 16


@pytest.mark.parametrize("path", SPARSEFORMERS, ids=lambda p: p.stem)
def test_sparseformer_studies_use_childs_factorization(path):
    """Layers alternate A(1) and A(2) of one stride: each consecutive pair covers the merged strided pattern
    (no pair beyond it), and connects every two frames through one intermediate frame, in either order."""
    layers = list(load(path).nodes("layers"))
    kinds = [n.config.attention for n in layers]
    assert len(kinds) % 2 == 0
    t = 50 * 20  # 20 s at 20 ms frames, where l = 32 ~ sqrt(T)
    pairs = set(zip(kinds[0::2], kinds[1::2]))
    assert len(pairs) == 1  # the same two heads all the way up
    for a, b in pairs:
        assert isinstance(a, LocalAttention) and isinstance(b, StridedOnlyAttention)
        ga, gb = _grid(a, t), _grid(b, t)
        assert np.array_equal(ga | gb, _grid(StridedAttention(b.stride), t))
        fa, fb = ga.astype(np.float32), gb.astype(np.float32)  # path counts < 2^24: exact in float32
        assert (fa @ fb > 0).all() and (fb @ fa > 0).all()
