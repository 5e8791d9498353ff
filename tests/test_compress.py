"""Compression: fake quantization grids, N:M masks and schedules, gradients, packed export round trip, size.

Tolerances: everything here is exact (``torch.equal``) on purpose. A disabled compression builds no
quantizer at all; the packed format stores the integer codes, scales and zero points the fake quantizer
used, and torch's fake-quant kernels return ``float(q - zp) * scale``, the arithmetic the loader repeats.
"""

from __future__ import annotations

import copy
import glob
import json

import pytest
import torch

import planner
import planner.compress
import planner.nn
from planner.cli import main
from planner.compress import (
    CompressionError,
    SparsitySchedule,
    compress_,
    compressed_leaves,
    export,
    load_checkpoint_,
    load_packed,
)
from planner.ir.compression import _WEIGHT_SHORTHANDS, ActQuant, Compression, Sparsity, WeightQuant
from planner.nn.attention import Product

STUDIES = sorted(glob.glob("studies/usm-lite/small/*.yaml"))

TINY = """
format: 1
name: tiny
input: {kind: features, n_mels: 16}
width: 32
frontend: [{kind: conv2d_subsampling, channels: [8, 4]}]
layers: [{kind: conformer, repeat: 2, heads: 2, ffn: 64, kernel: 3, positional: relative}]
"""


def tiny(rules: str = "") -> planner.EncoderGraph:
    return planner.loads(TINY + (f"compression:\n{rules}" if rules else ""))


def features(batch: int = 2, frames: int = 40, mels: int = 16) -> torch.Tensor:
    return torch.randn(batch, frames, mels, generator=torch.Generator().manual_seed(1))


def build(graph: planner.EncoderGraph, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return planner.materialize(graph)


def leaf_weights(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, object]]:
    """Module path -> (the compressed ``(out, fan_in)`` weight as the forward pass sees it, its parametrization)."""
    out = {}
    for path, (mod, param) in compressed_leaves(model).items():
        with torch.no_grad():
            out[path] = (mod.weight.reshape(param.out, param.fan_in), param)
    return out


# --- identity -------------------------------------------------------------------------------------------


def test_float32_plan_is_exactly_the_float_model():
    graph = tiny("  - {layers: all, modules: [ffn], weight: fp32, activation: fp32}")
    assert graph.compression == {}
    ref, model = build(tiny()), build(graph)
    plan = {p: Compression() for p in ["layers.0.ffn1.fc1", "layers.1.attention.q_proj"]}
    compress_(model, plan)  # identity entries attach nothing
    assert compressed_leaves(model) == {}
    x = features()
    assert torch.equal(ref(x).output, model(x).output)
    for m in (ref, model):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        m(x).output.square().mean().backward()
        opt.step()
    assert torch.equal(ref(x).output, model(x).output)


# --- build, then compress -------------------------------------------------------------------------------


def test_build_is_the_float_model_and_materialize_compresses_it():
    """``planner.nn.build`` attaches nothing; ``planner.compress.materialize`` is build + ``compress_``, and
    the facade ``planner.materialize`` is that verb. Exact: the same seed draws the same initial weights."""
    graph = tiny('  - {layers: all, modules: [ffn], weight: int4, sparsity: "2:4"}')
    torch.manual_seed(0)
    float_model = planner.nn.build(graph)
    assert compressed_leaves(float_model) == {} and not hasattr(float_model, "mask_schedule")
    torch.manual_seed(0)
    by_hand = planner.nn.build(graph)
    compress_(by_hand)
    torch.manual_seed(0)
    verb = planner.compress.materialize(graph)
    facade = build(graph)  # planner.materialize, seed 0
    planned = {p for p, c in graph.compression.items() if not c.is_identity}
    assert planned and set(compressed_leaves(verb)) == planned
    x = features()
    with torch.no_grad():
        out = verb.eval()(x).output
        assert torch.equal(out, by_hand.eval()(x).output) and torch.equal(out, facade.eval()(x).output)
        assert not torch.equal(out, float_model.eval()(x).output)  # int4 + 2:4 changes the outputs


def test_build_and_materialize_agree_on_a_float_graph():
    graph = tiny()
    torch.manual_seed(0)
    built = planner.nn.build(graph)
    torch.manual_seed(0)
    made = planner.compress.materialize(graph)
    assert not hasattr(made, "mask_schedule")
    a, b = built.state_dict(), made.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- grids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight,levels", [("int8", 255), ("int4", 15)])
