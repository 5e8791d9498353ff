"""BiT W1A1 against its source: the learned scale's gradient, the two activation sets, the shipped W1A1 files.

The reference is BiT's public code (Liu et al. 2022; facebookresearch/bit): ``transformer/utils_quant.py``
(``ElasticQuantBinarizerSigned`` / ``ElasticQuantBinarizerUnsigned`` at one bit, ``AlphaInit``),
``transformer/modeling_bert_quant.py`` (which inputs take the unsigned set) and ``quant_task_distill_glue.py``
(ReLU FFNs, ``sym_quant_ffn_attn`` false). The formulas below are written from that code, not from
:mod:`planner.compress._quant`.
"""

from __future__ import annotations

import math

import pytest
import torch

import planner
from planner.compress._quant import ElasticBinarizer, IntActQuantizer
from planner.config import from_data, to_data
from planner.errors import ConfigError, FieldError
from planner.ir.compression import NONNEGATIVE_PRODUCERS, ActQuant, CompressionRule, input_formats
from planner.ir.io import from_dict
from planner.nn.attention import Product
from planner.search import load_space

W1A1_STUDY = "studies/usm-lite/small/w1a1-transformer.yaml"

# Every producer case: ReLU FFNs in all three block kinds (a GELU one too), the two subsampling frontends
# (post-ReLU convs and projections), a reused map (its P is still a softmax), time reduction and recovery.
MIXED_CONV2D = """
format: 1
name: mixed-conv2d
input: {kind: features, n_mels: 16}
width: 32
frontend: [{kind: conv2d_subsampling, channels: [8, 4]}]
layers:
  - {kind: conformer, heads: 2, ffn: 64, kernel: 3, activation: relu, positional: relative}
  - {kind: transformer, heads: 2, ffn: 64, activation: relu}
  - {kind: transformer, heads: 2, ffn: 64, activation: gelu, norm: pre, attention: {kind: reuse, source: 1}}
compression:
  - {layers: all, weight: binary, activation: binary}
"""
MIXED_DWSEP = """
format: 1
name: mixed-dwsep
input: {kind: features, n_mels: 16}
width: 32
frontend: [{kind: dwsep_subsampling, channels: 8}]
layers:
  - {kind: squeezeformer, heads: 2, ffn: 64, kernel: 3, activation: relu}
  - {kind: time_reduction, stride: 2, kernel: 3}
  - {kind: squeezeformer, heads: 2, ffn: 64, kernel: 3, activation: relu, ordering: cfmf}
  - {kind: time_recovery, source: 1}
  - {kind: conformer, heads: 2, ffn: 64, kernel: 3}
compression:
  - {layers: all, weight: binary, activation: binary}
"""
MODELS = {"w1a1-study": None, "mixed-conv2d": MIXED_CONV2D, "mixed-dwsep": MIXED_DWSEP}


def graph_of(name: str) -> planner.EncoderGraph:
    text = MODELS[name]
    return planner.load(W1A1_STUDY) if text is None else planner.loads(text)


def features(graph: planner.EncoderGraph, frames: int = 60) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, frames, graph.spec.input.n_mels, generator=gen)


def binarizers(model: torch.nn.Module) -> dict[str, ElasticBinarizer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ElasticBinarizer)}


def broadcast_beta(quant: ElasticBinarizer, x: torch.Tensor) -> torch.Tensor:
    """The per-channel bias laid over ``x`` (last dim, dim 1 of a conv input, or the product's view)."""
    beta = quant.beta.detach()
    if quant.view is not None:
        return beta.reshape(quant.view)
    if quant.channel_dim == -1:
        return beta
    shape = [1] * x.dim()
    shape[quant.channel_dim] = beta.numel()
    return beta.reshape(shape)


