"""The Pareto plots (issue 15, part 5): checks on the figures the exporter builds, before they are saved.

The PNG's matplotlib figure and the HTML's plotly figure are built from one :class:`PlotData`; these tests
read the figure objects (title, legend, budget lines, trial numbers, drawing order, axis limits), not pixels.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from planner.search import EVALUATORS, SearchOptions, run_search

pytest.importorskip("matplotlib")

SPACE = """
format: 1
name: plots
width: {choice: [64, 96], name: width}
frontend:
  - kind: conv_extractor
    conv_layers: [[32, 10, 5], "2 x [32, 3, 2]"]
    projection: true
  - kind: layer_norm
layers:
  - kind: transformer
    repeat: {range: [1, 4]}
    heads: 2
    ffn: {choice: [64, 128, 256, 512]}
study:
  name: plots
  objectives: [{metric: params, direction: maximize}, {metric: macs, direction: minimize}]
  budgets: {params: 250000}
  sampler: {kind: random}
  n_trials: 14
  seed: 5
  evaluator: capacity
"""


@EVALUATORS.register("test_plot_score")
@dataclass(frozen=True)
class Score:
    """A quality metric that is the same for every candidate."""

    metrics: ClassVar[tuple[str, ...]] = ("score",)

    def evaluate(self, graph: Any, ctx: Any) -> dict[str, float]:
        return {"score": 1.0}


def _study(tmp_path: Path, text: str = SPACE):  # noqa: ANN202
    space = tmp_path / "space.yaml"
    space.write_text(text)
    return run_search(str(space), SearchOptions(storage=str(tmp_path / "s.journal"), progress=False))


def _scatter(ax, gid: str):  # noqa: ANN001, ANN202
    found = [c for c in ax.collections if c.get_gid() == gid]
    return found[0] if found else None


def test_png_has_title_legend_budget_line_and_trial_numbers(tmp_path: Path) -> None:
    from planner.search._pareto import plot_data, png_figure

    study = _study(tmp_path)
    data = plot_data(study)
    assert data.groups["Pareto"] and data.groups["infeasible"] and data.groups["dominated"], data.groups
    fig = png_figure(data)
    ax = fig.axes[0]
    title = ax.get_title()
    assert "study plots" in title and "params (maximize)" in title and "macs (minimize)" in title
    assert "params <= 2.5e+05" in title
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"Pareto front ({len(data.groups['Pareto'])})" in legend
    assert any(t.startswith("infeasible") for t in legend) and any(t.startswith("dominated") for t in legend)
    assert "budget params <= 2.5e+05" in legend
    lines = [line for line in ax.get_lines() if line.get_gid() == "budget.params"]
    assert len(lines) == 1 and list(lines[0].get_xdata()) == [250000, 250000]  # a vertical line at the budget
    numbers = sorted(int(n) for a in ax.texts for n in a.get_text().split(", ") if n.isdigit())
    assert numbers == sorted(n for n, _, _ in data.groups["Pareto"])  # every front point numbered
    front, infeasible = _scatter(ax, "Pareto"), _scatter(ax, "infeasible")
    assert front.get_zorder() > _scatter(ax, "dominated").get_zorder() > infeasible.get_zorder()  # front on top
    assert sorted(map(tuple, front.get_offsets().tolist())) == sorted((x, y) for _, x, y in data.groups["Pareto"])
    lo, hi = ax.get_xlim()
    assert lo < min(x for g in data.groups.values() for _, x, _ in g) and hi > 250000  # points and budget in view


def test_html_is_small_and_shows_the_same_trials(tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    from planner.search import export_pareto
    from planner.search._pareto import html_figure, plot_data

    study = _study(tmp_path)
    out = tmp_path / "front"
    export_pareto(study, out)
    html = (out / "pareto.html").read_text()
    assert (out / "plotly.min.js").stat().st_size > 1_000_000  # plotly's script, written once beside the page
    assert len(html.encode()) < 100_000, len(html)  # the page itself: data and layout only (5 MB when inlined)
    assert re.search(r'<script[^>]+src="plotly\.min\.js"', html)
    data = plot_data(study)
    fig = html_figure(data)
    traces = {t.uid: sorted(t.customdata) for t in fig.data}
    assert traces == {g: sorted(n for n, _, _ in pts) for g, pts in data.groups.items()}  # the PNG's trials
    assert fig.layout.title.text == data.title.replace("\n", "<br>")
    assert [s.x0 for s in fig.layout.shapes] == [250000]  # the budget line
    doc = json.loads((out / "pareto.json").read_text())
    assert sorted(p["trial"] for p in doc["points"]) == traces["Pareto"]


def test_a_constant_metric_gets_a_readable_axis(tmp_path: Path) -> None:
    from planner.search._pareto import plot_data, png_figure

    # heads change neither parameters nor storage: both objectives are constant
    text = SPACE.replace("width: {choice: [64, 96], name: width}", "width: 64").replace(
        "repeat: {range: [1, 4]}", "repeat: 2").replace("heads: 2", "heads: {choice: [1, 2, 4]}").replace(
        "ffn: {choice: [64, 128, 256, 512]}", "ffn: 128").replace("{metric: macs, direction: minimize}",
                                                                  "{metric: storage_bytes}")  # fmt: skip
    data = plot_data(_study(tmp_path, text.replace("n_trials: 14", "n_trials: 4")))
    (_, x, y), *_ = data.groups["Pareto"]
    for (lo, hi), v in zip(data.limits, (x, y)):
        assert lo < v < hi and hi - lo >= 0.09 * v  # a span of about 10 % around the value, not 1e-8
    ax = png_figure(data).axes[0]
    for axis in (ax.xaxis, ax.yaxis):
        assert axis.get_major_formatter().get_useOffset() is False
    labels = sorted({t.get_text() for t in ax.texts})
    assert labels and "," in labels[0]  # architectures of equal cost share one label: "0, 1"


def test_an_impossible_budget_says_so(tmp_path: Path) -> None:
    from planner.search._pareto import plot_data, png_figure

    data = plot_data(
        _study(tmp_path, SPACE.replace("params: 250000", "params: 1000").replace("n_trials: 14", "n_trials: 5"))
    )
    assert not data.groups["Pareto"] and not data.groups["dominated"] and data.groups["infeasible"]
    ax = png_figure(data).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("infeasible") for t in legend) and "budget params <= 1000" in legend
    assert "no candidate within the budgets" in [t.get_text() for t in ax.texts]
    assert ax.get_xlim()[0] < 1000  # the budget line is in view, left of every candidate


def test_an_unevaluated_quality_axis_is_marked(tmp_path: Path) -> None:
    from planner.search._pareto import plot_data, png_figure

    text = SPACE.replace("params: 250000", "params: 1000").replace("n_trials: 14", "n_trials: 3")
    text = text.replace("evaluator: capacity", "evaluator: test_plot_score").replace(
        "{metric: macs, direction: minimize}", "{metric: score, direction: maximize}")  # fmt: skip
    data = plot_data(_study(tmp_path, text))
    assert data.measured == (True, False) and len(data.at_edge) == len(data.groups["infeasible"]) == 3
    ax = png_figure(data).axes[0]
    assert "no trial was evaluated" in ax.get_ylabel() and not list(ax.get_yticks())
    lo, hi = data.limits[1]
    assert all(y < lo + (hi - lo) * 0.1 for _, _, y in data.groups["infeasible"])  # at the worst (bottom) edge