def test_symmetric_per_channel_grid(weight, levels):
    model = build(tiny(f"  - {{layers: all, modules: [attention, ffn], weight: {weight}}}"))
    qmax = (levels - 1) // 2
    for path, (w, _) in leaf_weights(model).items():
        scale = w.abs().amax(dim=1, keepdim=True) / qmax  # USM-Lite: max|W_j| / qmax, per output channel
        q = w / scale
        assert torch.allclose(q, q.round(), atol=1e-3), path
        assert q.round().abs().max() <= qmax
        assert all(row.unique().numel() <= levels for row in w), path


def test_int2_subchannel_scales_and_levels():
    rule = (
        "  - {layers: all, modules: [ffn], weight: {bits: 2, symmetric: false, granularity: subchannel, group_size: 8}}"
    )
    model = build(tiny(rule))
    for path, (w, param) in leaf_weights(model).items():
        q = param.quantizer
        scale, zp = q.qparams(w)
        assert scale.shape == (param.out, param.fan_in // 8) and zp.shape == scale.shape, path
        groups = w.reshape(param.out, -1, 8)
        codes = groups / scale.unsqueeze(-1) + zp.unsqueeze(-1)
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert codes.round().min() >= 0 and codes.round().max() <= 3
        assert max(g.unique().numel() for g in groups.reshape(-1, 8)) <= 4


def test_per_tensor_option_has_one_scale():
    model = build(tiny("  - {layers: all, modules: [ffn], weight: {bits: 4, granularity: per_tensor}}"))
    for w, param in leaf_weights(model).values():
        assert param.quantizer.qparams(w)[0].shape == (1, 1)
        assert w.unique().numel() <= 15


def test_binary_weights_are_plus_minus_mean_abs():
    model = build(tiny("  - {layers: all, modules: [ffn], weight: binary, activation: binary}"))
    for path, (w, param) in leaf_weights(model).items():
        raw = param.quantizer  # per tensor: one scale mean(|W|)
        original = compressed_leaves(model)[path][0].parametrizations.weight.original
        m = original.abs().mean()
        assert torch.equal(w.abs().unique(), m.reshape(1)), path
        assert torch.equal(w > 0, (original - original.mean() >= 0).reshape(w.shape))
        assert raw.config.is_binary


# --- N:M masks and schedules ------------------------------------------------------------------------------


def nonzeros_per_group(w: torch.Tensor, m: int) -> torch.Tensor:
    return (w.reshape(-1, m) != 0).sum(dim=1)


@pytest.mark.parametrize("nm", ["2:4", "1:4"])
def test_every_group_has_at_most_n_nonzeros(nm):
    n, m = map(int, nm.split(":"))
    model = build(tiny(f"  - {{layers: all, modules: [attention, ffn], weight: int4, sparsity: '{nm}'}}"))
    model(features())
    for path, (w, _) in leaf_weights(model).items():
        assert nonzeros_per_group(w, m).max() <= n, path


def train_steps(model, steps, lr=0.5):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    masks = []
    for i in range(steps):
        opt.zero_grad()
        model(features(frames=40 + i)).output.square().mean().backward()
        opt.step()
        model.mask_schedule.step()
        masks.append({p: param.sparsifier.mask.clone() for p, (_, param) in compressed_leaves(model).items()})
    return masks


def test_one_shot_mask_is_frozen_after_the_first_step():
    model = build(tiny("  - {layers: all, modules: [ffn], sparsity: '2:4'}"))
    masks = train_steps(model, 4)
    assert all(torch.equal(masks[0][p], later[p]) for later in masks[1:] for p in masks[0])


def test_few_shot_mask_stops_changing_after_tp_steps():
    model = build(tiny("  - {layers: all, modules: [ffn], sparsity: '1:4'}"))
    model.mask_schedule.config = SparsitySchedule("few_shot", steps=3, sr_ste=2e-4)
    masks = train_steps(model, 7, lr=5.0)
    assert any(not torch.equal(masks[0][p], masks[2][p]) for p in masks[0]), "large steps should move some mask"
    assert all(torch.equal(masks[3][p], later[p]) for later in masks[4:] for p in masks[0])
    assert int(model.mask_schedule.step_count) == 7


def test_schedule_config_errors():
    with pytest.raises(planner.PlannerError, match="steps"):
        SparsitySchedule("few_shot")
    with pytest.raises(planner.PlannerError, match="kind"):
        SparsitySchedule("sometimes")  # type: ignore[arg-type]


# --- gradients ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", [
    "  - {layers: 0-1, modules: [attention, ffn, pointwise], weight: int4, activation: 8, sparsity: '2:4'}",
    "  - {layers: 0-1, modules: [attention, ffn, pointwise], weight: {bits: 2, symmetric: false, granularity: subchannel, groups: 4}, activation: {bits: 4, symmetric: false}}",
    "  - {layers: 0-1, weight: binary, activation: binary}\n  - {layers: 0-1, modules: [fc2], activation: {bits: 1, symmetric: false}}",
])  # fmt: skip
def test_gradients_reach_every_trainable_tensor(rule):
    model = build(tiny(rule))
    model(features()).output.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0 and not n.endswith("pos_bias_v")]
    assert not zero
    if "binary" in rule:
        assert any(n.endswith("input_quantizer.alpha") for n, _ in model.named_parameters())
        assert any(n.endswith("input_quantizer.beta") for n, _ in model.named_parameters())