def bit_alpha_grad(
    x: torch.Tensor, beta: torch.Tensor, alpha: float, g: torch.Tensor, signed: bool
) -> tuple[float, float]:
    """BiT's one-bit step-size gradient and the sum of the magnitudes of its terms (for the tolerance).

    From facebookresearch/bit ``transformer/utils_quant.py``: the input is the bias-shifted activation (BiT
    adds a ``LearnableBias``; here ``beta`` is subtracted), the step size is floored at ``1e-5``, and the
    gradient scale is ``1 / sqrt(numel * Qp)`` with ``Qp = 1``. Signed (``ElasticQuantBinarizerSigned``,
    ``num_bits == 1``): ``sum(sign(input) * g) * grad_scale``. Unsigned (``ElasticQuantBinarizerUnsigned``,
    ``Qn = 0``, ``Qp = 1``): ``sum((Qp [q > Qp] + (round(q) - q) [Qn <= q <= Qp]) * g) * grad_scale`` with
    ``q = input / alpha``. The elementwise part runs in float32 as BiT's does (so every element falls on
    the same side of every threshold); the sum runs in float64.
    """
    inp = x - beta
    alpha = max(alpha, 1e-5)
    grad_scale = 1.0 / math.sqrt(inp.numel() * 1)
    if signed:
        # torch.sign(0) is 0 in BiT's code; the forward here maps 0 to +alpha, and its derivative is +1
        term = torch.where(inp >= 0, 1.0, -1.0)
    else:
        q = inp / alpha
        small, big = (q < 0).float(), (q > 1).float()
        middle = 1.0 - small - big
        term = small * 0 + big * 1 + middle * (q.round() - q)
    prod = term.double() * g.double()
    return float(prod.sum()) * grad_scale, float(prod.abs().sum()) * grad_scale


# --- 1. the gradient of alpha -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_alpha_gradient_is_bits_reference_on_every_binarizer(name: str) -> None:
    """Every elastic binarizer of a materialized W1A1 model: ``alpha.grad`` against BiT's formula.

    Tolerance: both sides add the same float32 products; they differ only in the summation (torch's
    float32 dot product against a float64 sum), whose error is a few float32 ulps of the sum of the terms'
    magnitudes: 1e-5 of that sum bounds it with a margin (pairwise summation: ~log2(n) * 6e-8 <= 1.1e-6
    for n up to 10^5 terms).
    """
    graph = graph_of(name)
    torch.manual_seed(0)
    model = planner.materialize(graph).train()
    quants = binarizers(model)
    assert quants, "a W1A1 model has elastic binarizers"
    calls: dict[str, list[list[torch.Tensor]]] = {n: [] for n in quants}

    def record(qname: str):
        def hook(module, args, out):
            entry = [args[0].detach().clone()]
            calls[qname].append(entry)
            out.register_hook(lambda g: entry.append(g.detach().clone()))

        return hook

    for qname, quant in quants.items():
        quant.register_forward_hook(record(qname))
    x = features(graph)
    out = model(x).output
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    (out * upstream).sum().backward()
    reached = 0
    for qname, quant in quants.items():
        assert calls[qname], f"{qname} never ran"
        alpha = float(quant.alpha.detach())
        ref = mag = 0.0
        for inp, g in calls[qname]:
            r, m = bit_alpha_grad(inp, broadcast_beta(quant, inp), alpha, g, bool(quant.config.symmetric))
            ref, mag = ref + r, mag + m
        got = float(quant.alpha.grad)
        assert abs(got - ref) <= 1e-5 * mag, f"{qname}: alpha.grad {got} != BiT's {ref} (terms {mag})"
        reached += mag > 0
    # where all of a layer's probabilities fall below alpha / 2 at initialisation, P V is 0 and no gradient
    # reaches V's side of that layer (then both sides must be exactly 0); most binarizers get one
    assert reached >= 0.8 * len(quants), f"only {reached} of {len(quants)} binarizers got a gradient"


