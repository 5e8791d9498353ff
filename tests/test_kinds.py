"""Tests generated from the registries: every node kind and attention kind, on small random architectures.

A newly registered kind is tested the moment it registers: :func:`planner.testing.random_arch` draws
architectures that contain it, and each is validated, materialized, run forward and backward, and checked
leaf by leaf against the IR. A kind without a builder fails here (it does not skip).
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
import torch

import planner
from planner.ir import ATTENTION_KINDS, NODE_KINDS, EncoderGraph
from planner.nn import BUILDERS, Encoder, EncoderOutput, builders
from planner.nn.attention import pattern_mask
from planner.testing import FEATURE_FRAMES, WAVEFORM_SAMPLES, random_arch

SEEDS = (0, 1, 2)
CASES = [("node", k, s) for k in NODE_KINDS for s in SEEDS] + [
    ("attention", k, s) for k in ATTENTION_KINDS for s in SEEDS
]
# Map kinds whose restriction is visible in the attention probabilities (full allows everything, reuse
# copies another layer's map).
RESTRICTING = [k for k in ATTENTION_KINDS if k not in ("full", "reuse")]


def _arch(kind: str | None, seed: int) -> dict:
    """A random architecture containing ``kind``; every other node kind it uses has a builder, so only a
    missing builder of ``kind`` itself can fail the test of ``kind``."""
    extra = {kind} if kind in NODE_KINDS else set()
    return random_arch(random.Random(f"{kind}-{seed}"), kind, kinds=set(BUILDERS) | extra)


def _build(arch: dict) -> tuple[EncoderGraph, Encoder]:
    graph = planner.from_dict(arch)
    missing = sorted({n.kind for n in graph.nodes()} - set(BUILDERS))
    assert not missing, f"no builder registered for node kind(s) {missing} (planner/nn/builders.py)"
    torch.manual_seed(0)
    return graph, planner.materialize(graph)


def _inputs(graph: EncoderGraph, fractions: tuple[float, ...] = (1.0, 0.6)) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch: ``(B, samples)`` waveform or ``(B, frames, n_mels)`` features, and its lengths."""
    gen = torch.Generator().manual_seed(1)
    inp = graph.spec.input
    full = WAVEFORM_SAMPLES if inp.kind == "waveform" else FEATURE_FRAMES
    shape = (len(fractions), full) if inp.kind == "waveform" else (len(fractions), full, inp.n_mels)
    lengths = torch.tensor([int(full * f) for f in fractions])
    return torch.randn(*shape, generator=gen), lengths


def _mask(graph: EncoderGraph, x: torch.Tensor) -> torch.Tensor | None:
    """A random ``(B, T)`` mask at the frame rate the mask embedding sees, if the graph has one."""
    length = x.shape[1]
    for node in graph.nodes("frontend"):
        if node.kind == "mask_embedding":
            gen = torch.Generator().manual_seed(2)
            return torch.rand(x.shape[0], length, generator=gen) < 0.3
        length = node.config.out_length(length)
    return None


def _check_attention_maps(graph: EncoderGraph, model: Encoder, out: EncoderOutput) -> None:
    """Probabilities are exactly zero outside the pattern and on padded keys; reuse shares its source's map."""
    for node in graph.nodes("layers"):
        cfg = getattr(node.config, "attention", None)
        if cfg is None:
            assert out.attentions[node.index] is None
            continue
        att = out.attentions[node.index]
        if not cfg.computes_map:
            assert att is out.attentions[cfg.source], f"{node.name} must use the map of layers.{cfg.source}"
            module = model.get_submodule(f"{node.name}.attention")
            assert not hasattr(module, "q_proj") and not hasattr(module, "k_proj")
            continue
        t = att.shape[-1]
        allowed = pattern_mask(cfg, t)
        for b, n in enumerate(out.hidden_lengths[node.index].tolist()):
            # Valid query rows only: a padded query has no valid key to attend to, and what it computes is
            # never read.
            rows = att[b, :, :n]
            assert torch.all(rows[:, ~allowed[:n]] == 0), f"{node.name}: {cfg} attends outside its pattern"
            assert torch.all(rows[..., n:] == 0), f"{node.name}: attends to padded frames"
            assert torch.allclose(rows.sum(-1), torch.ones(()), atol=1e-5)