def test_leaves_keep_their_types_and_paths():
    graph = tiny("  - {layers: all, modules: [attention, ffn, conv], weight: int8, activation: 8}")
    model = build(graph)
    kinds = set()
    for path in graph.compression:
        mod = model.get_submodule(path)
        assert isinstance(mod, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, Product)), path
        kinds.add(type(mod).__name__)
    assert "Product" in kinds  # the rule's activation reaches the attention products too
    with pytest.raises(CompressionError, match="already compressed"):
        compress_(model)


# --- packed export --------------------------------------------------------------------------------------


def trained(graph, steps=1, x=None):
    """The model of ``graph`` after ``steps`` SGD steps on ``x`` (default: random features), in eval mode."""
    model = build(graph)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = features(mels=graph.spec.input.n_mels) if x is None else x
    for _ in range(steps):
        opt.zero_grad()
        model(x).output.square().mean().backward()
        opt.step()
        model.mask_schedule.step()
    return model.eval()


def assert_packed_round_trip(graph, x, out_dir) -> dict:
    """Trains a step, exports, reloads: outputs bitwise equal, priced payload equal to ``storage_bytes``.

    Size: the payload bytes of the tensors the cost model prices (weights, biases, norms, batch-norm
    statistics, input quantizers), headers aside, equal to the byte, since both follow one byte layout.
    """
    model = trained(graph, x=x)
    with torch.no_grad():
        ref = model(x).output
    manifest = export(model, graph, out_dir)
    reloaded = load_packed(out_dir)
    with torch.no_grad():
        assert torch.equal(reloaded(x).output, ref)
    assert manifest["payload_bytes"]["weights"] == planner.estimate(graph).storage_bytes
    return manifest


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_packed_round_trip_is_exact_and_size_matches_the_cost_model(path, tmp_path):
    manifest = assert_packed_round_trip(planner.load(path), features(frames=30, mels=80), tmp_path)
    assert manifest["format"] == "planner-packed" and manifest["version"] == 1
    assert json.loads((tmp_path / "manifest.json").read_text())["tensors"]


_FORMATS = [(w, a, sp) for w in sorted(_WEIGHT_SHORTHANDS) for a in ("fp32", "int8", "binary") for sp in ("none", "2:4")
            if (w, a, sp) != ("fp32", "fp32", "none")]  # fmt: skip


@pytest.mark.parametrize("weight,activation,sparsity", _FORMATS, ids=["-".join(f) for f in _FORMATS])
def test_every_registered_format_round_trips_exactly_at_its_predicted_size(weight, activation, sparsity, tmp_path):
    # a conformer with relative attention, batch norm, depthwise and pointwise convs and attention products;
    # int8 activations calibrate in training, so the model trains a step before export
    graph = tiny(f"  - {{layers: 0-1, weight: {weight}, activation: {activation}, sparsity: '{sparsity}'}}\n"
                 "  - {layers: 0-1, modules: [depthwise], sparsity: none}")  # fmt: skip
    assert_packed_round_trip(graph, features(), tmp_path)


