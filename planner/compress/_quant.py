"""Fake quantizers: weights (integer grids, BiT binary, fp16) and module inputs (integer, BiT elastic binary).

Weights are 2-D here: ``(out, fan_in)``, the axis along which per-channel and sub-channel scales run
(:attr:`planner.ir.leaf.Leaf.fan_in`); :mod:`planner.compress._apply` reshapes conv kernels to that view.

The integer grid is torch's (``torch.fake_quantize_per_channel_affine`` /
``torch.fake_quantize_per_tensor_affine``): it rounds, clamps and passes the gradient straight through
(STE, zero outside the clamp range), and it returns exactly ``float(q - zero_point) * scale``, which is
what :func:`dequantize` recomputes from the packed integers, so a reloaded model sees bitwise the same weights.
Inputs call those kernels; weights repeat their arithmetic with vectorized tensor operations, fused with
the N:M mask into one autograd node (:func:`fake_compress`), which returns the same bits several times faster.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.ao.quantization.observer import MovingAverageMinMaxObserver

from planner.ir.compression import ActQuant, WeightQuant

__all__ = [
    "WeightQuantizer",
    "IntWeightQuantizer",
    "BinaryWeightQuantizer",
    "HalfWeightQuantizer",
    "IntActQuantizer",
    "ElasticBinarizer",
    "make_weight_quantizer",
    "make_act_quantizer",
    "qrange",
    "dequantize",
]


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer grid: symmetric ``[-(2^(b-1)-1), 2^(b-1)-1]`` (int8 [-127, 127]) or asymmetric ``[0, 2^b-1]``."""
    if symmetric:
        q = 2 ** (bits - 1) - 1
        return -q, q
    return 0, 2**bits - 1