def _own_params(module: torch.nn.Module) -> int:
    """Parameters of a leaf module, without the activation quantizer that compression may attach to it."""
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith("input_quantizer."))


def _check_leaves(graph: EncoderGraph, model: Encoder) -> None:
    """Every IR leaf is the module (or parameter) at its path with exactly its parameter count.

    The only parameters beyond the IR's are those of BiT's elastic binarizer on the input of a leaf planned
    with binary activations (a learned scale ``alpha`` and a per-input-channel ``beta``, ``1 + C_in``), which
    ``planner.compress`` registers as the leaf's ``input_quantizer``; ``graph.param_count`` leaves them out.
    """
    extra = 0
    for path, _, leaf in graph.leaves():
        if leaf.op == "param":
            assert model.get_parameter(path).numel() == leaf.params, path
            continue
        module = model.get_submodule(path)
        count = _own_params(module)
        assert count == leaf.params, f"{path} ({leaf.op}): module has {count} parameters, the IR says {leaf.params}"
        quantizer = getattr(module, "input_quantizer", None)
        q_params = sum(p.numel() for p in quantizer.parameters()) if quantizer is not None else 0
        comp = graph.compression.get(path)
        binary = comp is not None and comp.activation.bits == 1
        assert q_params == (1 + leaf.in_dim if binary else 0), f"{path}: {q_params} activation-quantizer parameters"
        extra += q_params
    assert sum(p.numel() for p in model.parameters()) == graph.param_count + extra


def _loss(out: EncoderOutput) -> torch.Tensor:
    """A random projection of every output; a plain sum would give a layer norm's input no gradient."""
    gen = torch.Generator().manual_seed(3)
    tensors = [out.output, *out.projections.values()] + ([out.logits] if out.logits is not None else [])
    return sum((t * torch.randn(t.shape, generator=gen)).sum() for t in tensors)


def test_builders_and_node_kinds_have_the_same_keys() -> None:
    assert set(BUILDERS) == set(NODE_KINDS), (
        f"node kinds without a builder: {sorted(set(NODE_KINDS) - set(BUILDERS))}; "
        f"builders without a node kind: {sorted(set(BUILDERS) - set(NODE_KINDS))}"
    )