def test_export_refuses_a_non_empty_directory(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    arch = "studies/usm-lite/small/int8.yaml"
    assert main(["export", arch, "--out", str(tmp_path)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["export", arch, "--out", str(tmp_path), "--force"]) == 0


def test_cli_exports_a_float_checkpoint(tmp_path):
    graph = tiny("  - {layers: all, modules: [ffn], weight: int4, sparsity: '2:4'}")
    arch = tmp_path / "arch.yaml"
    planner.dump(graph, arch)
    float_model = build(tiny())
    torch.save(float_model.state_dict(), tmp_path / "ckpt.pt")
    assert main(["export", str(arch), "--checkpoint", str(tmp_path / "ckpt.pt"), "--out", str(tmp_path / "out")]) == 0
    expected = build(graph, seed=1)
    load_checkpoint_(expected, float_model.state_dict())
    x = features()
    with torch.no_grad():
        assert torch.equal(load_packed(tmp_path / "out")(x).output, expected.eval()(x).output)


def test_load_packed_rejects_another_format(tmp_path):
    graph = tiny("  - {layers: all, modules: [ffn], weight: int8}")
    export(build(graph), graph, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CompressionError, match="version"):
        load_packed(tmp_path)


def test_compressed_model_deepcopies():
    model = build(tiny("  - {layers: all, modules: [ffn], weight: int4, activation: binary, sparsity: '2:4'}"))
    clone = copy.deepcopy(model)
    x = features()
    assert torch.equal(model(x).output, clone(x).output)


def test_weight_quant_and_sparsity_configs_in_plan():
    graph = tiny("  - {layers: 0, modules: [q], weight: int4, sparsity: '2:4', activation: 8}")
    comp = graph.compression["layers.0.attention.q_proj"]
    assert comp == Compression(WeightQuant(bits=4), ActQuant(bits=8), Sparsity(2, 4))


WAV2VEC2_TINY = """
format: 1
name: tiny-wav2vec2
input: {kind: waveform}
width: 32
frontend:
  - {kind: conv_extractor, conv_layers: [[16, 10, 5], [16, 3, 2]], norm: layer_all, output_norm: true, projection: true}
  - {kind: conv_pos_embedding, kernel: 16, groups: 4, weight_norm: true}
layers: [{kind: transformer, repeat: 2, heads: 4, ffn: 64, norm: pre}]
compression:
  - {layers: frontend, modules: [pos_conv], weight: %s, sparsity: '%s'}
"""


@pytest.mark.parametrize("weight,sparsity", [("int8", "none"), ("int4", "2:4"), ("int2", "none"), ("binary", "none"),
                                             ("fp32", "2:4"), ("fp16", "none")])  # fmt: skip
def test_weight_normalised_conv_packs_its_product_exactly(weight, sparsity, tmp_path):
    # the weight-norm conv is packed as g v / ||v||; the loader sets v to it and g to the kernel's own norm
    # of v, so the reloaded weight is bitwise the packed one and the outputs are equal
    graph = planner.loads(WAV2VEC2_TINY % (weight, sparsity))
    x = torch.randn(2, 2000, generator=torch.Generator().manual_seed(2))
    manifest = assert_packed_round_trip(graph, x, tmp_path)
    assert "frontend.1.conv.weight" in manifest["tensors"]  # packed, not the raw g and v


def test_bit_binarizes_both_inputs_of_the_attention_products():
    # BiT: Q, K and V take +-alpha (signed), the attention probabilities {0, alpha} (unsigned)
    model = build(tiny("  - {layers: all, modules: [attention], weight: binary, activation: binary}")).train()
    seen = {}

    def record(name):
        def hook(module, args, output):
            seen[name] = [a.detach() for a in args]

        return hook

    attention = model.get_submodule("layers.0.attention")
    attention.scores.register_forward_hook(record("scores"))
    attention.context.register_forward_hook(record("context"))
    model(features()).output.sum().backward()
    for name, signed_first in (("scores", True), ("context", False)):
        first, second = seen[name]
        product = getattr(attention, name)
        a1, a2 = float(product.input_quantizer.alpha.detach()), float(product.other_quantizer.alpha.detach())
        expected_first = {-a1, a1} if signed_first else {0.0, a1}
        assert set(first.unique().tolist()) <= expected_first, name
        assert set(second.unique().tolist()) <= {-a2, a2}, name
        assert product.input_quantizer.alpha.grad is not None and product.other_quantizer.beta.grad is not None
    assert len(set(seen["context"][0].unique().tolist())) == 2  # some probabilities pass, some do not
