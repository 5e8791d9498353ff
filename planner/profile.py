"""``planner profile``: materialize a graph, measure it with DeepSpeed's flops profiler, compare.

It sits on the top floor, next to :mod:`planner.validate` and :mod:`planner.show`, because it needs the
cost model and the materialized (torch) model at once; :mod:`planner.cost` stays torch-free.

DeepSpeed counts MACs for ``F.linear``, ``F.conv*`` and ``matmul``/``bmm``-style products, and counts
parameters as ``sum(p.numel())``. The materialized model computes sparse attention kinds as a masked
dense product, so the measured MACs match ``estimate(..., attention="dense")``; the default exact count
is lower by the masked pairs (documented in ``docs/cost-model.md`` and tested as such).

torch and deepspeed are imported inside :func:`profile` only (importing deepspeed takes seconds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from planner.cost.estimate import estimate
from planner.cost.formulas import AttentionMode
from planner.ir.graph import EncoderGraph

__all__ = ["ProfileResult", "flops_profiler_module_macs", "format_profile", "profile"]


@dataclass(frozen=True)
class ProfileResult:
    """Analytic against measured parameters and MACs (one utterance, batch 1).

    Attributes:
        analytic_params / analytic_macs: :func:`planner.estimate`.
        measured_params / measured_macs: DeepSpeed's flops profiler on the materialized model.
        samples: the utterance length in samples.
        attention: the analytic attention mode compared.
        leaf_macs: per leaf module path, ``(analytic, measured)`` MACs, where DeepSpeed attributes them.
    """

    analytic_params: int
    analytic_macs: int
    measured_params: int
    measured_macs: int
    samples: int
    attention: str
    leaf_macs: tuple[tuple[str, int, int], ...] = ()

    @staticmethod
    def _rel(a: int, m: int) -> float:
        return abs(a - m) / m if m else float(a != m)

    def to_dict(self) -> dict[str, Any]:
        return {
            "analytic": {"params": self.analytic_params, "macs": self.analytic_macs},
            "measured": {"params": self.measured_params, "macs": self.measured_macs},
            "rel_error": {"params": self._rel(self.analytic_params, self.measured_params),
                          "macs": self._rel(self.analytic_macs, self.measured_macs)},
            "samples": self.samples,
            "attention": self.attention,
        }  # fmt: skip


def _import_deepspeed_profiler() -> Any:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import logging

    from deepspeed.profiling.flops_profiler import FlopsProfiler
    from deepspeed.utils import logger

    logger.setLevel(logging.ERROR)
    return FlopsProfiler


def profile(graph: EncoderGraph, *, seconds: float | None = None, samples: int | None = None,
            attention: AttentionMode = "dense", seed: int = 0) -> ProfileResult:  # fmt: skip
    """Materializes ``graph``, runs one forward pass of one utterance under DeepSpeed's profiler.

    Args:
        graph: the architecture.
        seconds / samples: the utterance (default 1 s).
        attention: the analytic mode to compare; ``dense`` is what the model executes.
        seed: torch seed for the random weights and input.

    Returns:
        The :class:`ProfileResult`.

    Example:
        >>> import planner
        >>> r = profile(planner.load("studies/recycle-and-distill/armhubert-s.yaml"), seconds=1)  # doctest: +SKIP
        >>> r.to_dict()["rel_error"]  # doctest: +SKIP
        {'params': 0.0, 'macs': 0.0}
    """
    cost = estimate(graph, seconds=seconds, samples=samples, attention=attention)
    n = cost.samples[0]
    flops_profiler = _import_deepspeed_profiler()
    import torch

    from planner.compress import materialize

    torch.manual_seed(seed)
    model = materialize(graph).eval()
    inp = graph.spec.input
    if inp.kind == "waveform":
        x = torch.randn(1, n)
    else:
        x = torch.randn(1, inp.frames(n), int(inp.n_mels or 0))
    prof = flops_profiler(model)
    with torch.no_grad():
        prof.start_profile()
        try:  # the profiler patches torch.nn.functional globally: always restore it
            model(x)
            prof.stop_profile()
            measured_macs = int(prof.get_total_macs())
            measured_params = int(prof.get_total_params())
            rows = []
            modules = dict(model.named_modules())
            for lc in cost.layers:
                mod = modules.get(lc.name)
                if mod is not None and hasattr(mod, "__macs__"):
                    rows.append((lc.name, lc.macs, int(flops_profiler_module_macs(mod))))
        finally:
            prof.end_profile()
    return ProfileResult(cost.params, cost.macs, measured_params, measured_macs, n, attention, tuple(rows))


def flops_profiler_module_macs(module: Any) -> int:
    """MACs DeepSpeed attributed to a module and its children (its ``__macs__`` bookkeeping)."""
    from deepspeed.profiling.flops_profiler.profiler import get_module_macs

    return get_module_macs(module)


def format_profile(result: ProfileResult) -> str:
    """Analytic, measured and relative error, one line each for params and MACs."""
    d = result.to_dict()
    lines = [f"{'':8}{'analytic':>16}{'measured':>16}{'rel_error':>12}   "
             f"(1 utterance of {result.samples} samples, attention {result.attention})"]  # fmt: skip
    for key in ("params", "macs"):
        lines.append(f"{key:8}{d['analytic'][key]:>16,}{d['measured'][key]:>16,}{d['rel_error'][key]:>12.2e}")
    return "\n".join(lines)