def dequantize(codes: Tensor, scale: Tensor, zero_point: Tensor | None, out: int, fan_in: int) -> Tensor:
    """``(q - zero_point) * scale`` in float32, the same arithmetic as torch's fake-quant kernels.

    Args:
        codes: ``(out, fan_in)`` integers.
        scale: ``(out, G)`` float32, one per group of ``fan_in // G`` consecutive weights.
        zero_point: ``(out, G)`` integer-valued, or None for a symmetric grid.
    """
    groups = scale.shape[-1]
    q = codes.reshape(out * groups, fan_in // groups).to(torch.int64)
    if zero_point is not None:
        q = q - zero_point.reshape(-1, 1).to(torch.int64)
    w = q.to(torch.float32) * scale.reshape(-1, 1).to(torch.float32)
    return w.reshape(out, fan_in)


FakeFn = Callable[[Tensor, "Tensor | None"], tuple[Tensor, "Tensor | None"]]

# Normal float32 range: a scale outside it (subnormal, infinite, NaN) voids the in-range argument of
# IntWeightQuantizer.fake, which then takes its general path.
_TINY = torch.finfo(torch.float32).tiny
_HUGE = torch.finfo(torch.float32).max


class _FakeCompress(torch.autograd.Function):
    """One autograd node for a whole weight: N:M mask, fake quantization and their straight-through gradient.

    ``fake(w, keep)`` returns the fake-compressed weight and the STE multiplier of the quantizer with respect
    to the masked weight (None where it passes everything); ``keep`` is the N:M mask as 0/1 in the weight's
    dtype. The gradient to ``w`` is ``grad * ste * keep`` (what autograd computes through ``w * mask``
    followed by the quantizer's STE), or with SR-STE (``lam``) ``grad * ste + lam * (1 - keep) * w``.
    Multiplying by 0/1 in one step or two gives the same bits, so this equals the unfused composition.
    """

    @staticmethod
    def forward(ctx, w: Tensor, fake: FakeFn, keep: Tensor | None, lam: float | None) -> Tensor:  # type: ignore[override]
        out, ste = fake(w, keep)
        if lam is not None:
            ctx.save_for_backward(ste, 1 - keep, w)  # keep is not None: SR-STE is a property of N:M masks
        elif keep is not None:
            ctx.save_for_backward(keep if ste is None else ste * keep, None, None)
        else:
            ctx.save_for_backward(ste, None, None)
        ctx.lam = lam
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        mult, pruned, w = ctx.saved_tensors
        g = grad if mult is None else grad * mult
        if ctx.lam is not None:
            g = g + ctx.lam * pruned * w
        return g, None, None, None


def fake_compress(w: Tensor, fake: FakeFn, keep: Tensor | None = None, lam: float | None = None) -> Tensor:
    """Applies ``fake`` (see :class:`_FakeCompress`) with its STE gradient; a plain call when no gradient is needed.

    Args:
        w: ``(out, fan_in)`` weight.
        fake: ``(w, keep) -> (fake-compressed weight, STE multiplier or None)``, run without autograd.
        keep: N:M mask as 0/1 in ``w``'s dtype, or None.
        lam: SR-STE decay, or None; without ``keep`` no weight is pruned and its term is 0.
    """
    if keep is None:
        lam = None
    if torch.is_grad_enabled() and w.requires_grad:
        return _FakeCompress.apply(w, fake, keep, lam)
    with torch.no_grad():
        return fake(w, keep)[0]


def mask_only(w: Tensor, keep: Tensor | None) -> tuple[Tensor, None]:
    """The ``fake`` of a weight that is masked but not quantized (float32 N:M)."""
    return (w if keep is None else w * keep), None


def _host_checks(t: Tensor) -> bool:
    """Whether a host-side test of a few values is cheaper than an elementwise mask (it is on the CPU, where
    reading a scalar is not a device synchronisation)."""
    return t.device.type == "cpu"


class WeightQuantizer(nn.Module, abc.ABC):
    """Base of weight fake quantizers on a ``(out, fan_in)`` view.

    ``scale`` / ``zero_point`` buffers hold the quantization parameters of the last :meth:`freeze`; while
    ``frozen`` is false they are recomputed from the weight at every call (USM-Lite: max|W_j| / qmax).
    :func:`planner.load_packed` freezes them to the exported values so the reloaded weights are exact.
    """

    config: WeightQuant

    def __init__(self, config: WeightQuant, out: int, fan_in: int) -> None:
        super().__init__()
        self.config = config
        self.out, self.fan_in = out, fan_in
        groups = config.group_count(fan_in)
        rows = 1 if config.granularity == "per_tensor" else out
        self.register_buffer("scale", torch.ones(rows, groups))
        self.register_buffer("zero_point", torch.zeros(rows, groups))
        self.register_buffer("frozen", torch.tensor(False))

    @abc.abstractmethod
    def qparams(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Scale and zero point ``(rows, G)`` for the ``(out, fan_in)`` weight ``w`` (zero point None if symmetric)."""
        ...

    @abc.abstractmethod
    def fake(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Fake-compressed ``w * keep`` and the STE multiplier with respect to it (None: all ones); no autograd.

        Args:
            w: ``(out, fan_in)`` weight.
            keep: N:M mask as 0/1 in ``w``'s dtype, applied before quantization, or None.
        """
        ...

    def forward(self, w: Tensor, keep: Tensor | None = None, sr_ste: float | None = None) -> Tensor:
        """Fake-quantizes ``w * keep`` (``(out, fan_in)``, same shape out) in one autograd node with its STE.

        Args:
            w: ``(out, fan_in)`` weight.
            keep: N:M mask as 0/1 in ``w``'s dtype (None: dense).
            sr_ste: SR-STE decay for the pruned weights (with ``keep``), or None.
        """
        return fake_compress(w, self.fake, keep, sr_ste)

    def freeze(self, scale: Tensor, zero_point: Tensor | None) -> None:
        """Pins the quantization parameters (used when loading packed weights)."""
        with torch.no_grad():
            self.scale.copy_(scale.reshape(self.scale.shape))
            if zero_point is not None:
                self.zero_point.copy_(zero_point.reshape(self.zero_point.shape))
            self.frozen.fill_(True)

    def current_qparams(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if bool(self.frozen):
            return self.scale, (None if self.config.symmetric else self.zero_point)
        return self.qparams(w, keep)


class IntWeightQuantizer(WeightQuantizer):
    """USM-Lite eq. 1-2: per-channel (or per-tensor, or sub-channel) integer fake quantization with STE.

    Symmetric: ``s = max|W_g| / qmax``, zero point 0. Asymmetric (int2): ``s = (max - min) / (2^b - 1)``
    over each group with 0 inside the range (as torch.ao's observers do), so zero (and every pruned weight)
    stays exactly representable; zero point ``round(-min / s)``.

    The grid arithmetic is that of torch's fake-quant kernels, written as vectorized tensor operations
    (the kernels run one scalar loop per element, about ten times slower on the CPU):
    ``q = clamp(round(w * (1 / s)) + zp, qmin, qmax)``, output ``(q - zp) * s``, STE mask
    ``qmin <= round(w * (1 / s)) + zp <= qmax``, with ``1 / s`` in float32 as the kernels compute it. Output
    and STE equal the kernels' bit for bit (tests compare them) wherever those are defined: finite weights,
    and ``1 / s`` finite (``s >= 2^-128``; below, the kernels convert an infinity to an integer).
    """

    def qparams(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        rows, groups = self.scale.shape
        v = w.detach().reshape(rows * groups, -1)
        qmin, qmax = qrange(self.config.bits, self.config.symmetric)
        lo, hi = v.amin(dim=1), v.amax(dim=1)  # two vectorized passes: aminmax(dim=) is slower on the CPU
        if self.config.symmetric:
            scale = torch.maximum(-lo, hi) / qmax
            return torch.where(scale > 0, scale, 1.0).reshape(rows, groups), None
        # pruned weights are zeros, and 0 is always inside the range: they never move the scale
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        scale = (hi - lo) / (qmax - qmin)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
        return scale.reshape(rows, groups), zp.reshape(rows, groups)

    def fake(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        v = w.detach() if keep is None else w.detach() * keep
        frozen = bool(self.frozen)
        scale, zp = self.current_qparams(v)
        qmin, qmax = qrange(self.config.bits, self.config.symmetric)
        rows, groups = self.scale.shape
        s32 = scale.reshape(-1, 1).to(torch.float32)  # the kernels take float32 scales
        s, inv = s32.to(v.dtype), torch.reciprocal(s32).to(v.dtype)
        x = v.reshape(rows * groups, -1)
        q = x.mul_(inv) if keep is not None else x * inv  # v is ours when it was masked here
        q.round_()  # half to even, as the kernels' nearbyint
        if zp is None and not frozen and _host_checks(s32) and torch.equal(s32.clamp(_TINY, _HUGE), s32):
            # s = max|w| / qmax from these very weights: |w / s| <= qmax up to a few ulps, so nothing is
            # clamped and the STE passes everything. The kernels go through an integer, which has no -0.
            return q.add_(0.0).mul_(s).reshape(v.shape), None
        zpf = None if zp is None else zp.reshape(-1, 1).to(v.dtype)
        q.add_(0.0 if zpf is None else zpf)
        ste = ((q >= qmin) & (q <= qmax)).to(v.dtype).reshape(v.shape)
        q.clamp_(qmin, qmax)
        if zpf is not None:
            q.sub_(zpf)
        return q.mul_(s).reshape(v.shape), ste

    def codes(self, w: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Integer codes ``(out, fan_in)`` int64, scale and zero point of the weight as :meth:`forward` sees it.

        The codes are read back from the fake-quantized output (``round(w_fq / s) + zp``), so they are the
        kernel's own rounding, ties included.
        """
        with torch.no_grad():
            scale, zp = self.current_qparams(w)
            wq = self.forward(w)
            rows, groups = self.scale.shape
            v = wq.reshape(rows * groups, -1) / scale.reshape(-1, 1)
            q = torch.round(v)
            if zp is not None:
                q = q + zp.reshape(-1, 1)
            return q.to(torch.int64).reshape(w.shape), scale.clone(), None if zp is None else zp.clone()


class BinaryWeightQuantizer(WeightQuantizer):
    """BiT weight binarization: ``sign(W - mean(W)) * mean(|W|)`` with a clipped STE (gradient where ``|W| <= 1``).

    ``per_tensor`` uses one mean and one scale (the ``binary`` shorthand); ``per_channel`` one per output
    channel. Once frozen (reloaded), the weight is already ``+-scale`` and is only re-signed around 0.
    The sign of 0 is ``+1``.

    With an N:M mask the means run over the kept weights only and pruned weights stay exactly 0: the layer
    is a binary matrix on the kept positions, which is what the packed file stores (one bit per kept weight
    plus the mask). Averaging the pruned zeros in would halve a 2:4 layer's scale and shift its center.
    """

    def _mean(self, t: Tensor, keep: Tensor | None = None) -> Tensor:
        """Mean of ``t`` per tensor or per row; over the kept positions when ``keep`` is given (``t`` is
        then already masked, so a sum over all positions is the sum over the kept ones)."""
        if self.config.granularity == "per_tensor":
            if keep is None:
                return t.mean().reshape(1, 1)
            return (t.sum() / keep.sum()).reshape(1, 1)
        if keep is None:
            return t.mean(dim=1, keepdim=True)
        return t.sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True)

    def qparams(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        v = w.detach() if keep is None else w.detach() * keep
        return self._mean(v.abs(), keep), None

    def signs(self, w: Tensor, keep: Tensor | None = None) -> Tensor:
        """``+1`` / ``-1`` of each weight (sign of ``W - mean(W)``, the mean over kept weights when ``keep``
        is given; sign of ``W`` once frozen)."""
        v = w.detach() if keep is None else w.detach() * keep
        center = torch.zeros((), dtype=v.dtype) if bool(self.frozen) else self._mean(v, keep)
        return torch.where(v - center >= 0, 1.0, -1.0).to(v.dtype)

    def fake(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        # One buffer: |v| for the scale and the clip test, then v - center, then the output. With a mask,
        # v = w * keep is computed twice rather than held in a second buffer.
        w = w.detach()
        frozen = bool(self.frozen)
        if keep is None:
            buf = w.abs()
            center = None if frozen else self._mean(w)
        else:
            buf = w * keep
            center = None if frozen else self._mean(buf, keep)
            buf.abs_()
        scale = self.scale.to(w.dtype) if frozen else self._mean(buf, keep)
        ste = None if _host_checks(buf) and bool(buf.amax() <= 1) else (buf <= 1).to(w.dtype)
        src = w if keep is None else torch.mul(w, keep, out=buf)
        if frozen:
            torch.add(src, 0.0, out=buf)  # -0 -> +0: its sign is +1
        else:
            torch.sub(src, center, out=buf).add_(0.0)
        out = torch.copysign(scale, buf, out=buf)
        return (out if keep is None else out.mul_(keep)), ste

    def codes(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor, None]:
        """Bits ``(out, fan_in)`` (1 for ``+scale``) and the scale (``keep``: the N:M mask, as in :meth:`fake`)."""
        with torch.no_grad():
            scale, _ = self.current_qparams(w, keep)
            return (self.signs(w, keep) > 0).to(torch.int64), scale.clone(), None


class HalfWeightQuantizer(WeightQuantizer):
    """fp16 weights: round to float16 in the forward pass (identity gradient)."""

    def qparams(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, None]:
        return self.scale, None

    def fake(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, None]:
        v = w.detach() if keep is None else w.detach() * keep
        return v.to(torch.float16).to(v.dtype), None


def make_weight_quantizer(config: WeightQuant, out: int, fan_in: int) -> WeightQuantizer | None:
    """The quantizer of a weight format, or None for float32."""
    if config.bits == 32:
        return None
    if config.bits == 16:
        return HalfWeightQuantizer(config, out, fan_in)
    if config.bits == 1:
        return BinaryWeightQuantizer(config, out, fan_in)
    return IntWeightQuantizer(config, out, fan_in)


def _channel_view(x: Tensor, channels: int, channel_dim: int) -> list[int]:
    shape = [1] * x.dim()
    shape[channel_dim] = channels
    return shape


class IntActQuantizer(nn.Module):
    """Per-tensor integer fake quantization of a module input.

    The range is an exponential moving average of the batch min/max (torch.ao
    ``MovingAverageMinMaxObserver``, constant 0.01), updated in training mode only (and once on the first
    call if it was never calibrated); symmetric grids ``[-qmax, qmax]`` with ``s = max|x| / qmax``,
    asymmetric (unsigned) ``[0, 2^b - 1]``. Rounding uses ``torch.fake_quantize_per_tensor_affine`` (STE).
    """

    def __init__(self, config: ActQuant) -> None:
        super().__init__()
        if config.symmetric is None:
            raise ValueError("IntActQuantizer needs a resolved ActQuant (symmetric True or False), see input_formats")
        self.config = config
        self.qmin, self.qmax = qrange(config.bits, config.symmetric)
        self.observer = MovingAverageMinMaxObserver(
            averaging_constant=0.01,
            dtype=torch.qint8 if config.symmetric else torch.quint8,
            qscheme=torch.per_tensor_symmetric if config.symmetric else torch.per_tensor_affine,
            quant_min=self.qmin,
            quant_max=self.qmax,
        )
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))
        self.register_buffer("calibrated", torch.tensor(False))

    def forward(self, x: Tensor) -> Tensor:
        """Fake-quantizes ``x`` (any shape)."""
        if self.training or not bool(self.calibrated):
            self.observer(x.detach())
            scale, zp = self.observer.calculate_qparams()
            with torch.no_grad():
                self.scale.copy_(scale.reshape(1))
                self.zero_point.copy_(zp.reshape(1))
                self.calibrated.fill_(True)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.qmin, self.qmax)


def _above(t: Tensor) -> Tensor:
    """``[t > 0]`` as 0/1 in ``t``'s dtype, in place.

    Written as ``sign(relu(t))`` because every op here stays in floating point: on the CPU, comparisons that
    produce bool tensors, ``torch.where`` and float-times-bool products run 5 to 30 times slower than a
    float subtraction of the same size (they leave ATen's vectorized float loops), which made them most of
    BiT's training-step overhead. Exact: ``t`` comes from a subtraction of two distinct floats or of equal
    ones, whose sign rounding never flips.
    """
    return t.clamp_(min=0).sign_()


# BiT's reference (facebookresearch/bit, transformer/utils_quant.py: ElasticQuantBinarizerSigned and
# ElasticQuantBinarizerUnsigned) floors the step size at this value before using it
# (``alpha = torch.where(alpha > eps, alpha, eps)``).
_ALPHA_EPS = 1e-5


class _ElasticBinarize(torch.autograd.Function):
    """BiT's elastic binarization in one autograd node (forward and its gradients in closed form).

    ``a = max(alpha, 1e-5)`` (the reference floors the step size), ``x_r = (x - beta) / a``; output
    ``a * Q(x_r)`` with ``Q = sign`` (signed: ``+-1``, ``sign(0) = +1``) or ``Q = round(x_r)`` clamped to
    ``[0, 1]``, that is ``[x_r > 0.5]`` (unsigned; ``round`` is half to even, so ``x_r = 0.5`` gives 0, as in
    the reference). With ``P`` the STE's pass mask (``|x_r| <= 1`` signed, ``0 <= x_r <= 1`` unsigned) and
    ``s = 1 / sqrt(numel)`` (LSQ's gradient scale with ``Qp = 1``)::

        dL/dx     = g * P                                   (a * P * 1/a)
        dL/dbeta  = -sum(g * P) over the broadcast dims
        dL/dalpha = s * sum(g * Q(x_r))                     signed: the exact derivative of a * sign(x_r)
        dL/dalpha = s * sum(g * (Q(x_r) - x_r * P))         unsigned: LSQ's step-size gradient on {0, 1}

    These are the backward passes of BiT's ``ElasticQuantBinarizerSigned`` (``num_bits == 1`` branch:
    ``sum(sign(x) * g) * grad_scale``) and ``ElasticQuantBinarizerUnsigned`` (``Qp * [x_r > 1] +
    (round(x_r) - x_r) * [0 <= x_r <= 1]``), read from facebookresearch/bit ``transformer/utils_quant.py``;
    the gradient passes to ``alpha`` even where the floor applies, as there. One node with float-only
    arithmetic (see :func:`_above`) and one saved tensor (``x_r``) instead of several.
    """

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, beta: Tensor, signed: bool, scale: float) -> Tensor:  # type: ignore[override]
        a = alpha.clamp(min=_ALPHA_EPS)  # NaN stays NaN: a broken alpha is not hidden
        xr = (x - beta).div_(a).add_(0.0)  # + 0.0: -0 becomes +0, whose sign is +1
        out = torch.copysign(a, xr) if signed else _q(xr, signed).mul_(a)
        ctx.save_for_backward(xr)
        ctx.signed, ctx.scale = signed, scale
        ctx.alpha_shape, ctx.beta_shape = alpha.shape, beta.shape
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:  # type: ignore[override]
        (xr,) = ctx.saved_tensors
        if ctx.signed:  # P = 1 - [|x_r| > 1]
            passed = _above(xr.abs().sub_(1)).neg_().add_(1)
        else:  # P = (1 - [x_r < 0]) (1 - [x_r > 1])
            passed = _above(xr.neg()).neg_().add_(1).mul_(_above(xr - 1).neg_().add_(1))
        gx = passed.mul_(g)
        # dot products (read-only passes): sum(g Q), and for the unsigned set also - sum(gx x_r)
        dalpha = torch.dot(g.reshape(-1), _q(xr, ctx.signed).reshape(-1))
        if not ctx.signed:
            dalpha = dalpha - torch.dot(gx.reshape(-1), xr.reshape(-1))
        dalpha = dalpha.mul_(ctx.scale).reshape(ctx.alpha_shape)
        dbeta = gx.sum_to_size(ctx.beta_shape).neg()
        return gx, dalpha, dbeta, None, None


def _q(xr: Tensor, signed: bool) -> Tensor:
    """``Q(x_r)``: ``copysign(1, x_r)`` (``x_r`` has no -0), or ``[x_r > 0.5] = max(sign(x_r - 0.5), 0)``."""
    if signed:
        return torch.copysign(torch.ones((), dtype=xr.dtype), xr)
    return _above(xr - 0.5)


class ElasticBinarizer(nn.Module):
    """BiT's elastic binarization of a module input (Liu et al. 2022, eq. 4-5).

    ``x_r = (x - beta) / alpha``; signed: ``alpha * sign(x_r)`` (values ``+-alpha``); unsigned
    (``ActQuant.symmetric = False``, for non-negative inputs): ``alpha * [x_r > 0.5]`` (values ``{0, alpha}``).
    ``alpha`` is a learnable scalar, initialised from the first batch as BiT does (``2 mean|x|`` signed,
    ``4 mean|x|`` unsigned) and floored at ``1e-5`` where it is used, its gradient scaled by
    ``1 / sqrt(numel)`` (LSQ); ``beta`` is a learnable per-channel bias (channels: last dim for linear
    inputs, dim 1 for convs). Gradients (:class:`_ElasticBinarize`, one autograd node): clipped STE to
    ``x``; to ``alpha``, signed ``sum(g * sign(x_r))`` (the exact derivative of ``alpha * sign(x_r)``),
    unsigned ``sum(g * (Q(x_r) - x_r 1{0 <= x_r <= 1}))``, as BiT's reference code
    (facebookresearch/bit ``transformer/utils_quant.py``) computes them.

    Example:
        >>> import torch
        >>> from planner.ir.compression import ActQuant
        >>> quant = ElasticBinarizer(ActQuant(bits=1, symmetric=True), channels=4, channel_dim=-1)
        >>> y = quant(torch.randn(2, 3, 4))
        >>> sorted({round(v / float(quant.alpha), 6) for v in y.flatten().tolist()})
        [-1.0, 1.0]
    """

    def __init__(self, config: ActQuant, channels: int, channel_dim: int, view: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if config.symmetric is None:
            raise ValueError("ElasticBinarizer needs a resolved ActQuant (symmetric True or False), see input_formats")
        self.config = config
        self.channel_dim = channel_dim
        self.view = view
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: Tensor) -> Tensor:
        """Binarizes ``x``: ``(..., C)`` for a linear input, ``(B, C, ...)`` for a conv input, or any
        layout whose channels ``beta.reshape(view)`` broadcasts over (attention products)."""
        if self.view is not None:
            beta = self.beta.reshape(self.view)
        elif self.channel_dim == -1:
            beta = self.beta
        else:
            beta = self.beta.reshape(_channel_view(x, self.beta.numel(), self.channel_dim))
        if not bool(self.initialized):
            with torch.no_grad():
                mean_abs = (x.detach() - beta).abs().mean()
                self.alpha.fill_(float(2 * mean_abs if self.config.symmetric else 4 * mean_abs) or 1.0)
                self.initialized.fill_(True)
        return _ElasticBinarize.apply(x, self.alpha, beta, bool(self.config.symmetric), 1.0 / math.sqrt(x.numel()))


def make_act_quantizer(config: ActQuant, channels: int, channel_dim: int,
                       view: tuple[int, ...] | None = None) -> nn.Module | None:  # fmt: skip
    """The input quantizer of an activation format, or None for float.

    ``config`` is resolved (``symmetric`` True or False: :func:`planner.ir.compression.input_formats` decides
    it from the producer of the input). ``channels`` / ``channel_dim`` place BiT's per-channel ``beta``
    (``view``: a shape it is reshaped to instead, for inputs whose channels are spread over several dims,
    such as per-head Q/K/V).
    """
    if config.is_float:
        return None
    if config.bits == 1:
        return ElasticBinarizer(config, channels, channel_dim, view)
    return IntActQuantizer(config)
