"""``compress_``: attaches the fake quantizers and N:M masks of a compression plan to a model, in place.

Weights: one ``torch.nn.utils.parametrize`` parametrization per planned leaf (:class:`FakeCompressedWeight`),
so every leaf keeps its class (a ``Parametrized*`` subclass of ``nn.Linear`` / ``nn.Conv1d`` /
``nn.Conv2d``) and its module path: the cost model's leaf paths still name the same modules.

Inputs: the activation quantizer is registered as a child ``input_quantizer`` of the leaf and run by a
forward pre-hook; an attention product (:class:`~planner.nn.attention.Product`) gets one per input,
``input_quantizer`` and ``other_quantizer``. A pre-hook rather than a wrapper module because a wrapper
would move the leaf to ``path.module`` and break the path contract; the child registration puts the
quantizer's learnable ``alpha`` / ``beta`` in ``model.parameters()`` and its calibration in the state dict.
Whether each input quantizer is signed or unsigned is decided from the IR
(:func:`planner.ir.compression.input_formats`: by the producer of the input, unless the rule sets
``symmetric``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import Tensor, nn
from torch.nn.utils import parametrize

from planner.compress._quant import WeightQuantizer, fake_compress, make_act_quantizer, make_weight_quantizer, mask_only
from planner.compress._sparsity import MaskSchedule, NMSparsifier, SparsitySchedule
from planner.errors import CompressionError
from planner.ir.compression import Compression, input_formats
from planner.ir.graph import EncoderGraph
from planner.ir.leaf import Leaf
from planner.nn.attention import Product

__all__ = ["compress_", "FakeCompressedWeight", "compressed_leaves", "CompressionError"]

_LEAF_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


class FakeCompressedWeight(nn.Module):
    """Parametrization of one weight: N:M mask first, then quantization of the kept weights (Algorithm 1).

    The weight is viewed as ``(out, fan_in)`` (conv kernels flattened in their natural order), the axis
    along which N:M groups and sub-channel scales run. Pruned weights are zeros, which lie on every integer
    grid (symmetric grids have no zero point; asymmetric ones keep 0 inside the range), so they stay zero.

    Mask, quantizer and straight-through gradient run as one autograd node (:func:`fake_compress`), with
    the mask kept as a 0/1 float multiplier: the same numbers as ``quantizer(sparsifier(w))``, fewer passes
    over the weight.
    """

    def __init__(self, compression: Compression, shape: tuple[int, ...], schedule: MaskSchedule) -> None:
        super().__init__()
        self.compression = compression
        self.shape = tuple(shape)
        self.out = shape[0]
        self.fan_in = math.prod(shape[1:])
        sp = compression.sparsity
        self.sparsifier = NMSparsifier(sp, self.out, self.fan_in, schedule) if sp is not None else None
        self.quantizer: WeightQuantizer | None = make_weight_quantizer(compression.weight, self.out, self.fan_in)

    def forward(self, w: Tensor) -> Tensor:
        """Fake-compressed ``w`` (any leaf weight shape), one autograd node: mask, quantizer and STE fused."""
        v = w.reshape(self.out, self.fan_in)
        keep = lam = None
        if self.sparsifier is not None:
            keep, lam = self.sparsifier.multiplier(v), self.sparsifier.sr_ste()
        fake = mask_only if self.quantizer is None else self.quantizer.fake
        return fake_compress(v, fake, keep, lam).reshape(w.shape)


def _quantize_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quantizer(args[0]), *args[1:])


def _quantize_operands(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quantizer(args[0]), module.other_quantizer(args[1]))


def _quantize_product(product: Product, comp: Compression, leaf: Leaf | None) -> None:
    """Hooks the quantizers of both inputs of an attention product (by default Q, K, V signed, P unsigned)."""
    formats = input_formats(comp.activation, leaf or Leaf(product.kind, "matmul"))  # no IR: producers unknown
    quantizers = [make_act_quantizer(act, channels, -1, view)
                  for act, (channels, view, _) in zip(formats, product.operands())]  # fmt: skip
    if quantizers[0] is None:
        return
    product.add_module("input_quantizer", quantizers[0])
    product.add_module("other_quantizer", quantizers[1])
    product.register_forward_pre_hook(_quantize_operands)


def compressed_leaves(model: nn.Module) -> dict[str, tuple[nn.Module, FakeCompressedWeight]]:
    """Module path -> (leaf, its weight parametrization) for every leaf :func:`compress_` parametrized."""
    out = {}
    for name, mod in model.named_modules():
        if parametrize.is_parametrized(mod, "weight"):
            for p in mod.parametrizations.weight:
                if isinstance(p, FakeCompressedWeight):
                    out[name] = (mod, p)
    return out


def compress_(model: nn.Module, plan: Mapping[str, Compression] | None = None, *,
              schedule: SparsitySchedule | None = None) -> MaskSchedule:  # fmt: skip
    """Attaches weight fake quantization, N:M masks and input fake quantization to planned leaves, in place.

    Args:
        model: a float :class:`~planner.nn.Encoder` from :func:`planner.nn.build` (or any module with the
            planned paths).
        plan: module path -> :class:`~planner.ir.Compression`; defaults to ``model.compression_plan``. An
            activation format without ``symmetric`` is signed or unsigned per input as the producer named
            by the IR leaf at that path (``model.graph``) is; a module without a graph counts every input
            as signed.
        schedule: when masks are recomputed (default one-shot); change it later through
            ``model.mask_schedule.config``.

    Returns:
        The :class:`MaskSchedule`, also registered as ``model.mask_schedule``; call its ``step()`` after
        every optimizer step.

    Raises:
        CompressionError: a planned path is missing or is not a linear/conv, or the model is already compressed.

    Example:
        >>> import planner, torch
        >>> g = planner.loads('''
        ... format: 1
        ... name: tiny
        ... input: {kind: features, n_mels: 8}
        ... width: 16
        ... frontend: [{kind: conv2d_subsampling, channels: [4]}]
        ... layers: [{kind: transformer, heads: 2, ffn: 32}]
        ... compression: [{layers: all, modules: [ffn], weight: int4, sparsity: "2:4"}]
        ... ''')
        >>> model = planner.materialize(g)     # calls compress_ because the plan is not empty
        >>> type(model.get_submodule("layers.0.feed_forward.intermediate_dense")).__name__
        'ParametrizedLinear'
    """
    plan = dict(model.compression_plan if plan is None else plan)
    if hasattr(model, "mask_schedule"):
        raise CompressionError("the model is already compressed (it has a mask_schedule)")
    graph = getattr(model, "graph", None)  # the IR leaves say what produces each input
    leaves = {path: leaf for path, _, leaf in graph.leaves()} if isinstance(graph, EncoderGraph) else {}
    sched = MaskSchedule(schedule)
    for path, comp in plan.items():
        if comp.is_identity:
            continue
        try:
            leaf = model.get_submodule(path)
        except AttributeError as err:
            raise CompressionError(f"compression plan names {path!r}, which the model does not have") from err
        if isinstance(leaf, Product):
            _quantize_product(leaf, comp, leaves.get(path))
            continue
        if not isinstance(leaf, _LEAF_TYPES):
            raise CompressionError(f"{path}: {type(leaf).__name__} is not a linear, convolution or attention product")
        if comp.sparsity is not None or comp.weight.bits != 32:
            param = FakeCompressedWeight(comp, tuple(leaf.weight.shape), sched)
            # unsafe: skips the trial forward torch runs to check shapes (ours keep them), which would
            # compute N:M masks on the initial weights before any checkpoint is loaded
            parametrize.register_parametrization(leaf, "weight", param, unsafe=True)
        (act,) = input_formats(comp.activation, leaves.get(path))
        quant = make_act_quantizer(act, leaf.in_features if isinstance(leaf, nn.Linear) else leaf.in_channels,
                                   -1 if isinstance(leaf, nn.Linear) else 1)  # fmt: skip
        if quant is not None:
            leaf.add_module("input_quantizer", quant)
            leaf.register_forward_pre_hook(_quantize_input)
    model.add_module("mask_schedule", sched)
    return sched
