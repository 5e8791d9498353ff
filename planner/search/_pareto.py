"""Pareto front of a finished study and its export (CSV, JSON, one architecture file per point, plots)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from planner.errors import WriteError
from planner.files import staged_dir

__all__ = ["pareto_trials", "export_pareto"]


def _feasible(t: Any) -> bool:
    from optuna.trial import TrialState

    return t.state == TrialState.COMPLETE and bool(t.user_attrs.get("feasible")) and t.values is not None


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_trials(study: Any) -> list[Any]:
    """The feasible trials no other feasible trial dominates (all of the best for one objective), by number."""
    signs = [1.0 if d.name == "MINIMIZE" else -1.0 for d in study.directions]
    trials = [t for t in study.get_trials(deepcopy=False) if _feasible(t)]
    keyed = [(t, [s * v for s, v in zip(signs, t.values)]) for t in trials]
    front = [t for t, k in keyed if not any(_dominates(k2, k) for _, k2 in keyed)]
    return sorted(front, key=lambda t: t.number)


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


def _write_export(study: Any, out: Path) -> dict[str, Any]:
    """Writes the export files into the (staging) folder ``out``."""
    from planner.search._optuna import architecture_yaml

    names = study.user_attrs.get("objectives") or [f"objective{i}" for i in range(len(study.directions))]
    front = pareto_trials(study)
    points = []
    for t in front:
        arch = f"trial-{t.number:04d}.yaml"
        (out / arch).write_text(architecture_yaml(t.user_attrs["architecture"]), encoding="utf-8")
        points.append({"trial": t.number, "objectives": dict(zip(names, t.values)),
                       "cost": t.user_attrs.get("cost", {}), "quality": t.user_attrs.get("quality", {}),
                       "params": t.params, "architecture": arch})  # fmt: skip
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
        w.writerow([p["trial"], *p["objectives"].values(), *(p["cost"].get(k, "") for k in cost_keys), p["architecture"]])
    (out / "pareto.csv").write_text(buf.getvalue(), encoding="utf-8")
    _plots(study, front, names, out)
    return doc


def _plots(study: Any, front: list[Any], names: list[str], out: Path) -> None:
    """PNG (matplotlib) and HTML (optuna.visualization with plotly) when installed; a message otherwise."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(names) < 2:
        print("plots: one objective, no Pareto plot", file=sys.stderr)
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plots: matplotlib is not installed, skipping pareto.png (pip install matplotlib)", file=sys.stderr)
    else:
        on_front = {t.number for t in front}
        groups = {
            "infeasible": [t for t in trials if not t.user_attrs.get("feasible") and t.user_attrs.get("cost")],
            "dominated": [t for t in trials if _feasible(t) and t.number not in on_front],
            "Pareto": front,
        }
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for label, style in (("dominated", dict(c="tab:blue", alpha=0.5)), ("Pareto", dict(c="tab:red"))):
            pts = [(t.values[0], t.values[1]) for t in groups[label] if t.values]
            if pts:
                ax.scatter(*zip(*pts), label=f"{label} ({len(groups[label])})", **style)
        # Infeasible candidates were priced but never evaluated: cost axes show their cost, a quality axis
        # without a value puts them on the bottom/left edge.
        edge = (ax.get_xlim()[0], ax.get_ylim()[0])
        pts = []
        for t in groups["infeasible"]:
            cost = t.user_attrs.get("cost", {})
            xy = [cost.get(n, float("nan")) for n in names[:2]]
            pts.append(tuple(v if v == v and abs(v) != float("inf") else edge[i] for i, v in enumerate(xy)))
        if pts:
            ax.scatter(*zip(*pts), c="0.6", marker="x", label=f"infeasible, not evaluated ({len(pts)})")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "pareto.png", dpi=120)
        plt.close(fig)
    try:
        import plotly  # noqa: F401
    except ImportError:
        print("plots: plotly is not installed, skipping pareto.html (pip install plotly)", file=sys.stderr)
        return
    import optuna.visualization as vis

    # infeasible trials are told apart by the constraints the adapter set on each trial (trial.constraints);
    # invalid candidates have no finite objective values, so they are left out of the plot
    plotted = [t for t in trials if t.values and all(abs(v) != float("inf") for v in t.values)]
    fig = vis.plot_pareto_front(_Only(study, plotted), target_names=names[:3],
                                targets=None if len(names) <= 3 else (lambda t: t.values[:3]),
                                include_dominated_trials=True)  # fmt: skip
    fig.write_html(str(out / "pareto.html"))  # self-contained (embeds plotly.js, ~5 MB): opens offline


class _Only:
    """A read-only view of a study that shows only some of its trials (for plotting)."""

    def __init__(self, study: Any, trials: list[Any]) -> None:
        self._study = study
        self._trials = trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
        return [t for t in self._trials if states is None or t.state in states]

    @property
    def trials(self) -> list[Any]:
        return list(self._trials)
