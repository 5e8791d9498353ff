"""The materialized ``conformer`` layer against ``torchaudio.models.Conformer``: same parameter count, and with
the weights copied over, the same outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import planner
from planner.nn.conformer import ConformerLayer
from planner.nn.state import ForwardState

torchaudio_models = pytest.importorskip("torchaudio.models")

# float32 with the same operations in a different order (one fused in_proj matmul against three, SDPA against
# an explicit softmax, -inf against finfo.min masking): differences stay at a few ulps of O(1) layer-norm
# outputs, far below 1e-5, while any wiring mistake (a swapped weight, a missing 0.5) is O(0.1).
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


CONFIGS = [
    # (width, heads, ffn, kernel, layers)
    (144, 4, 576, 31, 2),
    (64, 8, 128, 7, 1),
]


def _graph(width: int, heads: int, ffn: int, kernel: int, layers: int) -> planner.EncoderGraph:
    # No frontend passes features through unchanged, so the layers are built from their graph nodes directly;
    # the subsampling frontend only makes the file a valid architecture.
    return planner.loads(f"""
format: 1
name: conformer-check
input: {{kind: features, n_mels: 80}}
width: {width}
frontend:
  - {{kind: conv2d_subsampling, channels: [8]}}
layers:
  - {{kind: conformer, repeat: {layers}, heads: {heads}, ffn: {ffn}, kernel: {kernel}}}
""")


def _ours(graph: planner.EncoderGraph) -> nn.ModuleList:
    return nn.ModuleList(ConformerLayer(n) for n in graph.nodes("layers"))


def _copy_weights(theirs: nn.Module, ours: nn.ModuleList, width: int) -> None:
    """Copies torchaudio's state dict into ours through an explicit name mapping."""
    src = theirs.state_dict()
    dst: dict[str, torch.Tensor] = {}
    plain = {
        "ffn1.sequential.0": "ffn1.layer_norm",
        "ffn1.sequential.1": "ffn1.fc1",
        "ffn1.sequential.4": "ffn1.fc2",
        "self_attn_layer_norm": "attention_layer_norm",
        "self_attn.out_proj": "attention.out_proj",
        "conv_module.layer_norm": "conv.layer_norm",
        "conv_module.sequential.0": "conv.pointwise1",
        "conv_module.sequential.2": "conv.depthwise",
        "conv_module.sequential.3": "conv.batch_norm",
        "conv_module.sequential.5": "conv.pointwise2",
        "ffn2.sequential.0": "ffn2.layer_norm",
        "ffn2.sequential.1": "ffn2.fc1",
        "ffn2.sequential.4": "ffn2.fc2",
        "final_layer_norm": "final_layer_norm",
    }
    for i in range(len(ours)):
        for name, value in src.items():
            prefix = f"conformer_layers.{i}."
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            module, _, tensor = rest.rpartition(".")
            if module == "self_attn" and tensor in ("in_proj_weight", "in_proj_bias"):
                kind = "weight" if tensor == "in_proj_weight" else "bias"
                for proj, part in zip(("q_proj", "k_proj", "v_proj"), value.split(width, dim=0)):
                    dst[f"{i}.attention.{proj}.{kind}"] = part
            else:
                dst[f"{i}.{plain[module]}.{tensor}"] = value
    ours.load_state_dict(dst, strict=True)


def _run(ours: nn.ModuleList, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    state = ForwardState()
    for layer in ours:
        x, lengths = layer(x, lengths, state)
    return x


@pytest.mark.parametrize("width,heads,ffn,kernel,layers", CONFIGS)
def test_matches_torchaudio_conformer(width: int, heads: int, ffn: int, kernel: int, layers: int) -> None:
    torch.manual_seed(0)
    graph = _graph(width, heads, ffn, kernel, layers)
    ours = _ours(graph)
    theirs = torchaudio_models.Conformer(width, heads, ffn, layers, kernel)
    count = sum(p.numel() for p in theirs.parameters())
    assert sum(p.numel() for p in ours.parameters()) == count
    assert sum(lf.params for n in graph.nodes("layers") for lf in n.leaves) == count

    # Non-trivial batch-norm statistics, so that copying the buffers is tested too.
    for mod in theirs.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    _copy_weights(theirs, ours, width)
    ours.eval()
    theirs.eval()

    x = torch.randn(3, 40, width)
    full = torch.full((3,), 40)
    with torch.no_grad():
        expected, _ = theirs(x, full)
        torch.testing.assert_close(_run(ours, x, full), expected, atol=ATOL, rtol=0)

        # torchaudio lets padded frames into the depthwise conv; ours zeroes them. So a padded batch of ours
        # equals torchaudio run on each utterance alone, on the valid frames.
        lengths = torch.tensor([40, 29, 13])
        padded = _run(ours, x, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone, _ = theirs(x[b : b + 1, :n], lengths[b : b + 1])
            torch.testing.assert_close(padded[b, :n], alone[0], atol=ATOL, rtol=0)


def test_even_kernel_preserves_length() -> None:
    torch.manual_seed(0)
    ours = _ours(_graph(32, 2, 64, 32, 1)).eval()
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        y = _run(ours, x, torch.tensor([17, 9]))
    assert y.shape == x.shape
