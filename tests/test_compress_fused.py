"""The fused weight path (one autograd node for mask + quantizer + STE) against the unfused composition.

The reference here is the composition the fused path replaces, written with torch's own pieces: ``w * mask``
(bool mask, autograd), the scale formula, ``torch.fake_quantize_per_channel_affine`` /
``torch.fake_quantize_per_tensor_affine`` (their own STE), BiT's ``where(W - mean >= 0, 1, -1) * mean|W|``
with the clipped STE, SR-STE's ``grad + lam * (1 - mask) * w``.

Tolerances: none. Forward outputs and gradients are compared bit for bit (``torch.equal`` and the raw bits,
so that a ``-0.0`` where torch gives ``+0.0`` fails too): the fused path does the same float operations on
the same values, and multiplying a gradient by 0/1 in one step or two gives the same bits.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from planner.compress import (
    FakeCompressedWeight,
    IntWeightQuantizer,
    MaskSchedule,
    NMSparsifier,
    SparsitySchedule,
    _quant,
)
from planner.compress._quant import fake_compress, qrange
from planner.ir.compression import ActQuant, Compression, Sparsity, WeightQuant

OUT, FAN_IN = 12, 32

WEIGHTS = {
    "int8": WeightQuant(bits=8),
    "int4": WeightQuant(bits=4),
    "int4-per-tensor": WeightQuant(bits=4, granularity="per_tensor"),
    "int2-subchannel": WeightQuant(bits=2, symmetric=False, granularity="subchannel", group_size=8),
    "int2-groups": WeightQuant(bits=2, symmetric=False, granularity="subchannel", groups=4),
    "int4-asym-subchannel": WeightQuant(bits=4, symmetric=False, granularity="subchannel", groups=2),
    "binary": WeightQuant(bits=1, granularity="per_tensor"),
    "binary-per-channel": WeightQuant(bits=1),
    "fp16": WeightQuant(bits=16),
}
MASKS = [None, Sparsity(2, 4), Sparsity(1, 4)]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values and equal bit patterns (tells -0.0 from +0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
        return False
    ints = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16}[a.dtype]
    return torch.equal(a.view(ints), b.view(ints))


def weight(seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A weight with the awkward values: zeros, -0.0, exact rounding ties, |w| > 1, an all-zero row, a row
    whose mean is exactly +0 (BiT: ``-0.0 - mean`` is ``-0.0``, whose sign is +1)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(OUT, FAN_IN, generator=g, dtype=torch.float64) * 0.3
    w[0, :8] = torch.tensor([0.0, -0.0, 1.5, -1.5, 2.5, -0.25, 7.0, -7.0])  # ties of the int4 grid at scale 1
    w[1] = 0.0  # the scale falls back to 1
    w[2, ::3] *= 10  # some |w| > 1: BiT's clipped STE stops those
    w[3, 5] = -0.0
    w[7] = torch.tensor([-0.0, 0.5, -0.5, 0.125, -0.125, 0.25, -0.25, 0.0]).repeat(FAN_IN // 8)  # mean exactly +0
    return w.to(dtype)


# --- the unfused reference -----------------------------------------------------------------------------------


class _ClippedSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, wb):  # type: ignore[override]
        ctx.save_for_backward(v)
        return wb

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        return grad * (v.abs() <= 1).to(grad.dtype), None


class _SRSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, mask, lam):  # type: ignore[override]
        ctx.save_for_backward(w, mask)
        ctx.lam = lam
        return w * mask

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        w, mask = ctx.saved_tensors
        return grad + ctx.lam * (~mask).to(w.dtype) * w, None, None


class _Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):  # type: ignore[override]
        return w.to(torch.float16).to(w.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


def reference_qparams(cfg: WeightQuant, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """USM-Lite's scales, as the quantizer computed them before fusion (``aminmax`` in one pass)."""
    rows = 1 if cfg.granularity == "per_tensor" else v.shape[0]
    groups = cfg.group_count(v.shape[1])
    x = v.detach().reshape(rows * groups, -1)
    qmin, qmax = qrange(cfg.bits, cfg.symmetric)
    lo, hi = torch.aminmax(x, dim=1)
    if cfg.symmetric:
        scale = torch.maximum(-lo, hi) / qmax
        return torch.where(scale > 0, scale, torch.ones_like(scale)), None
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, (qmin - torch.round(lo / scale)).clamp(qmin, qmax)