def test_the_signed_gradient_is_not_the_lsq_term() -> None:
    """On Gaussian inputs BiT's ``sum(g sign(x_r))`` and the LSQ-style ``sum(g (sign(x_r) - x_r 1{|x_r|<=1}))``
    differ (the issue: even in sign); the binarizer gives the first. Tolerance as above (float32 sums)."""
    gen = torch.Generator().manual_seed(0)
    quant = ElasticBinarizer(ActQuant(bits=1, symmetric=True), channels=16, channel_dim=-1)
    x = torch.randn(4, 50, 16, generator=gen)
    g = torch.randn(4, 50, 16, generator=gen) + 0.3 * x  # an upstream gradient correlated with x
    quant(x).backward(g)
    ref, mag = bit_alpha_grad(x, quant.beta.detach(), float(quant.alpha.detach()), g, True)
    xr = x / float(quant.alpha.detach())
    lsq = float(((torch.where(xr >= 0, 1.0, -1.0) - xr * (xr.abs() <= 1)) * g).double().sum()) / math.sqrt(x.numel())
    assert abs(float(quant.alpha.grad) - ref) <= 1e-5 * mag
    assert abs(lsq - ref) > 0.1 * abs(ref)


def test_unsigned_rounding_tie_and_alpha_floor_follow_bit() -> None:
    """Unsigned: ``round(x_r)`` clamped to [0, 1], half to even, so ``x_r = 0.5`` gives 0 (exact).
    A step size below ``1e-5`` is used as ``1e-5`` (BiT's ``torch.where(alpha > eps, alpha, eps)``), and
    the gradient still reaches ``alpha``."""
    quant = ElasticBinarizer(ActQuant(bits=1, symmetric=False), channels=4, channel_dim=-1)
    with torch.no_grad():
        quant.alpha.fill_(2.0)
        quant.initialized.fill_(True)
    x = torch.tensor([0.0, 0.999, 1.0, 1.001, 2.0, 3.0, 5.0, -1.0]).reshape(2, 4)  # x_r = x / 2
    assert quant(x).flatten().tolist() == [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 0.0]

    signed = ElasticBinarizer(ActQuant(bits=1, symmetric=True), channels=4, channel_dim=-1)
    with torch.no_grad():
        signed.alpha.fill_(-0.5)
        signed.initialized.fill_(True)
    x = torch.tensor([[0.3, -0.2, 0.0, -1e-7]])
    y = signed(x)
    assert torch.equal(y.detach(), torch.tensor([[1.0, -1.0, 1.0, -1.0]]) * torch.tensor(1e-5))
    y.backward(torch.tensor([[1.0, -1.0, 1.0, 1.0]]))
    # sum(g sign(x)) / sqrt(numel) = (1 + 1 + 1 - 1) / 2, exact in float32
    assert float(signed.alpha.grad) == 1.0


# --- 2. signedness follows the producer ----------------------------------------------------------------


def _operand_minima(graph: planner.EncoderGraph) -> dict[tuple[str, int], float]:
    """The smallest value each input of each quantizable leaf sees in the float model (one forward)."""
    float_graph = from_dict({**_spec_data(graph), "compression": []})
    torch.manual_seed(0)
    model = planner.materialize(float_graph).eval()
    seen: dict[tuple[str, int], float] = {}

    def record(path: str):
        def hook(module, args):
            for i, a in enumerate(args[:2] if isinstance(module, Product) else args[:1]):
                key = (path, i)
                seen[key] = min(seen.get(key, math.inf), float(a.min()))

        return hook

    for path, _, leaf in graph.leaves():
        if leaf.quantizable:
            model.get_submodule(path).register_forward_pre_hook(record(path))
    with torch.no_grad():
        model(features(graph))
    return seen


def _spec_data(graph: planner.EncoderGraph) -> dict:
    import yaml

    return yaml.safe_load(planner.dumps(graph))


@pytest.mark.parametrize("name", list(MODELS))
def test_the_ir_names_the_non_negative_producers(name: str) -> None:
    """Where the IR names a non-negative producer the float model's input has no negative value, and every
    other input of a quantizable leaf has some (so no non-negative input goes unnamed)."""
    graph = graph_of(name)
    minima = _operand_minima(graph)
    named = 0
    for path, _, leaf in graph.leaves():
        if not leaf.quantizable:
            continue
        for i in range(2 if leaf.is_product else 1):
            nonneg = i < len(leaf.producers) and leaf.producers[i] in NONNEGATIVE_PRODUCERS
            named += nonneg
            if nonneg:
                assert minima[path, i] >= 0, f"{path} input {i}: the IR says {leaf.producers[i]}, saw {minima[path, i]}"
            else:
                assert minima[path, i] < 0, f"{path} input {i} is never negative, but the IR names no producer for it"
    assert named > 0


