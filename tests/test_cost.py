"""The cost model: exact hand-computed cases, invariants, the papers' figures, CLI and hardware catalog."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import planner
from planner.cost import COST_FORMULAS, attended_pairs, estimate, leaf_storage_bytes, load_hardware, parse_hardware
from planner.cost.attention import attended_pairs_grid
from planner.cost.usm_table import PAPER, usm_ratios
from planner.errors import ConfigError, FieldError
from planner.ir import NODE_KINDS, from_dict, load
from planner.ir.attention import FixedAttention, FullAttention, LocalAttention, ReuseAttention, StridedAttention
from planner.ir.compression import Compression, Sparsity, WeightQuant
from planner.ir.kinds.base import conv1d, linear, norm
from support import STUDIES  # noqa: E402

ARMHUBERT = STUDIES / "recycle-and-distill" / "armhubert-s.yaml"


def test_formula_registry_matches_node_kinds():
    assert set(COST_FORMULAS.keys()) == set(NODE_KINDS.keys())


@pytest.mark.parametrize(
    "cfg",
    [FullAttention(), ReuseAttention(0)]
    + [LocalAttention(w) for w in (1, 2, 3, 8, 31)]
    + [StridedAttention(s) for s in (2, 3, 7)]
    + [FixedAttention(b, c) for b, c in ((2, 1), (4, 2), (5, 5), (8, 3))],
)
def test_attended_pairs_closed_form_equals_grid(cfg):
    for t in (0, 1, 2, 3, 7, 8, 9, 33, 64):
        assert attended_pairs(cfg, t) == attended_pairs_grid(cfg, t)


def test_storage_hand_computed():
    fc = linear("fc", 1536, 6144, set())  # fan_in 1536, bias 6144
    numel = 1536 * 6144
    assert leaf_storage_bytes(fc) == 4 * (numel + 6144)
    assert leaf_storage_bytes(fc, Compression(weight=WeightQuant(bits=16))) == 2 * numel + 4 * 6144
    # int8 per channel: 1 byte per weight + a float32 scale per output channel + float32 bias
    assert leaf_storage_bytes(fc, Compression(weight=WeightQuant(bits=8))) == numel + 4 * 6144 + 4 * 6144
    # int2 asymmetric, sub-channel groups of 96: 2 bits, a scale and a 1-byte zero point per group
    w = WeightQuant(bits=2, granularity="subchannel", group_size=96, symmetric=False)
    groups = 6144 * 16
    assert leaf_storage_bytes(fc, Compression(weight=w)) == numel // 4 + 5 * groups + 4 * 6144
    # 2:4 float: half the values + a 1-bit mask per weight
    assert leaf_storage_bytes(fc, Compression(sparsity=Sparsity(2, 4))) == 4 * numel // 2 + numel // 8 + 4 * 6144
    # int4 on 2:4: packed kept values rounded up to bytes, mask, scales
    odd = linear("odd", 4, 3, set(), bias=False)  # 12 weights, 6 kept x 4 bits = 3 bytes, mask 2 bytes
    assert leaf_storage_bytes(odd, Compression(weight=WeightQuant(bits=4), sparsity=Sparsity(2, 4))) == 3 + 2 + 12
    # binary (BiT): 1 bit per weight + one float32 scale per tensor
    assert leaf_storage_bytes(odd, Compression(weight=WeightQuant(bits=1, granularity="per_tensor"))) == 2 + 4
    # weight-normalised conv: weight, bias and g (kernel entries) float32; norms float32
    assert leaf_storage_bytes(conv1d("c", 16, 16, 4, set(), groups=4, weight_norm=True)) == 4 * (16 * 4 * 4 + 16 + 4)
    assert leaf_storage_bytes(norm("n", "layer_norm", 10)) == 80


def test_small_transformer_hand_computed():
    d, t, ffn = 8, 5, 16
    graph = from_dict({
        "name": "tiny", "input": {"kind": "features", "n_mels": 8, "win_length": 1, "hop_length": 1},
        "width": d, "frontend": [{"kind": "conv2d_subsampling", "channels": [2], "kernel": 1, "stride": 1}],
        "layers": [{"kind": "transformer", "heads": 2, "ffn": ffn, "attention": {"kind": "local", "window": 3}}],
    })  # fmt: skip
    exact = estimate(graph, samples=t)
    dense = estimate(graph, samples=t, attention="dense")
    sub = t * 8 * 2 * 1 + t * (2 * 8) * d  # conv2d 1x1 (1 -> 2 channels) on 5x8, projection 16 -> 8
    projections = 4 * t * d * d + 2 * t * d * ffn
    assert dense.macs == sub + projections + 2 * t * t * d
    assert exact.macs == sub + projections + 2 * 13 * d  # a 3-frame window attends 13 pairs of 5 x 5
    assert exact.flops == 2 * exact.macs + 5 * t * d * 2 + 2 * 13  # two layer norms, softmax over 2 heads x 13
    assert exact.bops == exact.macs * 32 * 32


@pytest.mark.parametrize("path", sorted(STUDIES.rglob("*.yaml")), ids=lambda p: p.stem)
def test_layers_sum_to_totals(path):
    graph = load(path)
    cost = estimate(graph, samples=[16000, 23456], hardware="a100")
    assert cost.params == graph.param_count
    for key in ("params", "storage_bytes", "bops", "flops", "macs"):
        assert sum(getattr(lc, key) for lc in cost.layers) == getattr(cost, key), key
    assert sum(lc.latency_s for lc in cost.layers) == pytest.approx(cost.latency_s)
    names = [lc.name for lc in cost.layers]
    assert len(names) == len(set(names))
    leaves = {p for p, _, lf in graph.leaves()}
    assert leaves <= set(names)  # every leaf is listed (attention products in addition)
    two = estimate(graph, samples=16000).macs + estimate(graph, samples=23456).macs
    assert cost.macs == two


def test_armhubert_params_and_reuse_patterns():
    assert estimate(load(ARMHUBERT)).params == 22_394_080
    data = yaml.safe_load(ARMHUBERT.read_text())
    params = {r: estimate(from_dict({**data, "reuse": r})).params for r in ("6by2", "3by4", "none")}
    assert {r: round(p / 1e6, 2) for r, p in params.items()} == {"6by2": 20.90, "3by4": 21.65, "none": 24.64}


def test_armhubert_mac_ratios_follow_table2():
    """Table 2's MACs (450G 2by6, 490G none, 423G 6by2, 437G 3by4) for an unknown input: the 2by6/none
    ratio fixes the utterance length at 10.3 s (165,200 samples), where the other ratios agree to 0.1%."""
    data = yaml.safe_load(ARMHUBERT.read_text())
    macs = {
        r: estimate(from_dict({**data, "reuse": r}), samples=165_200).macs for r in ("2by6", "none", "6by2", "3by4")
    }
    for r, paper in (("2by6", 450), ("6by2", 423), ("3by4", 437)):
        assert macs[r] / macs["none"] == pytest.approx(paper / 490, abs=1e-3)


def test_usm_lite_ratios_round_to_paper():
    rows = usm_ratios()
    assert [r.setting for r in rows] == list(PAPER)
    for r in rows:
        assert round(r.paper, 1) == r.paper_figure, r
        assert r.paper <= r.matrices < r.model  # zero points and biases; float convs and CTC layer


def test_sparse_and_quantized_bops():
    base = yaml.safe_load((STUDIES / "usm-lite" / "int4-2of4.yaml").read_text())
    graph = from_dict(base)
    cost = estimate(graph, seconds=1)
    row = next(lc for lc in cost.layers if lc.name == "layers.0.ffn1.fc1")
    assert (row.weight_bits, row.act_bits, row.sparsity) == (4, 32, "2:4")
    assert row.bops == row.macs * 4 * 32 // 2


def _conformer_block(rules: list) -> planner.EncoderGraph:
    return from_dict({
        "name": "t", "input": {"kind": "features", "n_mels": 8}, "width": 16,
        "frontend": [{"kind": "conv2d_subsampling", "channels": [4]}],
        "layers": [{"kind": "conformer", "heads": 2, "ffn": 32, "kernel": 3}],
        "compression": rules,
    })  # fmt: skip


def test_binarized_attention_products_and_quantizer_storage():
    # BiT W1A1 on a conformer block: the products take the rule's activation width on both inputs, and
    # storage holds each input quantizer (alpha + a beta per channel) and batch norm's running statistics
    d, heads = 16, 2
    rows = {
        r.name: r
        for r in estimate(
            _conformer_block([{"layers": 0, "weight": "binary", "activation": "binary"}]), seconds=1
        ).layers
    }
    scores, context = rows["layers.0.attention.scores"], rows["layers.0.attention.context"]
    assert (scores.weight_bits, scores.act_bits, context.weight_bits, context.act_bits) == (1, 1, 1, 1)
    assert scores.bops == scores.macs and context.bops == context.macs
    assert scores.storage_bytes == 2 * 4 * (1 + d)  # Q and K: alpha + beta per model channel
    assert context.storage_bytes == 4 * (1 + heads) + 4 * (1 + d)  # P: beta per head; V: per channel
    fc1 = rows["layers.0.ffn1.fc1"]  # 1 bit per weight, one scale, float bias, input alpha + beta
    assert fc1.storage_bytes == 32 * d // 8 + 4 + 4 * 32 + 4 * (1 + d)
    assert rows["layers.0.conv.batch_norm"].storage_bytes == 4 * 4 * d  # weight, bias, running mean, var
    # a rule without an activation leaves the products in float; int8 inputs add a scale and a zero point
    rows = {r.name: r for r in estimate(_conformer_block([{"layers": 0, "weight": "int8"}]), seconds=1).layers}
    assert rows["layers.0.attention.scores"].bops == rows["layers.0.attention.scores"].macs * 32 * 32
    assert rows["layers.0.attention.scores"].storage_bytes == 0
    rows = {
        r.name: r
        for r in estimate(_conformer_block([{"layers": 0, "modules": ["matmul"], "activation": 8}]), seconds=1).layers
    }
    assert rows["layers.0.attention.context"].bops == rows["layers.0.attention.context"].macs * 8 * 8
    assert rows["layers.0.attention.context"].storage_bytes == 2 * (4 + 4)
    assert rows["layers.0.ffn1.fc1"].act_bits == 32  # modules: [matmul] selects the products alone


def test_input_spec_errors():
    graph = load(ARMHUBERT)
    with pytest.raises(FieldError):
        estimate(graph, seconds=1, samples=100)
    with pytest.raises(FieldError):
        estimate(graph, samples=[0])
    with pytest.raises(FieldError):
        estimate(graph, attention="sparse")  # type: ignore[arg-type]


def test_hardware_catalog_and_validation(tmp_path):
    hw = load_hardware("a100")
    assert hw.rate("int8") == 624e12
    fast = estimate(load(STUDIES / "usm-lite" / "int4.yaml"), hardware=hw).latency_s
    slow = estimate(load(STUDIES / "usm-lite" / "usm-2b.yaml"), hardware=hw).latency_s
    assert 0 < fast < slow
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npeak_ops_per_s: {fp32: 1, tf32: -2, fp16: 1, int8: 1, int4: 1, int9: 3}\nspeed: 1\n")
    with pytest.raises(ConfigError) as err:
        load_hardware(bad)
    text = str(err.value)
    for expected in ("bad.yaml: peak_ops_per_s.tf32", "peak_ops_per_s.int9", "peak_ops_per_s.binary",
                     "memory_bandwidth_bytes_per_s", "speed: unknown field"):  # fmt: skip
        assert expected in text
    with pytest.raises(ConfigError, match="not in the catalog"):
        load_hardware("h9000")
    with pytest.raises(ConfigError):
        parse_hardware([1, 2])


def test_import_planner_stays_torch_free():
    code = "import sys, planner; planner.estimate(planner.load(sys.argv[1])); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code, str(ARMHUBERT)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_cost_json(tmp_path, capsys):
    from planner.cli import main

    lengths = tmp_path / "utt.txt"
    lengths.write_text("16000\n# comment\n32000\n")
    assert main(["cost", str(ARMHUBERT), "--lengths", str(lengths), "--hardware", "a100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("params", "storage_bytes", "macs", "flops", "bops", "latency_s", "layers"):
        assert key in data
    assert data["macs"] == estimate(load(ARMHUBERT), samples=[16000, 32000]).macs
    row = data["layers"][0]
    for key in (
        "name",
        "kind",
        "params",
        "storage_bytes",
        "macs",
        "bops",
        "weight_bits",
        "act_bits",
        "sparsity",
        "parent",
    ):
        assert key in row
    assert main(["cost", str(ARMHUBERT), "--seconds", "2"]) == 0
    assert "armhubert-s" in capsys.readouterr().out
    lengths.write_text("12\nabc\n")
    assert main(["cost", str(ARMHUBERT), "--lengths", str(lengths)]) == 2
    assert "utt.txt: line 2" in capsys.readouterr().err


def test_planner_exports_estimate():
    assert planner.estimate is estimate
