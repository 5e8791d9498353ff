"""A padded batch gives each utterance what it gets alone: the output, every hidden state and head output on
the valid frames, and the lengths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import planner

STUDIES = Path(__file__).resolve().parents[1] / "studies"

# Files above this size take too long to build and run in the default test command (usm-2b: 1.8B
# parameters); small variants of their kinds are built below instead.
MAX_PARAMS = 120_000_000

# float32, and the batched and lone runs differ only in padding and batch size: the same operations on the
# valid frames, but matmul and conv kernels may block and sum in another order for other shapes. A leak of a
# padded frame is O(0.1); float reordering across up to 16 layers stays below 1e-4.
ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL_VARIANTS = {
    "usm-like": """
format: 1
name: usm-like
input: {kind: features, n_mels: 32, win_length: 512, hop_length: 160}
width: 64
frontend:
  - {kind: conv2d_subsampling, channels: [16, 8], kernel: 3, stride: 2}
layers:
  - {kind: conformer, repeat: 2, heads: 4, ffn: 128, kernel: 5, positional: relative}
heads:
  - {kind: ctc, vocab: 50}
""",
    "conformer-even-kernel-local": """
format: 1
name: conformer-even-kernel-local
input: {kind: features, n_mels: 40}
width: 48
frontend:
  - {kind: conv2d_subsampling, channels: [8, 8]}
layers:
  - {kind: conformer, heads: 4, ffn: 96, kernel: 8, attention: {kind: local, window: 6}}
  - {kind: conformer, heads: 4, ffn: 96, kernel: 8, attention: {kind: sparse_strided, stride: 3}}
heads:
  - {kind: projection_heads, width: 16}
""",
    "squeezeformer-stride3-cfmf": """
format: 1
name: squeezeformer-stride3-cfmf
input: {kind: features, n_mels: 40}
width: 48
frontend:
  - {kind: dwsep_subsampling, channels: 8}
layers:
  - {kind: squeezeformer, heads: 4, ffn: 96, kernel: 7, ordering: cfmf, positional: relative}
  - {kind: time_reduction, stride: 3, kernel: 5}
  - {kind: squeezeformer, heads: 4, ffn: 96, kernel: 7, ordering: cfmf}
  - {kind: time_recovery, source: 1}
  - {kind: squeezeformer, heads: 4, ffn: 96, kernel: 7}
""",
}


def _study_graphs() -> list[object]:
    params = []
    for path in sorted(STUDIES.rglob("*.yaml")):
        graph = planner.load(path)
        if graph.param_count <= MAX_PARAMS:  # the 1.8B USM files are covered by the small variants below
            params.append(pytest.param(graph, id=str(path.relative_to(STUDIES))))
    for name, text in SMALL_VARIANTS.items():
        params.append(pytest.param(planner.loads(text), id=name))
    return params


def _inputs(graph: planner.EncoderGraph, samples: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """A batch of random inputs for utterances of ``samples`` samples, padded with noise (not zeros, so a
    leak shows). Returns the batch, its lengths, and the utterance samples for :meth:`EncoderGraph.lengths`."""
    inp = graph.spec.input
    frames = [inp.frames(s) for s in samples]
    if inp.kind == "waveform":
        x = torch.randn(len(samples), max(frames))
    else:
        x = torch.randn(len(samples), max(frames), int(inp.n_mels or 0))
    return x, torch.tensor(frames), frames


@pytest.mark.parametrize("graph", _study_graphs())
def test_padded_batch_equals_each_utterance_alone(graph: planner.EncoderGraph) -> None:
    torch.manual_seed(0)
    model = planner.materialize(graph).eval()
    # 0.5 s and 0.315 s: short to keep the test fast; odd lengths after subsampling and time reduction
    # exercise the edge frames.
    samples = [8000, 5040]
    x, lengths, frames = _inputs(graph, samples)
    with torch.no_grad():
        batch = model(x, lengths)
        for b, n in enumerate(frames):
            alone = model(x[b : b + 1, :n], lengths[b : b + 1])
            expected = graph.lengths(samples[b])
            last = [m for m in graph.nodes() if m.section != "heads"][-1].name
            assert alone.lengths.item() == batch.lengths[b].item() == expected[last]
            t = int(alone.lengths.item())
            torch.testing.assert_close(batch.output[b, :t], alone.output[0], atol=ATOL, rtol=0)
            for i, (hb, ha) in enumerate(zip(batch.hidden_states, alone.hidden_states)):
                ti = int(alone.hidden_lengths[i].item())
                assert batch.hidden_lengths[i][b].item() == ti == expected[f"layers.{i}"]
                assert ha.shape[1] == ti  # the lone run has no padding at all
                torch.testing.assert_close(hb[b, :ti], ha[0], atol=ATOL, rtol=0, msg=f"layers.{i}")
            if alone.logits is not None:
                torch.testing.assert_close(batch.logits[b, :t], alone.logits[0], atol=ATOL, rtol=0)
            for i, proj in alone.projections.items():
                ti = proj.shape[1]
                torch.testing.assert_close(batch.projections[i][b, :ti], proj[0], atol=ATOL, rtol=0)
