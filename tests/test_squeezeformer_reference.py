"""Squeezeformer against its reference implementation (github kssteven418/Squeezeformer; Kim et al. 2022):
the published XS size, the Swish convolution module, the padded depthwise separable subsampling and the
time reduction's kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import planner
from planner.cost import estimate
from planner.ir import load
from planner.ir.kinds.layers import TimeReduction
from support import STUDIES

XS = STUDIES / "jeon-2023" / "squeezeformer-xs.yaml"


def _reference_xs_params(d: int = 144, blocks: int = 16, heads: int = 4, kernel: int = 31, mels: int = 80,
                         filters: int = 144) -> int:  # fmt: skip
    """Trainable parameters of the reference's Squeezeformer-XS encoder, layer by layer as its Keras code builds
    them (``squeezeformer-XS.yml``: dmodel 144, 16 blocks, 4 x 36 heads, kernel 31, ``fixed_arch [M, s, C, s]``,
    ``encoder_ds_subsample``, ``adaptive_scale``, ``no_post_ln``, time reduction at 7, recovery at 15)."""
    dense = lambda i, o: i * o + o  # noqa: E731 - tf.keras.layers.Dense, use_bias=True
    ln = 2 * d  # LayerNormalization: gamma, beta
    scale = 2 * d  # the adaptive scale and bias of each module
    head = d // heads
    bins = (mels // 2) // 2  # tf.pad (0, 1) before each valid 3x3 stride-2 conv: 80 -> 40 -> 20
    subsampling = (9 * filters + filters) + (9 * filters + filters) + dense(filters, filters)  # conv1, dw, pw
    frontend = subsampling + dense(filters * bins, d) + ln  # the encoder's `linear` and `pre_ln`
    mhsa = scale + 3 * dense(d, d) + heads * head * d + d + heads * d * head + 2 * heads * head  # q/k/v, out, pos, u, v
    ff = scale + dense(d, 4 * d) + dense(4 * d, d)
    conv = scale + dense(d, 2 * d) + (kernel * 2 * d + 2 * d) + 2 * (2 * d) + dense(2 * d, d)  # pw1, dw, bn, pw2
    block = mhsa + ln + ff + ln + conv + ln + ff + ln  # MHSAFFModule, then ConvFFModule (ln_mid, ln each)
    time_reduction = (5 * d + d) + dense(d, d)  # kernel_size=5 depthwise, pointwise
    time_recovery = dense(d, d)
    return frontend + blocks * block + time_reduction + time_recovery


def test_xs_prices_to_the_published_size():
    graph = load(XS)
    reference = _reference_xs_params()
    assert estimate(graph, layers=False).params == graph.param_count == reference == 9_013_248
    assert round(reference / 1e6, 1) == 9.0  # Kim et al., Table 2 / Jeon et al., Table 1: 9.0M


def test_xs_materializes_with_the_reference_modules(one_thread):
    graph = load(XS)
    torch.manual_seed(0)
    model = planner.materialize(graph).eval()
    assert sum(p.numel() for p in model.parameters()) == _reference_xs_params()
    conv = model.get_submodule("layers.0.conv")
    assert tuple(conv.pointwise1.weight.shape) == (288, 144, 1)
    assert tuple(conv.depthwise.weight.shape) == (288, 1, 31) and conv.depthwise.groups == 288
    assert conv.batch_norm.num_features == 288
    assert tuple(conv.pointwise2.weight.shape) == (144, 288, 1)
    assert tuple(model.get_submodule("frontend.0.projection").weight.shape) == (144, 144 * 20)
    assert model.get_submodule("layers.7.depthwise").kernel_size == (5,)
    # the conv module is pw2(Swish(BN(dw(Swish(pw1(x)))))), with no GLU halving the channels
    for m in conv.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 23, 144)
    lengths = torch.tensor([23, 23])
    with torch.no_grad():
        h = F.silu(F.conv1d(x.transpose(1, 2), conv.pointwise1.weight, conv.pointwise1.bias))
        h = F.conv1d(F.pad(h, (15, 15)), conv.depthwise.weight, conv.depthwise.bias, groups=288)
        bn = conv.batch_norm
        h = (h - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps) * bn.weight[
            :, None
        ] + bn.bias[:, None]
        want = F.conv1d(F.silu(h), conv.pointwise2.weight, conv.pointwise2.bias).transpose(1, 2)
        got = conv(x, lengths)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # same float32 ops, BN written out: rounding only


def test_dwsep_subsampling_halves_time_and_mels_exactly(one_thread):
    """Each stride-2 conv sees one zero frame and bin at the end: floor(n / 2) out, as the reference (80 -> 20)."""
    arch = {"format": 1, "name": "dwsep", "input": {"kind": "features", "n_mels": 80}, "width": 16,
            "frontend": [{"kind": "dwsep_subsampling", "channels": 4}],
            "layers": [{"kind": "transformer", "heads": 2, "ffn": 16}]}  # fmt: skip
    graph = planner.from_dict(arch)
    sub = next(iter(graph.nodes("frontend")))
    assert sub.config.freq_out(80) == 20 and sub.config.freq_out(81) == 20 and sub.config.freq_out(79) == 19
    torch.manual_seed(0)
    model = planner.materialize(graph).eval()
    frontend = model.get_submodule("frontend.0")
    for frames in (4, 7, 8, 9, 30, 31):
        with torch.no_grad():
            y, lengths = frontend(torch.randn(1, frames, 80), torch.tensor([frames]), None)
        assert y.shape[1] == lengths.item() == (frames // 2) // 2 == sub.config.out_length(frames)
    # a padded utterance's valid frames equal the lone utterance's (its last frame reads the zero pad)
    x = torch.randn(2, 31, 80)
    with torch.no_grad():
        both, lengths = frontend(x, torch.tensor([31, 22]), None)
        alone, _ = frontend(x[1:, :22], torch.tensor([22]), None)
    assert lengths.tolist() == [7, 5]
    torch.testing.assert_close(both[1, :5], alone[0], rtol=1e-5, atol=1e-6)  # batched vs lone conv: rounding only


def test_time_reduction_default_kernel_is_the_references():
    assert TimeReduction().kernel == 5
    leaves = {lf.path: lf for lf in load(XS).node("layers.7").leaves}
    assert leaves["depthwise"].kernel == (5,)