def reference(cfg: WeightQuant, w: torch.Tensor, mask: torch.Tensor | None, lam: float | None,
              pinned: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:  # fmt: skip
    """Mask, then torch's fake quantization (or BiT, or fp16) of the kept weights; ``pinned``: frozen qparams."""
    if mask is None:
        v = w
    elif lam is not None:
        v = _SRSTE.apply(w, mask, lam)
    else:
        v = w * mask
    if cfg.bits == 16:
        return _Identity.apply(v)
    if cfg.bits == 1:
        per_tensor = cfg.granularity == "per_tensor"
        d = v.detach()
        if pinned is not None:
            scale, center = pinned[0], torch.zeros((), dtype=d.dtype)
        elif mask is None:
            scale = d.abs().mean().reshape(1, 1) if per_tensor else d.abs().mean(dim=1, keepdim=True)
            center = d.mean() if per_tensor else d.mean(dim=1, keepdim=True)
        else:  # BiT's means over the kept weights only: sums of the masked weights (the zeros add exactly,
            # and summing the masked tensor rather than the gathered kept values fixes the order, hence the
            # last bit) over the kept count
            m = mask.to(d.dtype)
            if per_tensor:
                scale, center = (d.abs().sum() / m.sum()).reshape(1, 1), d.sum() / m.sum()
            else:
                scale = d.abs().sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True)
                center = d.sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True)
        wb = torch.where(d - center >= 0, 1.0, -1.0).to(d.dtype) * scale
        if mask is not None:
            wb = wb * mask  # pruned weights stay 0
        return _ClippedSTE.apply(v, wb)
    scale, zp = pinned if pinned is not None else reference_qparams(cfg, v)
    qmin, qmax = qrange(cfg.bits, cfg.symmetric)
    s = scale.reshape(-1).to(torch.float32)
    z = torch.zeros_like(s, dtype=torch.int32) if zp is None else zp.reshape(-1).to(torch.int32)
    if s.numel() == 1:
        return torch.fake_quantize_per_tensor_affine(v, s, z, qmin, qmax)
    out = torch.fake_quantize_per_channel_affine(v.reshape(s.numel(), -1), s, z, 0, qmin, qmax)
    return out.reshape(v.shape)


# --- the fused path -------------------------------------------------------------------------------------


def fused_module(cfg: WeightQuant, sparsity: Sparsity | None, lam: float | None) -> FakeCompressedWeight:
    schedule = MaskSchedule(SparsitySchedule(sr_ste=lam))
    return FakeCompressedWeight(Compression(weight=cfg, sparsity=sparsity), (OUT, FAN_IN), schedule)


def run_both(cfg, sparsity, lam, w0, *, freeze=False):  # noqa: ANN001, ANN202
    """(fused output, fused grad, reference output, reference grad) for the same weight and upstream gradient."""
    param = fused_module(cfg, sparsity, lam)
    mask = None
    if sparsity is not None:
        with torch.no_grad():
            param.sparsifier.multiplier(w0)  # computes the mask from w0, as the first forward does
        mask = param.sparsifier.mask.clone()
    pinned = None
    if freeze:  # qparams pinned to those of the original weights, then the weights move: some now clip
        masked = w0 if mask is None else w0 * mask
        scale, zp = reference_qparams(cfg, masked) if cfg.bits > 1 else (masked.abs().mean().reshape(1, 1), None)
        if cfg.bits == 1 and cfg.granularity != "per_tensor":
            scale = masked.abs().mean(dim=1, keepdim=True)
        param.quantizer.freeze(scale, zp)
        pinned = (param.quantizer.scale.clone(), None if zp is None else param.quantizer.zero_point.clone())
        w0 = w0 * 1.7
    upstream = torch.randn(OUT, FAN_IN, generator=torch.Generator().manual_seed(5), dtype=w0.dtype)
    upstream[4, :4] = torch.tensor([-0.0, 0.0, -1.0, 2.0])
    w1 = w0.clone().requires_grad_(True)
    out1 = param(w1)
    out1.backward(upstream)
    w2 = w0.clone().requires_grad_(True)
    out2 = reference(cfg, w2, mask, lam, pinned)
    out2.backward(upstream)
    return out1.detach(), w1.grad, out2.detach(), w2.grad


@pytest.mark.parametrize("sparsity", MASKS, ids=lambda s: str(s or "dense"))
@pytest.mark.parametrize("name", list(WEIGHTS))
def test_fused_forward_and_gradient_equal_the_composition(name, sparsity):
    cfg = WEIGHTS[name]
    for seed in range(4):
        w = weight(seed) if seed < 3 else weight(seed).clamp(-1, 1)  # all |w| <= 1: BiT's STE passes everything
        for lam in [None] if sparsity is None else [None, 2e-4]:
            out, grad, ref_out, ref_grad = run_both(cfg, sparsity, lam, w)
            assert same_bits(out, ref_out), (name, seed, lam)
            assert same_bits(grad, ref_grad), (name, seed, lam)


