"""optuna-dashboard reads a planner study: the study list, every trial with its architecture and cost,
and the Pareto front, through the dashboard's own WSGI app (no server, no network)."""

from __future__ import annotations

import json
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
from optuna_dashboard import wsgi

from support import SMALL, run_study


def _get(app, path: str) -> tuple[str, dict]:  # noqa: ANN001
    status = {}

    def start(code: str, headers: list, exc_info: object = None) -> None:
        status["code"] = code

    env = {"PATH_INFO": path}
    setup_testing_defaults(env)
    body = b"".join(app(env, start))
    return status["code"], json.loads(body)


def test_dashboard_serves_a_planner_study(tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(SMALL)
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = run_study(space, url)
    app = wsgi(optuna.storages.RDBStorage(url))
    code, listing = _get(app, "/api/studies")
    assert code == "200 OK"
    (summary,) = listing["study_summaries"]
    assert summary["study_name"] == "tiny" and summary["directions"] == ["minimize", "minimize"]
    code, detail = _get(app, f"/api/studies/{summary['study_id']}")
    assert code == "200 OK"
    assert len(detail["trials"]) == len(study.trials) == 8
    for trial in detail["trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert {"architecture", "cost", "feasible"} <= attrs.keys()
        assert json.loads(attrs["architecture"])["name"] == "tiny"
    assert {t["number"] for t in detail["best_trials"]} == {t.number for t in study.best_trials}
