"""USM-Lite model-size ratios (Ding et al., Tables 1-3) reproduced from ``studies/usm-lite/*.yaml``.

    python -m planner.cost.usm_table            # prints the markdown table of studies/usm-lite/README.md

Three ratios per setting, each against the float32 model:

* ``paper``: the paper's accounting, over the compressed weight matrices only (every fully-connected layer of
  the conformer layers: attention, FFN and the convolution module's pointwise layers): packed weight values +
  N:M masks + float32 scales, no zero points, no biases.
* ``matrices``: the same leaves at our exact storage (:func:`planner.cost.leaf_storage_bytes`: plus one
  byte of zero point per scale group for asymmetric grids, float32 biases on both sides).
* ``model``: the whole model's ``storage_bytes`` (depthwise convolutions, norms, subsampling and the CTC layer
  stay float32).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from planner.cost.estimate import estimate
from planner.cost.storage import leaf_storage_bytes, weight_storage_bytes
from planner.ir import load
from planner.ir.compression import FLOAT32
from planner.ir.graph import EncoderGraph

__all__ = ["PAPER", "UsmRatio", "usm_ratios", "markdown_table"]

# setting file stem -> (paper's model size ratio in %, where it is reported: table and experiment ids)
PAPER: dict[str, tuple[float, str]] = {
    "int8": (25.0, "Table 1, E1"),
    "int4": (12.5, "Table 1, E3"),
    "int2": (6.3, "Table 1, E4"),
    "int2-g16": (7.3, "Table 1, E5"),
    "int2-g32": (8.3, "Table 1, E6"),
    "int2-g64": (10.4, "Table 1, E7"),
    "2of4": (53.1, "Table 2, E8/E9"),
    "1of4": (28.1, "Table 2, E10/E11"),
    "int4-2of4": (9.4, "Table 3, E12/E13"),
}
STUDIES = Path(__file__).resolve().parents[2] / "studies" / "usm-lite"


@dataclass(frozen=True)
class UsmRatio:
    """Size ratios of one setting, in percent of the float32 model (see the module docstring)."""

    setting: str
    paper_figure: float
    paper: float
    matrices: float
    model: float
    storage_bytes: int


def ratios(graph: EncoderGraph, float_graph: EncoderGraph) -> tuple[float, float, float]:
    """``(paper, matrices, model)`` ratios in percent of ``graph`` against its float ``float_graph``."""
    leaves = {p: lf for p, _, lf in graph.leaves()}
    num_paper = den_paper = num = den = 0
    for path, comp in graph.compression.items():
        lf = leaves[path]
        num_paper += weight_storage_bytes(lf, comp, zero_points=False)
        den_paper += 4 * lf.weight_numel
        num += leaf_storage_bytes(lf, comp)
        den += leaf_storage_bytes(lf, FLOAT32)
    model = estimate(graph, layers=False).storage_bytes / estimate(float_graph, layers=False).storage_bytes
    return 100 * num_paper / den_paper, 100 * num / den, 100 * model


def usm_ratios(directory: str | Path = STUDIES) -> list[UsmRatio]:
    """Every setting of :data:`PAPER` found in ``directory``, against ``usm-2b.yaml``."""
    directory = Path(directory)
    base = load(directory / "usm-2b.yaml")
    out = []
    for name, (figure, _) in PAPER.items():
        graph = load(directory / f"{name}.yaml")
        p, m, w = ratios(graph, base)
        out.append(UsmRatio(name, figure, p, m, w, estimate(graph, layers=False).storage_bytes))
    return out


def markdown_table(rows: list[UsmRatio]) -> str:
    lines = ["| setting | paper | ours, paper accounting | ours, matrices exact | ours, whole model | storage |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| `{r.setting}.yaml` ({PAPER[r.setting][1]}) | {r.paper_figure:.1f}% | {r.paper:.2f}% "
                     f"| {r.matrices:.2f}% | {r.model:.2f}% | {r.storage_bytes / 2**20:,.1f} MiB |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    print(markdown_table(usm_ratios(sys.argv[1] if len(sys.argv) > 1 else STUDIES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