@pytest.mark.parametrize("name", list(MODELS))
def test_binarizers_take_bits_two_sets_from_the_producer(name: str) -> None:
    """W1A1 without an explicit ``symmetric``: ``{0, alpha}`` exactly where the input is non-negative (ReLU
    outputs, the attention probabilities), ``{-alpha, +alpha}`` elsewhere; the values are exact."""
    graph = graph_of(name)
    torch.manual_seed(0)
    model = planner.materialize(graph).train()
    leaves = {path: leaf for path, _, leaf in graph.leaves()}
    outputs: dict[str, set[float]] = {}
    for qname, quant in binarizers(model).items():
        owner, which = qname.rsplit(".", 1)
        i = 0 if which == "input_quantizer" else 1
        leaf = leaves[owner]
        nonneg = i < len(leaf.producers) and leaf.producers[i] in NONNEGATIVE_PRODUCERS
        assert quant.config.symmetric is (not nonneg), qname
        quant.register_forward_hook(
            lambda m, a, out, q=qname: outputs.setdefault(q, set()).update(out.unique().tolist())
        )
    model(features(graph))
    unsigned = 0
    for qname, quant in binarizers(model).items():
        a = float(quant.alpha.detach())
        allowed = {-a, a} if quant.config.symmetric else {0.0, a}
        assert outputs[qname] <= allowed, qname
        unsigned += not quant.config.symmetric
    assert unsigned > 0
    # the products agree with the materializer's own account of their operands
    for path, leaf in leaves.items():
        if leaf.is_product:
            product = model.get_submodule(path)
            ops = [signed for _, _, signed in product.operands()]
            assert [f.symmetric for f in input_formats(ActQuant(bits=1), leaf)] == ops, path


def test_an_explicit_symmetric_wins_and_integer_grids_follow_too() -> None:
    text = (
        MIXED_CONV2D.replace("compression:\n  - {layers: all, weight: binary, activation: binary}\n", "")
        + """
compression:
  - {layers: 1, modules: [fc2], weight: binary, activation: {bits: 1, symmetric: true}}
  - {layers: 1, modules: [q], weight: binary, activation: {bits: 1, symmetric: false}}
  - {layers: 0, modules: [ffn], activation: int8}
  - {layers: 2, modules: [context], activation: {bits: 8, symmetric: true}}
"""
    )
    model = planner.materialize(planner.loads(text))
    assert model.get_submodule("layers.1.feed_forward.output_dense.input_quantizer").config.symmetric is True
    assert model.get_submodule("layers.1.attention.q_proj.input_quantizer").config.symmetric is False
    after_relu = model.get_submodule("layers.0.ffn1.fc2.input_quantizer")
    before = model.get_submodule("layers.0.ffn1.fc1.input_quantizer")
    assert isinstance(after_relu, IntActQuantizer) and (after_relu.qmin, after_relu.qmax) == (0, 255)
    assert isinstance(before, IntActQuantizer) and (before.qmin, before.qmax) == (-127, 127)
    context = model.get_submodule("layers.2.attention.context")
    assert (context.input_quantizer.qmin, context.other_quantizer.qmin) == (-127, -127)


def test_activation_formats_parse_dump_and_check() -> None:
    """``binary`` leaves ``symmetric`` unset (each input follows its producer); an explicit one round-trips."""
    auto = from_data(CompressionRule, {"activation": "binary"}, "r")
    assert auto.activation == ActQuant(bits=1) and auto.activation.symmetric is None
    assert to_data(auto) == {"activation": "binary"}
    explicit = from_data(CompressionRule, {"activation": {"bits": 1, "symmetric": True}}, "r")
    assert to_data(explicit) == {"activation": {"bits": 1, "symmetric": True}}
    assert ActQuant(bits=8).for_input(True) == ActQuant(bits=8, symmetric=False)
    assert ActQuant(bits=8).for_input(False) == ActQuant(bits=8, symmetric=True)
    assert ActQuant(bits=1, symmetric=True).for_input(True) == ActQuant(bits=1, symmetric=True)
    assert ActQuant(bits=32).for_input(True) == ActQuant(bits=32)
    with pytest.raises(FieldError, match="floats: drop symmetric"):
        from_data(CompressionRule, {"activation": {"bits": 32, "symmetric": False}}, "r")
    with pytest.raises(ValueError, match="resolved"):
        ElasticBinarizer(ActQuant(bits=1), 4, -1)


