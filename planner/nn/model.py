"""The encoder module and :func:`build`, which makes the float model of a graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from planner.ir.compression import Compression
from planner.ir.graph import EncoderGraph
from planner.nn.builders import BUILDERS
from planner.nn.state import ForwardState

__all__ = ["Encoder", "EncoderOutput", "build"]


@dataclass
class EncoderOutput:
    """What :class:`Encoder` returns.

    Attributes:
        output: ``(B, T, D)`` final hidden state (after ``post``).
        lengths: ``(B,)`` valid frames of ``output``.
        hidden_states: the output of every entry of ``layers``, ``(B, T_i, D)`` each.
        hidden_lengths: valid frames of each hidden state.
        attentions: the attention probabilities ``(B, H, T, T)`` used by each layer (a reuse layer's is its
            source's map), None for layers without attention.
        projections: projection-head outputs ``(B, T_i, teacher_width)`` by layer index.
        logits: CTC logits ``(B, T, vocab)`` if the graph has a CTC head.
    """

    output: Tensor
    lengths: Tensor
    hidden_states: list[Tensor] = field(default_factory=list)
    hidden_lengths: list[Tensor] = field(default_factory=list)
    attentions: list[Tensor | None] = field(default_factory=list)
    projections: dict[int, Tensor] = field(default_factory=dict)
    logits: Tensor | None = None


class Encoder(nn.Module):
    """An encoder built from an :class:`~planner.ir.EncoderGraph`.

    Submodules are named like the graph's nodes (``frontend.0``, ``layers.3``, ``heads.0``), and their
    leaves like the IR's leaves, so ``model.get_submodule("layers.3.attention.q_proj")`` is the leaf the cost
    model priced as ``layers.3.attention.q_proj``.

    Attributes:
        graph: the graph it was built from.
        compression_plan: module path of each compressed linear/conv -> its resolved
            :class:`~planner.ir.Compression` (the hook the compression stage reads).
    """

    def __init__(self, graph: EncoderGraph) -> None:
        super().__init__()
        self.graph = graph
        self.compression_plan: dict[str, Compression] = dict(graph.compression)
        for section in ("frontend", "layers", "post", "heads"):
            mods = [BUILDERS[n.kind](n) for n in graph.nodes(section)]
            self.add_module(section, nn.ModuleList(mods))
        self.input_kind = graph.spec.input.kind

    def forward(self, x: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None) -> EncoderOutput:
        """Runs the encoder.

        Args:
            x: waveform ``(B, samples)``, or features ``(B, frames, n_mels)`` for a features input.
            lengths: ``(B,)`` valid samples (or frames) per utterance; None means all of ``x``.
            mask: ``(B, T)`` frames (at the rate after the frontend's extractor) that the mask embedding
                replaces, for masked prediction / masking distillation.

        Returns:
            :class:`EncoderOutput`.
        """
        expected = 2 if self.input_kind == "waveform" else 3
        if x.dim() != expected:
            raise ValueError(f"expected a {expected}-D {self.input_kind} input, got shape {tuple(x.shape)}")
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        state = ForwardState(mask=mask)
        for mod in self.frontend:
            x, lengths = mod(x, lengths, state)
        hidden, hidden_lengths, attentions = [], [], []
        for i, mod in enumerate(self.layers):
            state.layer_inputs[i] = (x, lengths)
            x, lengths = mod(x, lengths, state)
            hidden.append(x)
            hidden_lengths.append(lengths)
            attentions.append(state.attention_maps.get(i))
        for mod in self.post:
            x, lengths = mod(x, lengths, state)
        out = EncoderOutput(x, lengths, hidden, hidden_lengths, attentions)
        for node, mod in zip(self.graph.nodes("heads"), self.heads):
            result = mod(x, hidden, lengths)
            if node.kind == "ctc":
                out.logits = result
            else:
                out.projections.update(result)
        return out


def build(graph: EncoderGraph) -> Encoder:
    """Builds the float PyTorch model of ``graph``: plain modules, no quantizers or masks.

    The first of two steps; :func:`planner.compress.materialize` (``planner.materialize``) builds, then
    attaches the graph's compression with :func:`planner.compress.compress_`. A graph without compression
    gives the same model both ways.

    Example:
        >>> import planner, torch
        >>> graph = planner.load("studies/recycle-and-distill/armhubert-s.yaml")
        >>> model = build(graph)
        >>> out = model(torch.randn(2, 16000), torch.tensor([16000, 12000]))
        >>> out.output.shape, out.lengths.tolist()
        (torch.Size([2, 49, 432]), [49, 37])
    """
    return Encoder(graph)
