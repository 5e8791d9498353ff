"""The supernet of every shipped space holds every candidate, and a candidate extracted from it is exact.

For each space in ``searchspaces/``: the supernet of its cover; random candidates of the space (other
draws than the cover's) all fit; an extracted candidate has exactly the cost model's parameter count and
computes exactly (==) what the candidate computes inside the supernet; compressed candidates and reuse
patterns are among them where the space has them.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

import planner
from planner.errors import SupernetError
from planner.search import SpaceSampler, load_space, sample_space
from trainers.supernet import Supernet, extract, slot_table

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "searchspaces").glob("*.yaml"))
CANDIDATES = (
    2  # random candidates per space, besides the largest and the smallest (6 spaces hold 4-53M-param supernets)
)


@pytest.fixture(scope="module")
def nets() -> dict[str, tuple[SpaceSampler, Supernet]]:
    return {}


def _net(nets: dict, path: Path) -> tuple[SpaceSampler, Supernet]:
    if path.name not in nets:
        sampler = SpaceSampler(load_space(path), samples=16, seed=0)
        nets[path.name] = (sampler, Supernet.from_graphs(sampler.cover, seed=0))
    return nets[path.name]


def _input(graph: planner.EncoderGraph, seconds: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    inp = graph.spec.input
    samples = int(seconds * inp.sample_rate)
    if inp.kind == "waveform":
        x = torch.randn(2, samples, generator=gen)
        return x, torch.tensor([samples, samples * 3 // 4])
    frames = inp.frames(samples)
    return torch.randn(2, frames, inp.n_mels, generator=gen), torch.tensor([frames, frames * 3 // 4])


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_every_candidate_fits_and_extracts_exactly(nets: dict, path: Path) -> None:
    sampler, net = _net(nets, path)
    draws = [s.graph for s in sample_space(sampler.space, 40, seed=12345) if s.graph is not None]
    for g in draws:  # every draw maps to a sub-network (no slot missing or too small)
        assert net.fits(g) == [], g.name
    rng = random.Random(7)
    picks = [sampler.largest(), sampler.smallest(), *rng.sample(draws, min(CANDIDATES, len(draws)))]
    net.eval()
    for g in picks:
        model = extract(net, g).eval()
        # the cost model prices weights; a learned activation quantizer's step sizes (BiT's alpha, beta) are
        # training state, folded into the integer scales on export
        weights = sum(p.numel() for n, p in model.named_parameters() if "input_quantizer" not in n and
                      "other_quantizer" not in n)  # fmt: skip
        assert weights == planner.estimate(g).params
        x, xl = _input(g)
        with torch.no_grad():
            inside, alone = net(g, x, xl), model(x, xl)
        assert torch.equal(inside.output, alone.output), g.name  # the same weights, the same code: bit for bit
        assert torch.isfinite(alone.output).all()


def test_compressed_and_float_candidates_share_one_float_weight() -> None:
    space = load_space(ROOT / "searchspaces" / "supernet-small.yaml")
    base = {"width": 32, "depth": 2, "heads": 2, "ffn": 64, "block": 2, "kernel": 7, "sparsity": "none"}
    graphs = {bits: planner.ir.io.from_dict(space.freeze({**base, "weight_bits": bits})) for bits in ("fp32", "int4")}
    sparse = planner.ir.io.from_dict(space.freeze({**base, "weight_bits": "int8", "sparsity": "2:4"}))
    net = Supernet.from_graphs([*graphs.values(), sparse])
    keys = {}
    for name, g in [*graphs.items(), ("2:4", sparse)]:
        model = planner.materialize(g)
        table = slot_table(model, g)
        keys[name] = {
            table[n].key for n, _ in model.named_parameters() if "fc1" in n and "ffn1" in n and "layers.0" in n
        }
    assert keys["fp32"] == keys["int4"] == keys["2:4"] == {"layers.0:conformer/ffn1.fc1.weight",
                                                           "layers.0:conformer/ffn1.fc1.bias"}  # fmt: skip
    # the int4 candidate's output is its fake-quantized view: not the float candidate's
    net.eval()
    x, xl = _input(graphs["fp32"])
    with torch.no_grad():
        a = net(graphs["fp32"], x, xl).output
        b = net(graphs["int4"], x, xl).output
        c = net(sparse, x, xl).output
    assert not torch.equal(a, b) and not torch.equal(a, c)
    m = extract(net, sparse).eval()
    with torch.no_grad():
        assert torch.equal(m(x, xl).output, c)
    w = m.get_submodule("layers.0.ffn1.fc1").weight  # the masked, quantized weight: 2 of every 4 kept
    assert int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 2


def test_kernels_are_centre_crops_and_widths_leading_slices() -> None:
    space = load_space(ROOT / "searchspaces" / "supernet-small.yaml")
    base = {"width": 64, "depth": 1, "heads": 1, "ffn": 256, "block": 2, "weight_bits": "fp32", "sparsity": "none"}
    k7 = planner.ir.io.from_dict(space.freeze({**base, "kernel": 7}))
    k3 = planner.ir.io.from_dict(space.freeze({**base, "kernel": 3, "width": 32, "ffn": 64}))
    net = Supernet.from_graphs([k3, k7])
    full = net.tensor("layers.0:conformer/conv.depthwise.weight")
    assert full.shape == (64, 1, 7)
    small = extract(net, k3)
    assert torch.equal(small.get_submodule("layers.0.conv.depthwise").weight, full[:32, :, 2:5])
    fc1 = net.tensor("layers.0:conformer/ffn1.fc1.weight")
    assert torch.equal(small.get_submodule("layers.0.ffn1.fc1").weight, fc1[:64, :32])


def test_gradients_of_two_candidates_meet_in_the_shared_tensor() -> None:
    space = load_space(ROOT / "searchspaces" / "supernet-small.yaml")
    base = {"depth": 2, "heads": 1, "ffn": 64, "block": 0, "weight_bits": "fp32", "sparsity": "none"}
    wide = planner.ir.io.from_dict(space.freeze({**base, "width": 64}))
    narrow = planner.ir.io.from_dict(space.freeze({**base, "width": 16}))
    net = Supernet.from_graphs([wide, narrow]).train()
    x, xl = _input(wide)
    net(narrow, x, xl).output.pow(2).mean().backward()
    t = net.tensor("layers.0:transformer/attention.q_proj.weight")
    assert t.grad is not None and t.grad[:16, :16].abs().sum() > 0 and t.grad[16:].abs().sum() == 0
    net(wide, x, xl).output.pow(2).mean().backward()
    assert t.grad[16:].abs().sum() > 0


def test_a_candidate_of_another_space_is_refused_with_the_slot() -> None:
    small = SpaceSampler(load_space(ROOT / "searchspaces" / "demo.yaml"), samples=4)
    net = Supernet.from_graphs(small.cover)
    other = SpaceSampler(load_space(ROOT / "searchspaces" / "quickstart.yaml"), samples=0).largest()
    problems = net.fits(other)
    assert problems and "not a candidate of this supernet" in problems[0] and "slot" in problems[0]
    with pytest.raises(SupernetError, match="train a supernet of the space"):
        extract(net, other)
