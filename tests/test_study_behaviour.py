"""Studies behave as a user expects (issue 15, part 4): an edited space, a tightened budget, duplicate
architectures, Ctrl-C with workers, where the default storage is, broken pipes, warnings, counters, latency.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from hostile.support import Result
from planner.search import SearchOptions, run_search

ROOT = Path(__file__).resolve().parents[1]

SPACE = """
format: 1
name: small
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
  name: small
  objectives: [{metric: params, direction: maximize}, {metric: macs, direction: minimize}]
  budgets: {params: 100000000}
  sampler: {kind: random}
  n_trials: 12
  seed: 3
  evaluator: capacity
"""


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # noqa: ANN201
    """``planner ARGV`` in this process -> :class:`hostile.support.Result` (as the hostile corpus runs it)."""
    from planner.cli import main

    def run(argv: list) -> Result:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return Result(int(code), out, err)

    return run


def _space(folder: Path, text: str = SPACE, name: str = "space.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text)
    return p


def _run(space: Path, url: str, **kw) -> object:
    return run_search(str(space), SearchOptions(storage=url, progress=False, **kw))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


# ---------------------------------------------------------------------------------------------- edited space
def test_an_edited_space_is_refused_naming_the_domain(cli, tmp_path: Path) -> None:
    from hostile.support import refused, snapshot

    space = _space(tmp_path)
    journal = tmp_path / "s.journal"
    assert cli(["search", space, "--storage", journal, "--trials", "3"]).code == 0
    space.write_text(
        SPACE.replace("[64, 96]", "[64, 128]").replace("repeat: {range: [1, 4]}", "repeat: {range: [1, 6]}")
    )
    before = snapshot(journal)
    result = cli(["search", space, "--storage", journal, "--trials", "5"])
    refused(
        result,
        names=[str(space), "width", "one of 64, 96", "one of 64, 128", "layers[0].repeat", "--study NEW"],
        code=2,
    )
    assert "CategoricalDistribution" not in result.err
    assert snapshot(journal) == before  # nothing written to the study
    assert cli(["search", space, "--storage", journal, "--trials", "3", "--study", "small-2"]).code == 0  # a new study


def test_a_study_without_a_record_of_its_space_compares_its_trials(tmp_path: Path) -> None:
    # a study made by an earlier planner kept no "space" record: its trials' distributions are compared
    import optuna

    from planner.errors import ConfigError

    space = _space(tmp_path)
    journal = str(tmp_path / "s.journal")
    study = _run(space, journal, n_trials=3)
    study.set_user_attr("space", None)
    space.write_text(SPACE.replace("[64, 96]", "[64, 128]"))
    with pytest.raises(ConfigError) as err:
        _run(space, journal, n_trials=5)
    assert "domain 'width' was one of 64, 96, is now one of 64, 128" in str(err.value)
    assert len(optuna.load_study(study_name="small", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal))).trials) == 3  # fmt: skip


# ---------------------------------------------------------------------------------------------- budgets
def test_a_tightened_budget_refilters_the_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from planner.cli import main
    from planner.search import pareto_trials

    space = _space(tmp_path)
    journal = str(tmp_path / "s.journal")
    study = _run(space, journal)
    front = pareto_trials(study)
    assert len(front) >= 3, "the test needs a front of several points"
    params = sorted(t.user_attrs["cost"]["params"] for t in front)
    bound = params[len(params) // 2]  # about half of the front is over it
    over = sorted(t.number for t in front if t.user_attrs["cost"]["params"] > bound)
    space.write_text(SPACE.replace("params: 100000000", f"params: {bound}"))
    capsys.readouterr()
    assert main(["search", str(space), "--storage", journal]) == 0  # the study has its trials: nothing runs
    err = capsys.readouterr().err
    assert f"params 1e+08 -> {bound:g}" in err and f"{len(over)} of its {len(front)} Pareto point(s)" in err, err
    assert f"trial(s) {', '.join(map(str, over))})" in err
    out = tmp_path / "front"
    assert main(["pareto", "--study", "small", "--storage", journal, "--export", str(out)]) == 0
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["budgets"] == {"params": bound}
    assert doc["points"] and all(p["cost"]["params"] <= bound for p in doc["points"])
    assert not {p["trial"] for p in doc["points"]} & set(over)


# ---------------------------------------------------------------------------------------------- duplicates
def test_duplicate_architectures_are_one_point(tmp_path: Path) -> None:
    from planner.search import pareto_trials
    from planner.search._pareto import plot_data

    # two architectures only (width 64 or 96), ten trials: most are repeats, with the same values
    text = SPACE.replace("repeat: {range: [1, 4]}", "repeat: 1").replace(
        "ffn: {choice: [64, 128, 256, 512]}", "ffn: 128"
    )
    study = _run(_space(tmp_path, text), str(tmp_path / "d.journal"), n_trials=10)
    keys = {t.user_attrs["arch_key"] for t in study.trials}
    assert len(keys) == 2 and len(study.trials) == 10
    front = pareto_trials(study)
    assert len({t.user_attrs["arch_key"] for t in front}) == len(front)  # one point per architecture
    assert all("repeat_of" not in t.user_attrs for t in front)  # the first trial of each, not a repeat
    data = plot_data(study)
    drawn = [n for pts in data.groups.values() for n, _, _ in pts]
    assert len(drawn) == len(set(drawn)) == 2  # every architecture drawn once


# ---------------------------------------------------------------------------------------------- Ctrl-C
RUNNER = """
import os, signal, sys, time, weakref
from dataclasses import dataclass
from typing import ClassVar
from planner.search import EVALUATORS