def test_a_w1a1_rule_on_the_frontend_gets_unsigned_post_relu_inputs() -> None:
    graph = planner.loads(MIXED_CONV2D)
    model = planner.materialize(graph)
    assert model.get_submodule("frontend.0.convs.0.input_quantizer").config.symmetric is True  # log-mels
    assert model.get_submodule("frontend.0.convs.1.input_quantizer").config.symmetric is False
    assert model.get_submodule("frontend.0.projection.input_quantizer").config.symmetric is False


def test_relu_ffns_build_and_price_like_the_others() -> None:
    """``activation: relu`` in every FFN kind: the same parameters and cost as Swish/GELU, a ReLU module."""
    base = MIXED_DWSEP.split("compression:")[0]
    relu, swish = planner.loads(base), planner.loads(base.replace("activation: relu", "activation: swish"))
    assert planner.estimate(relu) == planner.estimate(swish)
    model = planner.materialize(relu)
    assert isinstance(model.get_submodule("layers.0.ffn1.act"), torch.nn.ReLU)
    assert isinstance(model.get_submodule("layers.4.ffn1.act"), torch.nn.SiLU)
    with pytest.raises(ConfigError, match="activation"):
        planner.loads(base.replace("activation: relu", "activation: tanh", 1))


# --- 3. the shipped W1A1 files --------------------------------------------------------------------------


def _check_w1a1(graph: planner.EncoderGraph) -> None:
    """BiT as the shipped files apply it: frontend and post float, every linear/conv of the layers binary,
    ReLU FFNs whose second linear takes ``{0, alpha}``, both inputs of every product binarized."""
    plan = graph.compression
    for path, node, leaf in graph.leaves():
        if node.section != "layers":
            assert path not in plan, f"{path}: the frontend stays float"
            continue
        if not leaf.quantizable:
            continue
        comp = plan[path]
        assert comp.activation.bits == 1, path
        if leaf.compressible:
            assert comp.weight.bits == 1, path
        if "fc2" in leaf.tags:
            assert leaf.producers == ("relu",), f"{path}: BiT's FFN is a ReLU FFN"
        formats = input_formats(comp.activation, leaf)
        if "fc2" in leaf.tags or "context" in leaf.tags:
            assert formats[0].symmetric is False, path
        else:
            assert formats[0].symmetric is True, path


def test_the_w1a1_study_follows_bit() -> None:
    graph = planner.load(W1A1_STUDY)
    _check_w1a1(graph)
    assert graph.compression, "the study is W1A1"


def test_families_w1a1_follows_bit_and_keeps_the_frontend_float() -> None:
    """Every one of the 24 architectures of searchspaces/families.yaml."""
    space = load_space("searchspaces/families.yaml")
    labels = {d.label: d.grid() for d in space.domains()}
    assert set(labels) == {"family", "width", "precision"}
    count = binary = 0
    for family in labels["family"]:
        for width in labels["width"]:
            for precision in labels["precision"]:
                graph = from_dict(space.freeze({"family": family, "width": width, "precision": precision}))
                count += 1
                if precision == "fp32":
                    assert graph.compression == {}
                    acts = {n.config.activation for n in graph.nodes("layers") if hasattr(n.config, "activation")}
                    assert acts == (
                        {"gelu"} if family in ("transformer",) or family.startswith("sparse") else {"swish"}
                    )
                    continue
                binary += 1
                _check_w1a1(graph)
    assert (count, binary) == (24, 12)