@pytest.mark.parametrize("sparsity", [None, Sparsity(2, 4)], ids=lambda s: str(s or "dense"))
@pytest.mark.parametrize("name", [n for n in WEIGHTS if WEIGHTS[n].bits < 16])
def test_frozen_qparams_clip_like_the_kernels(name, sparsity):
    """Pinned scales (a reloaded model) with weights that grew: the clamp and the STE mask are in play."""
    cfg = WEIGHTS[name]
    out, grad, ref_out, ref_grad = run_both(cfg, sparsity, None, weight(7), freeze=True)
    assert same_bits(out, ref_out) and same_bits(grad, ref_grad)
    if cfg.bits > 1:  # the check means something only if some weights fell outside the grid
        assert (grad == 0).sum() > (0 if sparsity is None else OUT * FAN_IN // 2)


@pytest.mark.parametrize("name", ["int8", "int4", "int2-subchannel", "binary", "binary-per-channel"])
def test_float64_weights(name):
    """Double-precision weights: the kernels' float32 scale and reciprocal, the rest in float64."""
    out, grad, ref_out, ref_grad = run_both(WEIGHTS[name], Sparsity(2, 4), None, weight(3, torch.float64))
    assert out.dtype == torch.float64 and same_bits(out, ref_out) and same_bits(grad, ref_grad)


@pytest.mark.parametrize("name", ["int8", "int4", "int4-per-tensor", "binary"])
def test_accelerator_path_equals_the_cpu_shortcut(name, monkeypatch):
    """Off the CPU the in-range shortcut (a host-side check) is not taken: both paths give the same bits."""
    cfg = WEIGHTS[name]
    cpu = run_both(cfg, Sparsity(2, 4), None, weight(4))
    monkeypatch.setattr(_quant, "_host_checks", lambda t: False)
    general = run_both(cfg, Sparsity(2, 4), None, weight(4))
    assert all(same_bits(a, b) for a, b in zip(cpu, general))
    assert same_bits(general[0], general[2]) and same_bits(general[1], general[3])


def test_tiny_scales_take_the_general_path():
    """A row whose scale max|w| / qmax is subnormal (2^-127): the in-range argument fails, the clamp decides.

    (Below 2^-128 the kernels' ``1 / scale`` is infinite and they convert an infinity to an integer, which
    C++ leaves undefined; no comparison is made there.)
    """
    w = weight(1)
    w[5] = torch.linspace(-127 * 2.0**-127, 127 * 2.0**-127, FAN_IN)
    w[6] = torch.linspace(-1, 1, FAN_IN) * 3e38  # huge but finite
    assert 0 < float(w[5].abs().max()) / 127 < torch.finfo(torch.float32).tiny
    out, grad, ref_out, ref_grad = run_both(WEIGHTS["int8"], None, None, w)
    assert same_bits(out, ref_out) and same_bits(grad, ref_grad)


def test_quantizer_alone_and_no_grad_calls():
    q = IntWeightQuantizer(WEIGHTS["int4"], OUT, FAN_IN)
    w = weight(2).requires_grad_(True)
    ref = reference(WEIGHTS["int4"], w.detach(), None, None)
    assert same_bits(q(w).detach(), ref)
    with torch.no_grad():
        assert same_bits(q(w), ref)
    assert same_bits(fake_compress(w.detach(), q.fake), ref)
    w.grad = None
    q(w, None, 2e-4).backward(torch.ones_like(w))  # SR-STE without a mask: nothing is pruned, nothing added
    assert torch.equal(w.grad, torch.ones_like(w))


def test_mask_multiplier_follows_every_write_to_the_mask_buffer():
    """The 0/1 copy is rebuilt after a mask update, ``load_state_dict`` and an in-place write (the packed loader)."""
    schedule = MaskSchedule(SparsitySchedule("few_shot", steps=5))
    sp = NMSparsifier(Sparsity(2, 4), OUT, FAN_IN, schedule).train()
    w = weight(0)
    first = sp.multiplier(w)
    assert torch.equal(first, sp.mask.to(w.dtype)) and sp.multiplier(w * 1) is not None
    w2 = weight(9)
    assert torch.equal(sp.multiplier(w2), sp.mask.to(w.dtype))  # few-shot: recomputed from w2
    assert not torch.equal(sp.mask.to(w.dtype), first)
    other = torch.rand(OUT, FAN_IN) > 0.5
    sp.load_state_dict({"mask": other, "ready": torch.tensor(True)})
    sp.eval()
    assert torch.equal(sp.multiplier(w), other.to(w.dtype))
    sp.mask.logical_not_()
    assert torch.equal(sp.multiplier(w), (~other).to(w.dtype))
    assert torch.equal(sp(w), w * ~other)
    clone = copy.deepcopy(sp)
    clone.mask.fill_(True)
    assert torch.equal(clone.multiplier(w), torch.ones_like(w)) and torch.equal(sp.multiplier(w), (~other).to(w.dtype))
    assert sp.multiplier(w.double()).dtype == torch.float64


def test_mask_update_does_not_touch_a_pending_backward():
    """A second forward that recomputes the mask (few-shot) leaves the first forward's gradient intact."""
    param = fused_module(WEIGHTS["int4"], Sparsity(2, 4), None)
    param.sparsifier._schedule.config = SparsitySchedule("few_shot", steps=5)
    param.train()
    w = weight(0).requires_grad_(True)
    out = param(w)
    kept = param.sparsifier.mask.clone()
    param(weight(8))  # recomputes the mask from other weights
    assert not torch.equal(kept, param.sparsifier.mask)
    out.sum().backward()
    assert torch.equal(w.grad, kept.to(w.dtype))


# --- BiT's elastic binarization of inputs: the fused node against autograd through the composition ---------
# (the reference, facebookresearch/bit transformer/utils_quant.py, is in tests/test_compress_bit.py)


class _RefSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class _RefStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return (x > 0.5).to(x.dtype)  # round(x) clamped to [0, 1]: round(0.5) = 0 (half to even)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ((x >= 0) & (x <= 1)).to(grad.dtype)


class _RefGradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g):  # type: ignore[override]
        ctx.g = g
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad * ctx.g, None


