"""Crash recovery and shared storages: a SIGKILLed search resumes (heartbeats), two workers on PostgreSQL.

The PostgreSQL test needs ``PLANNER_TEST_POSTGRES_URL`` (``.ci/postgres.sh`` starts a server and sets it).
Without it the test is skipped locally and fails under CI (``CI=true``), so CI never skips it silently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

SLEEPY = """
format: 1
name: sleepy
width: {choice: [64, 96], name: width}
frontend:
  - kind: conv_extractor
    conv_layers: [[32, 10, 5], "2 x [32, 3, 2]"]
    projection: true
  - kind: layer_norm
layers:
  - kind: transformer
    repeat: {range: [1, 4]}
    heads: {choice: [2, 4]}
    ffn: {range: [64, 256], step: 64}
study:
  name: sleepy
  objectives: [{metric: params}, {metric: macs}]
  sampler: {kind: random}
  n_trials: 5
  seed: 0
  evaluator: {kind: sleep, seconds: 0.6}
  heartbeat: {interval: 1, grace: 2, retries: 2}
"""

# `planner search` with one more evaluator: it sleeps, so the test can kill the process inside a trial
RUNNER = """
import sys, time
from dataclasses import dataclass
from typing import ClassVar
from planner.search import EVALUATORS

@EVALUATORS.register("sleep")
@dataclass(frozen=True)
class SleepEvaluator:
    seconds: float = 0.5
    metrics: ClassVar[tuple[str, ...]] = ()

    def evaluate(self, graph, ctx):
        time.sleep(self.seconds)
        return {}

from planner.cli import main
sys.exit(main(["search", *sys.argv[1:]]))
"""


def _states(url: str, name: str) -> list:
    import optuna

    from planner.search._optuna import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url, None)).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def test_sigkill_mid_trial_then_resume(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    space, runner = tmp_path / "sleepy.yaml", tmp_path / "runner.py"
    space.write_text(SLEEPY)
    runner.write_text(RUNNER)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    cmd = [sys.executable, str(runner), str(space), "--storage", url]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    try:
        while True:  # wait until two trials completed and a third is inside its evaluator
            trials = _states(url, "sleepy")
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            if len(done) >= 2 and any(t.state == TrialState.RUNNING and "cost" in t.user_attrs for t in trials):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "the search ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = {t.number: t.params for t in _states(url, "sleepy") if t.state == TrialState.COMPLETE}
    stale = [t.number for t in _states(url, "sleepy") if t.state == TrialState.RUNNING]
    assert len(before) >= 2 and len(stale) == 1
    time.sleep(2.5)  # past the grace period: the killed trial's heartbeat is stale
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    trials = _states(url, "sleepy")
    after = {t.number: t.params for t in trials if t.state == TrialState.COMPLETE}
    assert len(after) == 5  # the study reaches its trial count
    assert all(after.get(n) == p for n, p in before.items())  # every completed trial is still there
    by_number = {t.number: t for t in trials}
    assert by_number[stale[0]].state == TrialState.FAIL  # marked failed by the heartbeat check
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == stale[0]]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == by_number[stale[0]].params  # the same candidate, run again


def _postgres_url() -> str:
    url = os.environ.get("PLANNER_TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true but PLANNER_TEST_POSTGRES_URL is not set: .ci/run must source .ci/postgres.sh")
    pytest.skip("PLANNER_TEST_POSTGRES_URL is not set (source .ci/postgres.sh to start a PostgreSQL server)")


def test_two_workers_exact_count_postgres(tmp_path: Path) -> None:
    pytest.importorskip("psycopg2", reason="psycopg2-binary is in the dev extra")
    from planner.search import SearchOptions, run_search

    url = _postgres_url()
    space = tmp_path / "tiny.yaml"
    space.write_text(SLEEPY.replace("{kind: sleep, seconds: 0.6}", "capacity"))
    name = f"tiny-{uuid.uuid4().hex[:8]}"  # a fresh study in a database that may outlive the test
    study = run_search(str(space), SearchOptions(storage=url, study=name, n_trials=6, workers=2, progress=False))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == 6 and len(set(numbers)) == 6
    assert all(t.state.name == "COMPLETE" for t in study.trials)
