"""Pareto front of a finished study and its export (CSV, JSON, one architecture file per point, plots)."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import WriteError
from planner.files import staged_dir

__all__ = [
    "pareto_trials",
    "export_pareto",
    "current_budgets",
    "within",
    "plot_data",
    "PlotData",
    "png_figure",
    "html_figure",
]


def within(t: Any, budgets: dict[str, float]) -> bool:
    """Whether the stored cost of trial ``t`` meets every budget (a metric it lacks does not)."""
    cost = t.user_attrs.get("cost") or {}
    for metric, bound in budgets.items():
        v = cost.get(metric)
        if v is None or not (v <= bound):  # NaN is over
            return False
    return True


def _feasible(t: Any, budgets: dict[str, float] | None = None) -> bool:
    """A complete, evaluated trial within ``budgets`` (the budgets it was run under when None)."""
    from optuna.trial import TrialState

    if not (t.state == TrialState.COMPLETE and bool(t.user_attrs.get("feasible")) and t.values is not None):
        return False
    return budgets is None or within(t, budgets)


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def current_budgets(study: Any) -> dict[str, float]:
    """The study's budgets now: those of its space file at its last ``planner search`` run."""
    return dict(study.user_attrs.get("budgets") or {})


def pareto_trials(study: Any, budgets: dict[str, float] | None = None) -> list[Any]:
    """The feasible trials no other feasible trial dominates (all of the best for one objective), by number.

    Feasible means evaluated and within ``budgets`` (default: the study's current budgets,
    :func:`current_budgets`), so a budget tightened after the trials ran drops the points over it. One
    architecture is one point: of the trials that evaluated the same architecture (``arch_key``; a repeat is
    answered from the first), only the first is kept.
    """
    budgets = current_budgets(study) if budgets is None else budgets
    signs = [1.0 if d.name == "MINIMIZE" else -1.0 for d in study.directions]
    trials, seen = [], set()
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        key = t.user_attrs.get("arch_key")
        if _feasible(t, budgets) and (key is None or key not in seen):
            seen.add(key)
            trials.append(t)
    keyed = [(t, [s * v for s, v in zip(signs, t.values)]) for t in trials]
    return [t for t, k in keyed if not any(_dominates(k2, k) for _, k2 in keyed)]


def _check_target(out: Path, force: bool) -> None:
    """Refuses an export folder that holds anything but an earlier Pareto export (and that one without force)."""
    if out.exists() and not out.is_dir():
        raise WriteError(f"{out}: is a file, not a folder; give a folder for the Pareto export")
    if not out.is_dir() or not any(out.iterdir()):
        return
    previous = out / "pareto.json"
    try:
        kind = json.loads(previous.read_text(encoding="utf-8")).get("type") if previous.is_file() else None
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != "planner.pareto":
        raise WriteError(f"{out}: the folder holds files that are not a Pareto export (no pareto.json of type "
                         "planner.pareto); nothing was changed. Give an empty or new folder")  # fmt: skip
    if not force:
        raise WriteError(f"{out}: holds a Pareto export already; nothing was changed. Pass --force to replace it "
                         "whole (the new export is written beside it and swapped in), or give a new folder")  # fmt: skip


def export_pareto(study: Any, out: str | Path, force: bool = False) -> dict[str, Any]:
    """Writes ``pareto.csv``, ``pareto.json``, ``trial-NNNN.yaml`` per point and plots into the folder ``out``.

    The export is built in a new folder beside ``out`` and swapped in whole (:func:`planner.files.staged_dir`):
    a kill or a full disk leaves the old folder as it was, and two studies' files never mix.

    Args:
        study: the Optuna study.
        out: the export folder: new, empty, or (with ``force``) an earlier Pareto export to replace.
        force: replace an earlier Pareto export.

    Raises:
        WriteError: ``out`` is a file, holds files that are not a Pareto export, or holds one without
            ``force``; or the disk is full.

    Returns:
        the ``pareto.json`` document.
    """
    out = Path(out)
    _check_target(out, force)
    with staged_dir(out) as tmp:
        doc = _write_export(study, tmp)
    return doc