class _RefFloor(torch.autograd.Function):
    """``max(a, 1e-5)`` whose gradient passes to ``a`` everywhere (BiT applies the floor inside its node)."""

    @staticmethod
    def forward(ctx, a):  # type: ignore[override]
        return a.clamp(min=1e-5)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


@pytest.mark.parametrize("negative", [False, True], ids=["alpha>0", "alpha<0"])
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("layout", ["linear", "conv", "heads"])
def test_elastic_binarizer_equals_the_autograd_composition(signed: bool, layout: str, negative: bool) -> None:
    """BiT eq. 4-5 through sub, div, the STE and mul (autograd), against the one fused node.

    ``a = max(alpha, 1e-5)`` with the gradient passed straight to ``alpha`` (BiT floors the step size).
    Signed, ``x_r`` divides by a constant ``a``: ``a * sign(x_r)`` has the derivative ``sign(x_r)`` in
    ``alpha`` (BiT's 1-bit ``ElasticQuantBinarizerSigned``); unsigned, autograd runs through the division
    too (LSQ's step-size gradient, ``ElasticQuantBinarizerUnsigned``).

    Forward: bitwise (the same ``(x - beta) / a`` and ``a * Q``). Gradients: autograd multiplies by
    ``a`` and divides by it again where the closed form does not, and sums ``dalpha`` in another order,
    so they agree to float32 rounding: 1e-6 relative (a few ulps of each sum's largest terms).
    """
    from planner.compress._quant import ElasticBinarizer

    gen = torch.Generator().manual_seed(3)
    shapes = {"linear": ((3, 7, 16), 16, -1, None), "conv": ((3, 16, 9), 16, 1, None),
              "heads": ((3, 4, 7, 8), 32, -1, (1, 4, 1, 8))}  # fmt: skip
    shape, channels, dim, view = shapes[layout]
    cfg = ActQuant(bits=1, symmetric=signed)
    quant = ElasticBinarizer(cfg, channels, dim, view)
    x = torch.randn(shape, generator=gen) * 1.5 + (0.0 if signed else 1.0)
    x[0, 0] = 0.0  # sign(0) = +1 on both sides
    x.requires_grad_(True)
    with torch.no_grad():
        quant.beta.copy_(torch.randn(channels, generator=gen) * 0.1)
    if negative:  # a learnable alpha may cross 0: the output is 1e-5 * Q(x_r), the gradient still reaches alpha
        quant(x.detach())
        with torch.no_grad():
            quant.alpha.neg_()
    out = quant(x)  # initialises alpha from this batch, as in training
    upstream = torch.randn(shape, generator=gen)
    out.backward(upstream)

    alpha = quant.alpha.detach().clone().requires_grad_(True)
    beta = quant.beta.detach().clone().requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    if view is not None:
        b = beta.reshape(view)
    elif dim == -1:
        b = beta
    else:
        b = beta.reshape(1, channels, 1)
    a = _RefGradScale.apply(alpha, 1.0 / math.sqrt(x2.numel()))
    a = _RefFloor.apply(a)
    xr = (x2 - b) / (a.detach() if signed else a)
    ref = (_RefSign.apply(xr) if signed else _RefStep.apply(xr)) * a
    ref.backward(upstream)
    assert same_bits(out.detach(), ref.detach())
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(quant.beta.grad, beta.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(quant.alpha.grad, alpha.grad, rtol=1e-6, atol=1e-6)
    assert quant.alpha.grad != 0
    if not negative:  # at alpha = 1e-5 almost every |x_r| > 1 blocks the STE
        assert x.grad.abs().sum() > 0 and quant.beta.grad.abs().sum() > 0
