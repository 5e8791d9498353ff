"""Fake quantizers: weights (integer grids, BiT binary, fp16) and module inputs (integer, BiT elastic binary).

Weights are 2-D here: ``(out, fan_in)``, the axis along which per-channel and sub-channel scales run
(:attr:`planner.ir.leaf.Leaf.fan_in`); :mod:`planner.compress._apply` reshapes conv kernels to that view.

The integer grid is torch's own (``torch.fake_quantize_per_channel_affine`` /
``torch.fake_quantize_per_tensor_affine``): it rounds, clamps and passes the gradient straight through
(STE, zero outside the clamp range), and it returns exactly ``float(q - zero_point) * scale``, which is
what :func:`dequantize` recomputes from the packed integers, so a reloaded model sees bitwise the same weights.
"""

from __future__ import annotations

import abc
import math

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


class _SignSTE(torch.autograd.Function):
    """``+1`` where ``x >= 0`` else ``-1``; gradient passed where ``|x| <= 1`` (BiT's clipped STE)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class _StepSTE(torch.autograd.Function):
    """``1`` where ``x >= 0.5`` else ``0``; gradient passed where ``0 <= x <= 1`` (BiT's unsigned binarizer)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return (x >= 0.5).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ((x >= 0) & (x <= 1)).to(grad.dtype)


class _BinaryWeightSTE(torch.autograd.Function):
    """Returns a precomputed binary weight; gradient to ``w`` where ``|w| <= 1`` (BiT ``BinaryQuantizer``)."""

    @staticmethod
    def forward(ctx, w: Tensor, wb: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(w)
        return wb

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype), None


class _HalfSTE(torch.autograd.Function):
    """Rounds to float16 and back; identity gradient."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:  # type: ignore[override]
        return w.to(torch.float16).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad


class _GradScale(torch.autograd.Function):
    """Identity forward, gradient times ``g`` (LSQ's step-size gradient scale, used by BiT)."""

    @staticmethod
    def forward(ctx, x: Tensor, g: float) -> Tensor:  # type: ignore[override]
        ctx.g = g
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.g, None


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
    """

    def qparams(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        rows, groups = self.scale.shape
        v = w.detach().reshape(rows * groups, -1)
        qmin, qmax = qrange(self.config.bits, self.config.symmetric)
        if self.config.symmetric:
            lo, hi = torch.aminmax(v, dim=1)  # one pass over the weight instead of abs() then amax()
            scale = torch.maximum(-lo, hi) / qmax
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            return scale.reshape(rows, groups), None
        # pruned weights are zeros, and 0 is always inside the range: they never move the scale
        lo = v.amin(dim=1).clamp(max=0)
        hi = v.amax(dim=1).clamp(min=0)
        scale = (hi - lo) / (qmax - qmin)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
        return scale.reshape(rows, groups), zp.reshape(rows, groups)

    def forward(self, w: Tensor, keep: Tensor | None = None) -> Tensor:
        """Fake-quantizes ``w`` ``(out, fan_in)``; returns the same shape."""
        scale, zp = self.current_qparams(w, keep)
        qmin, qmax = qrange(self.config.bits, self.config.symmetric)
        rows, groups = self.scale.shape
        scale = scale.reshape(-1).to(torch.float32)
        zp_i = torch.zeros_like(scale, dtype=torch.int32) if zp is None else zp.reshape(-1).to(torch.int32)
        if rows == 1 and groups == 1:
            return torch.fake_quantize_per_tensor_affine(w, scale, zp_i, qmin, qmax)
        v = w.reshape(rows * groups, -1)
        out = torch.fake_quantize_per_channel_affine(v, scale, zp_i, 0, qmin, qmax)
        return out.reshape(w.shape)

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
    """BiT weight binarization: ``sign(W - mean(W)) * mean(|W|)`` with a clipped STE.

    ``per_tensor`` uses one mean and one scale (the ``binary`` shorthand); ``per_channel`` one per output
    channel. Once frozen (reloaded), the weight is already ``+-scale`` and is only re-signed around 0.
    """

    def qparams(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        v = w.detach()
        if self.config.granularity == "per_tensor":
            return v.abs().mean().reshape(1, 1), None
        return v.abs().mean(dim=1, keepdim=True), None

    def signs(self, w: Tensor) -> Tensor:
        """``+1`` / ``-1`` of each weight (sign of ``W - mean(W)``; sign of ``W`` once frozen)."""
        v = w.detach()
        if bool(self.frozen):
            center = torch.zeros((), dtype=v.dtype)
        elif self.config.granularity == "per_tensor":
            center = v.mean()
        else:
            center = v.mean(dim=1, keepdim=True)
        return torch.where(v - center >= 0, 1.0, -1.0).to(v.dtype)

    def forward(self, w: Tensor, keep: Tensor | None = None) -> Tensor:
        scale, _ = self.current_qparams(w)
        wb = self.signs(w) * scale
        return _BinaryWeightSTE.apply(w, wb)

    def codes(self, w: Tensor) -> tuple[Tensor, Tensor, None]:
        """Bits ``(out, fan_in)`` (1 for ``+scale``) and the scale."""
        with torch.no_grad():
            scale, _ = self.current_qparams(w)
            return (self.signs(w) > 0).to(torch.int64), scale.clone(), None


class HalfWeightQuantizer(WeightQuantizer):
    """fp16 weights: round to float16 in the forward pass (identity gradient)."""

    def qparams(self, w: Tensor, keep: Tensor | None = None) -> tuple[Tensor, None]:
        return self.scale, None

    def forward(self, w: Tensor, keep: Tensor | None = None) -> Tensor:
        return _HalfSTE.apply(w)


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


class ElasticBinarizer(nn.Module):
    """BiT's elastic binarization of a module input (Liu et al. 2022, eq. 4-5).

    ``x_r = (x - beta) / alpha``; signed: ``alpha * sign(x_r)`` (values ``+-alpha``); unsigned
    (``ActQuant.symmetric = False``, for non-negative inputs): ``alpha * [x_r >= 0.5]`` (values ``{0, alpha}``).
    ``alpha`` is a learnable scalar, initialised from the first training batch as BiT does
    (``2 mean|x|`` signed, ``4 mean|x|`` unsigned), its gradient scaled by ``1 / sqrt(numel)`` (LSQ);
    ``beta`` is a learnable per-channel bias (channels: last dim for linear inputs, dim 1 for convs).
    Gradients: clipped STE to ``x``, and BiT's ``dL/dalpha = sign(x_r) - x_r 1{|x_r| <= 1}`` by autograd.
    """

    def __init__(self, config: ActQuant, channels: int, channel_dim: int) -> None:
        super().__init__()
        self.config = config
        self.channel_dim = channel_dim
        self.alpha = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: Tensor) -> Tensor:
        """Binarizes ``x``: ``(..., C)`` for a linear input, ``(B, C, ...)`` for a conv input."""
        beta = self.beta if self.channel_dim == -1 else self.beta.reshape(_channel_view(x, self.beta.numel(), self.channel_dim))
        if not bool(self.initialized):
            with torch.no_grad():
                mean_abs = (x.detach() - beta).abs().mean()
                self.alpha.fill_(float(2 * mean_abs if self.config.symmetric else 4 * mean_abs) or 1.0)
                self.initialized.fill_(True)
        alpha = _GradScale.apply(self.alpha, 1.0 / math.sqrt(x.numel()))
        xr = (x - beta) / alpha
        q = _SignSTE.apply(xr) if self.config.symmetric else _StepSTE.apply(xr)
        return q * alpha


def make_act_quantizer(config: ActQuant, channels: int, channel_dim: int) -> nn.Module | None:
    """The input quantizer of an activation format, or None for float."""
    if config.is_float:
        return None
    if config.bits == 1:
        return ElasticBinarizer(config, channels, channel_dim)
    return IntActQuantizer(config)