def _write_inherited(supernet: dict[str, Any], text: str, path: Path) -> str:
    """Writes a point's weights inherited from the study's supernet (batch norm recalibrated), a state dict
    of its compressed model that ``planner train ARCH --init FILE`` loads; returns the file name."""
    from safetensors.torch import save_file

    from planner.ir.io import loads
    from planner.search._evaluators import supernet_scorer

    graph = loads(text, str(path.with_suffix(".yaml")))
    scorer = supernet_scorer(supernet["checkpoint"], supernet["recipe"], None, supernet.get("recalibrate"))
    state = {k: v.detach().cpu().contiguous() for k, v in scorer.extract(graph).state_dict().items()}
    save_file(state, str(path))
    return path.name


def _write_export(study: Any, out: Path) -> dict[str, Any]:
    """Writes the export files into the (staging) folder ``out``."""
    from planner.search._optuna import architecture_yaml

    names = study.user_attrs.get("objectives") or [f"objective{i}" for i in range(len(study.directions))]
    front = pareto_trials(study)
    points = []
    supernet = study.user_attrs.get("supernet")
    for t in front:
        arch = f"trial-{t.number:04d}.yaml"
        text = architecture_yaml(t.user_attrs["architecture"])
        (out / arch).write_text(text, encoding="utf-8")
        point = {"trial": t.number, "objectives": dict(zip(names, t.values)), "cost": t.user_attrs.get("cost", {}),
                 "quality": t.user_attrs.get("quality", {}), "params": t.params, "architecture": arch}  # fmt: skip
        if supernet is not None:
            point["weights"] = _write_inherited(supernet, text, out / f"trial-{t.number:04d}.safetensors")
        points.append(point)
    doc = {"type": "planner.pareto", "format": 1, "study": study.study_name,
           "directions": [d.name.lower() for d in study.directions], "objectives": names,
           "budgets": study.user_attrs.get("budgets", {}), "seconds": study.user_attrs.get("seconds"),
           "points": points}  # fmt: skip
    (out / "pareto.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    cost_keys = sorted({k for p in points for k in p["cost"]})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", *names, *(f"cost.{k}" for k in cost_keys), "architecture"])
    for p in points:
        w.writerow(
            [p["trial"], *p["objectives"].values(), *(p["cost"].get(k, "") for k in cost_keys), p["architecture"]]
        )
    (out / "pareto.csv").write_text(buf.getvalue(), encoding="utf-8")
    _plots(study, front, names, out)
    return doc


GROUPS = ("infeasible", "dominated", "Pareto")  # drawn in this order: the front above the rest


