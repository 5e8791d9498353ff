"""``materialize``: build the float model of a graph, then compress it as the graph says."""

from __future__ import annotations

from planner.compress._apply import compress_
from planner.ir.graph import EncoderGraph
from planner.nn.model import Encoder, build

__all__ = ["materialize"]


def materialize(graph: EncoderGraph) -> Encoder:
    """Builds the PyTorch model of ``graph`` with its compression attached: build, then compress.

    :func:`planner.nn.build` makes the float modules; when the graph's compression plan is not empty,
    :func:`compress_` then attaches its fake quantizers and N:M masks in place (``model.mask_schedule``).
    ``planner.materialize`` is this function.

    Args:
        graph: the architecture.

    Returns:
        The :class:`~planner.nn.Encoder`, compressed where the graph's ``compression`` rules say.

    Example:
        >>> import planner, torch
        >>> graph = planner.load("studies/recycle-and-distill/armhubert-s.yaml")
        >>> model = materialize(graph)
        >>> out = model(torch.randn(2, 16000), torch.tensor([16000, 12000]))
        >>> out.output.shape, out.lengths.tolist()
        (torch.Size([2, 49, 432]), [49, 37])
    """
    model = build(graph)
    if model.compression_plan:
        compress_(model)
    return model