@EVALUATORS.register("slow")
@dataclass(frozen=True)
class Slow:
    seconds: float = 0.3
    finalizer_signal: int = 0  # trial 1 sends this signal to its own process from inside a weakref callback
    metrics: ClassVar[tuple[str, ...]] = ()

    def evaluate(self, graph, ctx):
        with open(sys.argv[1], "a") as f:
            f.write(f"call {ctx.trial.number}\\n")
        if self.finalizer_signal and ctx.trial.number == 1:
            def finalizer(_):  # the garbage collector runs these anywhere; a raise inside one is lost
                os.kill(os.getpid(), self.finalizer_signal)
                for _ in range(100000):  # the handler runs here, inside the callback
                    pass
            class Garbage:
                pass
            item = Garbage()
            ref = weakref.ref(item, finalizer)
            del item
        time.sleep(self.seconds)
        return {}

if __name__ == "__main__":  # spawned workers import this file (and so register the evaluator) without running it
    from planner.cli import main

    sys.exit(main(["search", *sys.argv[2:]]))
"""


def _interrupted_search(
    tmp_path: Path, interrupt: Callable[[subprocess.Popen], None], workers: int = 2, evaluator: str = ""
) -> tuple[subprocess.Popen, str, str, float]:
    """``planner search --workers 2`` on a slow evaluator, ``interrupt(proc)`` once trials are being evaluated;
    the process, its storage URL, its stderr and the seconds from the interrupt to its exit."""
    slow = "{kind: slow, seconds: 0.3" + evaluator + "}"
    space = _space(tmp_path, SPACE.replace("evaluator: capacity", f"evaluator: {slow}"))
    runner, log = tmp_path / "runner.py", tmp_path / "calls.log"
    runner.write_text(RUNNER)
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = subprocess.Popen([sys.executable, str(runner), str(log), str(space), "--storage", url, "--workers",
                             str(workers), "--trials", "1000"], env=_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and not (log.exists() and len(log.read_text().splitlines()) >= 2):
            assert time.monotonic() < deadline, "no trial was evaluated"  # until trials are being evaluated
            time.sleep(0.05)
        t0 = time.monotonic()
        interrupt(proc)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc, url, err, took


@pytest.mark.parametrize("which", ["both", "one"])
def test_workers_interrupted_alone_end_the_run_as_interrupted(tmp_path: Path, which: str) -> None:
    """SIGTERM to the workers only (the parent sees no signal): the same one line and exit 130 as a Ctrl-C,
    not "worker(s) failed" (the order a loaded machine can give a terminal's Ctrl-C too). One interrupted
    worker ends the run: the other is stopped, not left to run its share."""
    from planner.search._run import STOP_GRACE_S

    def workers_only(proc: subprocess.Popen) -> None:
        found = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "spawn_main"], capture_output=True, text=True)
        workers = [int(pid) for pid in found.stdout.split()]
        assert len(workers) == 2, found
        for pid in workers[: 2 if which == "both" else 1]:
            os.kill(pid, signal.SIGTERM)

    proc, url, err, took = _interrupted_search(tmp_path, workers_only)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "worker(s) failed" not in err, err
    lines = [line for line in err.splitlines() if ": interrupted;" in line]
    assert len(lines) == 1 and "rerun the same command to resume" in lines[0], err
    assert took < STOP_GRACE_S, f"took {took:.1f} s"
    _assert_none_running(url)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupt_a_finalizer_swallows_is_delivered_again(tmp_path: Path, workers: int) -> None:
    """The signal's handler runs inside a weakref callback (the garbage collector runs them anywhere), where
    Python prints "Exception ignored" and drops the KeyboardInterrupt: the interrupt still stops the trial it
    came in, at once, with the one line and no traceback (one process: SIGINT; a worker: its SIGTERM)."""
    import optuna

    from planner.search._optuna import open_storage

    sig = signal.SIGINT if workers == 1 else signal.SIGTERM
    proc, url, err, _ = _interrupted_search(tmp_path, lambda proc: None, workers, f", finalizer_signal: {int(sig)}")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = [line for line in err.splitlines() if ": interrupted;" in line]
    assert len(lines) == 1 and "rerun the same command to resume" in lines[0], err
    trials = {
        t.number: t.state.name for t in optuna.load_study(study_name="small", storage=open_storage(url, None)).trials
    }
    assert trials[1] == "FAIL", trials  # the trial it came in, not the next one
    _assert_none_running(url)
    if workers == 1:
        assert trials == {0: "COMPLETE", 1: "FAIL"}, trials
        assert (tmp_path / "calls.log").read_text().split() == ["call", "0", "call", "1"]


def _assert_none_running(url: str) -> None:
    import optuna

    from planner.search._optuna import open_storage

    states = [t.state.name for t in optuna.load_study(study_name="small", storage=open_storage(url, None)).trials]
    assert states and "RUNNING" not in states, states


@pytest.mark.parametrize("who", ["group", pytest.param("parent", marks=pytest.mark.slow)])  # ~10 s each, 2 cores
def test_ctrl_c_with_workers_stops_at_once_leaving_no_trial_running(tmp_path: Path, who: str) -> None:
    """``group``: a terminal's Ctrl-C reaches every process; ``parent``: ``kill -INT`` of planner only."""
    import optuna

    from planner.search._optuna import open_storage
    from planner.search._run import STOP_GRACE_S

    def ctrl_c(proc: subprocess.Popen) -> None:
        if who == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)

    proc, url, err, took = _interrupted_search(tmp_path, ctrl_c)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.splitlines() if "interrupt" in line.lower()]
    assert len(lines) == 1 and "rerun the same command to resume" in lines[0], err
    # one 0.3 s evaluation per worker to finish, the processes to exit: well under the kill deadline
    assert took < STOP_GRACE_S, f"took {took:.1f} s"
    study = optuna.load_study(study_name="small", storage=open_storage(url, None))
    states = [t.state.name for t in study.trials]
    assert states and "RUNNING" not in states, states
    assert f"its {states.count('COMPLETE')} finished trial(s) are kept" in lines[0]