@dataclass(frozen=True)
class PlotData:
    """What both Pareto plots (PNG and HTML) show: the same trials at the same places.

    Attributes:
        title: study, plotted objectives and budgets (two lines).
        names: the two plotted objectives (the first two of the study's).
        directions: theirs (``minimize`` / ``maximize``).
        budgets: the study's current budgets; those of a plotted objective are drawn as lines.
        groups: ``{group: [(trial number, x, y)]}`` for :data:`GROUPS`; one point per architecture.
        at_edge: infeasible trials drawn at the worst edge of an axis (a quality metric never evaluated).
        limits: ``(low, high)`` of each axis: the points and budget lines with a margin, and a readable
            span when a metric is constant.
        measured: whether any plotted trial has a value of each axis's metric (none: no ticks, a note).
    """

    title: str
    names: tuple[str, str]
    directions: tuple[str, str]
    budgets: dict[str, float]
    groups: dict[str, list[tuple[int, float, float]]]
    at_edge: tuple[int, ...]
    limits: tuple[tuple[float, float], tuple[float, float]]
    measured: tuple[bool, bool] = (True, True)

    def label(self, group: str) -> str:
        n = len(self.groups[group])
        if group == "Pareto":
            return f"Pareto front ({n})"
        if group == "infeasible":
            edge = f"; {len(self.at_edge)} not evaluated, at the edge" if self.at_edge else ""
            return f"infeasible: over a budget ({n}{edge})"
        return f"dominated ({n})"

    def axis_label(self, i: int) -> str:
        better = "lower" if self.directions[i] == "minimize" else "higher"
        none = "; no trial was evaluated" if not self.measured[i] else ""
        return f"{self.names[i]} ({better} is better{none})"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def plot_data(study: Any, names: list[str] | None = None) -> PlotData:
    """The points, groups, title and axis limits of the Pareto plots of ``study`` (two or more objectives).

    Trials are grouped under the study's current budgets: the front (:func:`pareto_trials`), the other
    feasible trials, and the priced but infeasible ones (their cost metrics at their values; a quality
    metric they never got at the worst edge of its axis). Invalid candidates (never priced) are left out.
    """
    from optuna.trial import TrialState

    names = names or study.user_attrs.get("objectives") or [f"objective{i}" for i in range(len(study.directions))]
    directions = [d.name.lower() for d in study.directions]
    budgets = current_budgets(study)
    front = pareto_trials(study)
    on_front = {t.number for t in front}
    seen: set[Any] = {t.user_attrs.get("arch_key") for t in front}
    raw: dict[str, list[tuple[int, float | None, float | None]]] = {g: [] for g in GROUPS}
    raw["Pareto"] = [(t.number, t.values[0], t.values[1]) for t in front]
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        key = t.user_attrs.get("arch_key")
        if t.number in on_front or t.state != TrialState.COMPLETE or not t.user_attrs.get("cost") or key in seen:
            continue
        seen.add(key)
        if _feasible(t, budgets):
            raw["dominated"].append((t.number, t.values[0], t.values[1]))
            continue
        cost = t.user_attrs["cost"]
        xy = []
        for i in range(2):
            v = t.values[i] if t.values is not None else None
            xy.append(v if _finite(v) else cost.get(names[i]) if _finite(cost.get(names[i])) else None)
        raw["infeasible"].append((t.number, xy[0], xy[1]))
    limits, measured = [], []
    for i in range(2):
        vals = [p[1 + i] for g in GROUPS for p in raw[g] if p[1 + i] is not None]
        measured.append(bool(vals))
        if names[i] in budgets:
            vals.append(budgets[names[i]])
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        pad = (hi - lo) * 0.08 if hi > lo else max(abs(lo) * 0.05, 1.0)  # a constant metric: a readable span
        limits.append((lo - pad, hi + pad))
    edge = [hi - (hi - lo) * 0.03 if directions[i] == "minimize" else lo + (hi - lo) * 0.03
            for i, (lo, hi) in enumerate(limits)]  # fmt: skip
    groups: dict[str, list[tuple[int, float, float]]] = {}
    at_edge = []
    for g in GROUPS:
        groups[g] = []
        for n, x, y in raw[g]:
            if x is None or y is None:
                at_edge.append(n)
            groups[g].append((n, float(edge[0] if x is None else x), float(edge[1] if y is None else y)))
    more = f", the first 2 of {len(names)} objectives" if len(names) > 2 else ""
    limit_text = ", ".join(f"{m} <= {b:.4g}" for m, b in budgets.items()) or "none"
    title = (f"study {study.study_name}: {names[0]} ({directions[0]}) vs {names[1]} ({directions[1]}){more}\n"
             f"budgets: {limit_text}")  # fmt: skip
    return PlotData(title, (names[0], names[1]), (directions[0], directions[1]), budgets, groups, tuple(at_edge),
                    (limits[0], limits[1]), (measured[0], measured[1]))  # fmt: skip


def _front_labels(data: PlotData) -> dict[tuple[float, float], str]:
    """The trial numbers to write beside the front's points, one label per place (``3, 7`` when two
    architectures cost the same)."""
    at: dict[tuple[float, float], list[int]] = {}
    for n, x, y in data.groups["Pareto"]:
        at.setdefault((x, y), []).append(n)
    return {xy: ", ".join(map(str, ns[:4])) + (f" +{len(ns) - 4}" if len(ns) > 4 else "") for xy, ns in at.items()}


_STYLE = {"infeasible": {"color": "0.55", "marker": "x", "zorder": 2},
          "dominated": {"color": "tab:blue", "marker": "o", "alpha": 0.55, "zorder": 3},
          "Pareto": {"color": "tab:red", "marker": "o", "edgecolors": "black", "zorder": 4}}  # fmt: skip