def test_builders_is_one_explicit_table() -> None:
    """The kind -> builder map is written out in planner/nn/builders.py: no module of planner/nn or
    planner/compress fills a registry by ``add`` / ``register`` (an import side effect), and every builder
    is a class of a block module that builders.py imports by name."""
    root = Path(__file__).resolve().parent.parent
    calls = []
    for path in sorted([*(root / "planner" / "nn").glob("*.py"), *(root / "planner" / "compress").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("add", "register") and isinstance(node.value, ast.Name) \
                    and node.value.id.isupper():  # fmt: skip
                calls.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not calls, "registration by import side effect:\n" + "\n".join(calls)
    imported = set(vars(builders))
    for kind, builder in BUILDERS.items():
        assert builder.__name__ in imported and builder.__module__.startswith("planner.nn."), (kind, builder)


@pytest.mark.parametrize(("axis", "kind", "seed"), CASES, ids=[f"{a}-{k}-{s}" for a, k, s in CASES])
def test_kind_materializes_runs_and_matches_the_ir(axis: str, kind: str, seed: int) -> None:
    arch = _arch(kind, seed)
    graph, model = _build(arch)
    names = {n.kind for n in graph.nodes()} | {n.config.attention.kind for n in graph.nodes("layers")
                                                if hasattr(n.config, "attention")}  # fmt: skip
    assert kind in names, f"random_arch did not draw {kind!r}"

    # the IR and the module agree leaf by leaf
    _check_leaves(graph, model)
    assert model.compression_plan == graph.compression
    assert planner.loads(planner.dumps(graph)) == graph
    assert planner.dumps(planner.loads(planner.dumps(graph))) == planner.dumps(graph)

    # forward and backward, with a mask when the graph has a mask embedding
    model.train()
    x, lengths = _inputs(graph)
    out = model(x, lengths, mask=_mask(graph, x))
    layer_count = len(graph.nodes("layers"))
    assert len(out.hidden_states) == len(out.attentions) == layer_count
    expected = graph.lengths(WAVEFORM_SAMPLES) if graph.spec.input.kind == "waveform" else None
    if expected is not None:
        assert out.lengths[0].item() == expected[f"layers.{layer_count - 1}"]
    for t in [out.output, *out.hidden_states, *out.projections.values(), out.logits]:
        assert t is None or torch.isfinite(t).all()
    _check_attention_maps(graph, model, out)
    _loss(out).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("attention", RESTRICTING)
@pytest.mark.parametrize("layer", ["transformer", "conformer", "squeezeformer"])
def test_sparse_attention_really_restricts(attention: str, layer: str) -> None:
    """Every layer kind honours every restricting attention kind, for several patterns."""
    for seed in range(2):
        arch = random_arch(random.Random(f"{attention}-{layer}-{seed}"), attention, kinds=set(BUILDERS) - {
            k for k in ("transformer", "conformer", "squeezeformer") if k != layer})  # fmt: skip
        graph, model = _build(arch)
        layers = [n for n in graph.nodes("layers") if getattr(n.config, "attention", None) is not None]
        assert any(n.config.attention.kind == attention and n.kind == layer for n in layers)
        x, lengths = _inputs(graph)
        with torch.no_grad():
            out = model.eval()(x, lengths)
        _check_attention_maps(graph, model, out)
        for n in layers:  # the restriction is real: some pairs are cut when the sequence is long enough
            att = out.attentions[n.index]
            if n.config.attention.kind == attention and not bool(pattern_mask(n.config.attention, att.shape[-1]).all()):
                assert (att[0] == 0).any()


@pytest.mark.parametrize("mode", ["pattern", "list", "explicit"])
def test_reuse_shares_the_source_map(mode: str) -> None:
    base = {"format": 1, "name": "reuse", "input": {"kind": "features", "n_mels": 20}, "width": 32,
            "frontend": [{"kind": "conv2d_subsampling", "channels": [4]}],
            "layers": [{"kind": "transformer", "repeat": 4, "heads": 4, "ffn": 64}]}  # fmt: skip
    if mode == "pattern":
        base["reuse"] = "2by2"
    elif mode == "list":
        base["reuse"] = [0, 0, 2, 2]
    else:
        base["layers"] = [{"kind": "transformer", "heads": 4, "ffn": 64},
                          {"kind": "transformer", "heads": 4, "ffn": 64, "attention": {"kind": "reuse", "source": 0}},
                          {"kind": "transformer", "heads": 4, "ffn": 64},
                          {"kind": "transformer", "heads": 4, "ffn": 64, "attention": {"kind": "reuse", "source": 2}}]  # fmt: skip
    graph, model = _build(base)
    x, lengths = _inputs(graph)
    out = model(x, lengths)
    assert out.attentions[1] is out.attentions[0] and out.attentions[3] is out.attentions[2]
    assert out.attentions[2] is not out.attentions[0]
    for i in (1, 3):
        assert not hasattr(model.layers[i].attention, "q_proj") and not hasattr(model.layers[i].attention, "k_proj")
    _check_attention_maps(graph, model, out)


@pytest.mark.parametrize("seed", range(6))
def test_padded_batch_equals_each_utterance_alone(seed: int) -> None:
    """Eval mode (BatchNorm uses running statistics, no dropout): a padded batch gives each utterance, on its
    valid frames, what it gets alone. Tolerance 1e-4: float32 with the same weights, only the reduction
    shapes differ between the two runs (values are O(1) after the layer norms, errors ~1e-6)."""
    graph, model = _build(_arch(None, 100 + seed))
    model.eval()
    x, lengths = _inputs(graph, (1.0, 0.55))
    with torch.no_grad():
        batch = model(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = model(x[b : b + 1, :n])
            assert batch.lengths[b] == alone.lengths[0]
            pairs = [(batch.output, alone.output, batch.lengths[b])]
            pairs += [(h, a, hl[b]) for h, a, hl in zip(batch.hidden_states, alone.hidden_states, batch.hidden_lengths)]
            pairs += [
                (batch.projections[i], alone.projections[i], batch.hidden_lengths[i][b]) for i in batch.projections
            ]
            if batch.logits is not None:
                pairs.append((batch.logits, alone.logits, batch.lengths[b]))
            for got, want, m in pairs:
                assert want.shape[1] == m
                torch.testing.assert_close(got[b, :m], want[0], atol=1e-4, rtol=1e-4)