# ---------------------------------------------------------------------------------------------- storage location
def test_the_default_storage_follows_the_space_not_the_folder(cli, tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    space = _space(project / "spaces", SPACE.replace("n_trials: 12", "n_trials: 2"))
    (project / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    first = cli(["search", space])
    db = (project / "studies" / "small.db").resolve()
    assert first.code == 0 and f"storage sqlite:///{db}" in first.err, first.err
    assert f"planner pareto --study small --storage sqlite:///{db}" in first.out  # pareto from here needs it
    monkeypatch.chdir(project / "spaces")
    again = cli(["search", space])  # from another folder: the same study, not a new one
    assert again.code == 0 and "already has 2 finished trials" in again.err, again.err
    assert not (elsewhere / "studies").exists() and not (project / "spaces" / "studies").exists()
    monkeypatch.chdir(project)
    assert cli(["pareto", "--study", "small", "--export", tmp_path / "front"]).code == 0  # found from the project


# ---------------------------------------------------------------------------------------------- pipes, warnings, counters
def test_a_closed_pipe_prints_no_traceback(tmp_path: Path) -> None:
    space = _space(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "planner.cli", "sample", str(space), "-n", "20"], env=_env(),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    proc.stdout.close()  # `| head -0`: the reader is gone before planner writes a line
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert proc.returncode == 141


@pytest.mark.parametrize("sampler", ["{kind: tpe, multivariate: true, n_startup_trials: 2}", "nsga3"])
def test_no_experimental_warning_on_a_run(tmp_path: Path, sampler: str) -> None:
    # a conditional space: TPE groups its parameters (Optuna's experimental `group`)
    text = SPACE.replace("{kind: random}", sampler).replace(
        "repeat: {range: [1, 4]}", "repeat: {range: [1, 4], when: {width: 64}}"
    )
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _run(_space(tmp_path, text), f"sqlite:///{tmp_path / 'w.db'}", n_trials=4)
    from optuna.exceptions import ExperimentalWarning

    assert not [w for w in seen if issubclass(w.category, ExperimentalWarning)], [str(w.message) for w in seen]


def test_the_trial_counter_never_passes_the_total(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    from planner.search._optuna import open_storage

    space = _space(tmp_path)
    journal = str(tmp_path / "c.journal")
    _run(space, journal, n_trials=2)
    study = optuna.load_study(study_name="small", storage=open_storage(journal))
    for _ in range(2):  # two failed trials (a crash) take numbers but no place
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    capsys.readouterr()
    run_search(str(space), SearchOptions(storage=journal, n_trials=4))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    assert [line.split()[1:3] for line in lines] == [["4", "[3/4]"], ["5", "[4/4]"]], lines


# ---------------------------------------------------------------------------------------------- latency
def test_latency_is_priced_on_the_study_hardware(tmp_path: Path) -> None:
    text = SPACE.replace("budgets: {params: 100000000}", "budgets: {latency_s: 1.0}\n  hardware: a100")
    study = _run(_space(tmp_path, text), str(tmp_path / "l.journal"), n_trials=3)
    lat = [t.user_attrs["cost"]["latency_s"] for t in study.trials]
    assert all(v is not None and 0 < v < 1.0 for v in lat), lat  # a small encoder on an A100: far under 1 s
    assert all(t.user_attrs["feasible"] for t in study.trials)


def test_a_latency_budget_without_hardware_is_refused(cli, tmp_path: Path) -> None:
    from hostile.support import refused

    text = SPACE.replace("budgets: {params: 100000000}", "budgets: {latency_s: 0.01}")
    space = _space(tmp_path, text)
    refused(
        cli(["search", space, "--storage", tmp_path / "x.journal"]),
        names=[str(space), "study.budgets.latency_s", "study.hardware", "a100"],
        code=2,
    )
    assert not (tmp_path / "x.journal").exists()