def png_figure(data: PlotData) -> Any:
    """The matplotlib figure of ``pareto.png`` (not saved; the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.add_subplot()
    for g in GROUPS:
        pts = data.groups[g]
        if pts:
            ax.scatter([p[1] for p in pts], [p[2] for p in pts], label=data.label(g), gid=g, **_STYLE[g])
    front = sorted(data.groups["Pareto"], key=lambda p: p[1])
    if len(front) > 1:
        ax.plot([p[1] for p in front], [p[2] for p in front], color="tab:red", lw=0.8, alpha=0.6, zorder=4)
    for (x, y), text in _front_labels(data).items():
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, zorder=5)
    for i, name in enumerate(data.names):
        if name in data.budgets:
            line = ax.axvline if i == 0 else ax.axhline
            line(data.budgets[name], color="tab:orange", ls="--", lw=1.2, zorder=1,
                 label=f"budget {name} <= {data.budgets[name]:.4g}", gid=f"budget.{name}")  # fmt: skip
    if not data.groups["Pareto"]:
        ax.text(0.5, 0.5, "no candidate within the budgets", transform=ax.transAxes, ha="center", va="center",
                fontsize=11, color="tab:red", alpha=0.8)  # fmt: skip
    ax.set_xlim(*data.limits[0])
    ax.set_ylim(*data.limits[1])
    for axis in (ax.xaxis, ax.yaxis):
        fmt = axis.get_major_formatter()
        if hasattr(fmt, "set_useOffset"):
            fmt.set_useOffset(False)  # a constant metric reads 33984, not 1e-8 + 3.3984e4
    if not data.measured[0]:
        ax.set_xticks([])  # no value to read off
    if not data.measured[1]:
        ax.set_yticks([])
    ax.set_xlabel(data.axis_label(0))
    ax.set_ylabel(data.axis_label(1))
    ax.set_title(data.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def html_figure(data: PlotData) -> Any:
    """The plotly figure of ``pareto.html``: the same trials, groups, budget lines and title as the PNG."""
    import plotly.graph_objects as go

    labels = _front_labels(data)
    colors = {"infeasible": "#8c8c8c", "dominated": "rgba(31,119,180,0.55)", "Pareto": "#d62728"}
    fig = go.Figure()
    for g in GROUPS:
        pts = data.groups[g]
        fig.add_trace(go.Scatter(
            x=[p[1] for p in pts], y=[p[2] for p in pts], customdata=[p[0] for p in pts], name=data.label(g),
            mode="markers+text" if g == "Pareto" else "markers",
            text=[labels.pop((p[1], p[2]), "") for p in pts] if g == "Pareto" else None,
            textposition="top right", marker={"color": colors[g], "symbol": "x" if g == "infeasible" else "circle",
                                              "size": 9}, uid=g,
            hovertemplate=f"trial %{{customdata}}<br>{data.names[0]} %{{x}}<br>{data.names[1]} %{{y}}<extra>{g}</extra>"))  # fmt: skip
    for i, name in enumerate(data.names):
        if name in data.budgets:
            text = f"budget {name} <= {data.budgets[name]:.4g}"
            add = fig.add_vline if i == 0 else fig.add_hline
            add(data.budgets[name], line_dash="dash", line_color="orange", annotation_text=text, name=text)
    fig.update_layout(title=data.title.replace("\n", "<br>"), xaxis_title=data.axis_label(0),
                      yaxis_title=data.axis_label(1), xaxis_range=list(data.limits[0]),
                      yaxis_range=list(data.limits[1]), template="plotly_white",
                      xaxis_showticklabels=data.measured[0], yaxis_showticklabels=data.measured[1])  # fmt: skip
    return fig


def _plots(study: Any, front: list[Any], names: list[str], out: Path) -> None:
    """``pareto.png`` (matplotlib) and ``pareto.html`` (plotly, its script once in ``plotly.min.js``) when
    installed; a message otherwise."""
    if len(names) < 2:
        print("plots: one objective, no Pareto plot", file=sys.stderr)
        return
    data = plot_data(study, names)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plots: matplotlib is not installed, skipping pareto.png (pip install matplotlib)", file=sys.stderr)
    else:
        png_figure(data).savefig(out / "pareto.png", dpi=120)
    try:
        import plotly  # noqa: F401
    except ImportError:
        print("plots: plotly is not installed, skipping pareto.html (pip install plotly)", file=sys.stderr)
        return
    # the script beside the page (written once per export folder), not inlined: ~10 KB per page, not ~5 MB
    html_figure(data).write_html(str(out / "pareto.html"), include_plotlyjs="directory")
