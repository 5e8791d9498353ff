"""The torch-free IR: compression rules, reuse patterns, lengths, round trips."""

from __future__ import annotations

import sys

import pytest

import planner
from planner.ir import Compression, Sparsity, WeightQuant
from planner.ir.compression import ActQuant

MIXED = """
name: mixed
input: {kind: features, n_mels: 80}
width: 144
frontend:
  - {kind: conv2d_subsampling, channels: [32, 32]}
layers:
  - {kind: conformer, repeat: 12, heads: 4, ffn: 576, kernel: 32}
compression:
  - {layers: 0-3, weight: int8, activation: 8}
  - {layers: 4-11, weight: int4, sparsity: "2:4"}
  - {modules: [conv], weight: fp16, sparsity: none}
"""


def test_rules_resolve_per_leaf_with_later_rules_overriding() -> None:
    g = planner.loads(MIXED)
    plan = g.compression
    assert plan["layers.0.attention.q_proj"] == Compression(WeightQuant(bits=8), ActQuant(bits=8))
    assert plan["layers.3.ffn1.fc2"] == Compression(WeightQuant(bits=8), ActQuant(bits=8))
    assert plan["layers.4.ffn2.fc1"] == Compression(WeightQuant(bits=4), sparsity=Sparsity(2, 4))
    # "conv modules kept at 16 bit": the depthwise/pointwise convs of every layer, dense again
    assert plan["layers.5.conv.depthwise"] == Compression(WeightQuant(bits=16))
    assert plan["layers.1.conv.pointwise1"] == Compression(WeightQuant(bits=16), ActQuant(bits=8))
    # leaves no rule touched stay float32 and are left out of the plan
    assert "frontend.0.projection" not in plan
    assert all(not c.is_identity for c in plan.values())


def test_globs_and_tags_select_leaves() -> None:
    text = MIXED.split("compression:")[0] + "compression:\n  - {modules: ['ffn1.*', q], weight: int4}\n"
    plan = planner.loads(text).compression
    assert set(plan) == {f"layers.{i}.{p}" for i in range(12) for p in ("ffn1.fc1", "ffn1.fc2", "attention.q_proj")}


@pytest.mark.parametrize(
    ("pattern", "computing"),
    [("2by6", [0, 2, 4, 6, 8, 10]), ("3by4", [0, 3, 6, 9]), ("6by2", [0, 6]), ("none", list(range(12)))],
)
def test_named_reuse_patterns(pattern: str, computing: list[int]) -> None:
    text = open("studies/recycle-and-distill/armhubert-s.yaml").read().replace("reuse: 2by6", f"reuse: {pattern}")
    g = planner.loads(text)
    layers = g.nodes("layers")
    assert [n.index for n in layers if n.config.attention.kind == "full"] == computing
    for n in layers:
        if n.config.attention.kind == "reuse":
            src = n.config.attention.source
            assert src in computing and src < n.index and n.index - src < 12 // len(computing)
            assert g.nx.edges[f"layers.{src}", n.name]["type"] == "attention_map"


def test_reuse_params_match_recycle_and_distill_table2() -> None:
    """Table 2 of Recycle-and-Distill: params (M) per pattern at width (432, 816)."""
    text = open("studies/recycle-and-distill/armhubert-s.yaml").read()
    expected = {"6by2": 20.90, "3by4": 21.65, "2by6": 22.39, "none": 24.64}
    for pattern, millions in expected.items():
        g = planner.loads(text.replace("reuse: 2by6", f"reuse: {pattern}"))
        assert round(g.param_count / 1e6, 2) == millions, pattern


def test_explicit_reuse_list_equals_named_pattern() -> None:
    text = open("studies/recycle-and-distill/armhubert-s.yaml").read()
    named = planner.loads(text)
    explicit = planner.loads(text.replace("reuse: 2by6", "reuse: [0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10]"))
    assert [n.config for n in named.nodes()] == [n.config for n in explicit.nodes()]
    assert named.param_count == explicit.param_count


def test_lengths_follow_the_extractor_arithmetic() -> None:
    g = planner.load("studies/recycle-and-distill/armhubert-s.yaml")
    # wav2vec 2.0's extractor: 400 samples receptive field, hop 320 -> 49 frames per second
    assert g.lengths(16000)["layers.11"] == 49
    assert g.lengths(400)["frontend.0"] == 1
    assert g.lengths(399)["frontend.0"] == 0
    f = planner.loads(MIXED)
    frames = f.spec.input.frames(16000)
    assert frames == 98  # 1 + (16000 - 400) // 160
    assert f.lengths(16000)["layers.0"] == ((frames - 3) // 2 + 1 - 3) // 2 + 1


def test_round_trip_is_exact_and_stable(tmp_path) -> None:
    for text in (MIXED, open("studies/recycle-and-distill/armhubert-s.yaml").read()):
        g = planner.loads(text)
        planner.dump(g, tmp_path / "copy.yaml")
        again = planner.load(tmp_path / "copy.yaml")
        assert again == g and again.spec == g.spec
        assert planner.dumps(again) == planner.dumps(g)


def test_ir_does_not_import_torch() -> None:
    import subprocess

    code = "import planner, sys; planner.load('studies/recycle-and-distill/armhubert-s.yaml'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_shorthands_parse_to_typed_configs() -> None:
    text = MIXED.split("compression:")[0] + (
        "compression:\n"
        "  - {layers: [0, 1], modules: [ffn, attention], weight: {bits: 2, granularity: subchannel, group_size: 48, symmetric: false}}\n"
        "  - {layers: 2, weight: binary, activation: binary}\n"
        "  - {layers: 3, weight: int2, sparsity: [1, 4]}\n"
    )
    plan = planner.loads(text).compression
    w = plan["layers.0.ffn1.fc1"].weight
    assert (w.bits, w.granularity, w.group_size, w.symmetric) == (2, "subchannel", 48, False)
    assert w.group_count(144) == 3
    assert plan["layers.2.attention.v_proj"] == Compression(
        WeightQuant(bits=1, granularity="per_tensor"), ActQuant(bits=1)
    )
    assert plan["layers.3.ffn2.fc2"].sparsity == Sparsity(1, 4)
    assert plan["layers.3.ffn2.fc2"].weight == WeightQuant(bits=2, symmetric=False)


def test_reuse_sees_through_time_reduction_and_recovery() -> None:
    base = """
name: t
input: {kind: features, n_mels: 40}
width: 48
frontend: [{kind: dwsep_subsampling, channels: 8}]
layers:
  - {kind: squeezeformer, heads: 4, ffn: 96}
  - {kind: time_reduction}
  - {kind: squeezeformer, heads: 4, ffn: 96}
  - {kind: time_recovery, source: 1}
  - {kind: squeezeformer, heads: 4, ffn: 96, attention: {kind: reuse, source: SRC}}
"""
    # after the recovery the sequence is back at the rate of layer 0, so its map fits ...
    assert planner.loads(base.replace("SRC", "0")).nx.has_edge("layers.0", "layers.4")
    # ... and the reduced-rate map of layer 2 does not
    with pytest.raises(planner.GraphError, match=r"layers\[4\]\.attention\.source: layers\.2 runs at another"):
        planner.loads(base.replace("SRC", "2"))
