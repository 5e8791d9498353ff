"""The search never wastes a trial: resume continues the sequence, processes share n_trials, repeats are
answered from the study; a torn journal is refused and repaired; a killed Pareto export leaves the old one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from planner.search import EVALUATORS, SearchOptions, run_search

ROOT = Path(__file__).resolve().parents[1]

SPACE = """
format: 1
name: wide
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
    ffn: {range: [64, 4096], step: 64}
study:
  name: wide
  objectives: [{metric: params}, {metric: macs}]
  sampler: {kind: random}
  n_trials: 5
  seed: 7
  evaluator: capacity
"""

CALLS: list[str] = []  # architectures the counting evaluator scored, in this process


@EVALUATORS.register("test_counting")
@dataclass(frozen=True)
class CountingEvaluator:
    """Scores a candidate by its parameter count and remembers every call (to count evaluations)."""

    metrics: ClassVar[tuple[str, ...]] = ("score",)

    def evaluate(self, graph: Any, ctx: Any) -> dict[str, float]:
        CALLS.append(graph.name)
        return {"score": float(graph.param_count % 1000)}


def _space(tmp_path: Path, text: str = SPACE, name: str = "space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _run(space: Path, url: str, **kw: Any) -> Any:
    return run_search(str(space), SearchOptions(storage=url, progress=False, **kw))


def _params(study: Any) -> list[dict[str, Any]]:
    return [t.params for t in sorted(study.trials, key=lambda t: t.number)]


@pytest.mark.parametrize("sampler", ["random", "{kind: tpe, n_startup_trials: 3}"])
def test_resume_continues_the_sequence(tmp_path: Path, sampler: str) -> None:
    space = _space(tmp_path, SPACE.replace("{kind: random}", sampler))
    _run(space, str(tmp_path / "r.journal"), n_trials=5)
    resumed = _params(_run(space, str(tmp_path / "r.journal"), n_trials=10))
    straight = _params(_run(space, str(tmp_path / "s.journal"), n_trials=10))
    assert len(resumed) == 10
    assert resumed[5:] != resumed[:5]  # not a replay of the first five
    assert resumed == straight  # exactly the trials of one uninterrupted run: trial k is seeded by (seed, k)


def test_a_repeated_candidate_is_answered_from_the_study(tmp_path: Path) -> None:
    # two candidates only (width 64 or 96), eight trials: six or more are repeats
    text = SPACE.replace("repeat: {range: [1, 4]}", "repeat: 1").replace("heads: {choice: [2, 4]}", "heads: 2")
    text = text.replace("ffn: {range: [64, 4096], step: 64}", "ffn: 128").replace("n_trials: 5", "n_trials: 8")
    text = text.replace("evaluator: capacity", "evaluator: test_counting").replace("{metric: macs}", "{metric: score}")
    space = _space(tmp_path, text)
    CALLS.clear()
    study = _run(space, str(tmp_path / "d.journal"))
    trials = sorted(study.trials, key=lambda t: t.number)
    keys = {t.user_attrs["arch_key"] for t in trials}
    assert len(trials) == 8 and all(t.state.name == "COMPLETE" for t in trials)
    assert len(CALLS) == len(keys) <= 2  # one evaluation per distinct architecture, none repeated
    by_number = {t.number: t for t in trials}
    repeats = [t for t in trials if "repeat_of" in t.user_attrs]
    assert len(repeats) == 8 - len(keys)
    for t in repeats:
        first = by_number[t.user_attrs["repeat_of"]]
        assert first.user_attrs["arch_key"] == t.user_attrs["arch_key"] and "repeat_of" not in first.user_attrs
        assert t.values == first.values and t.user_attrs["quality"] == first.user_attrs["quality"]  # exact: copied


# `planner search` with the counting evaluator, logging each evaluation to a file (one line per call)
RUNNER = """
import os, sys, time
from dataclasses import dataclass
from typing import ClassVar
from planner.search import EVALUATORS

@EVALUATORS.register("logged")
@dataclass(frozen=True)
class Logged:
    seconds: float = 0.2
    metrics: ClassVar[tuple[str, ...]] = ()

    def evaluate(self, graph, ctx):
        with open(os.environ["CALLS_LOG"], "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(self.seconds)
        return {}

from planner.cli import main

barrier = os.environ["BARRIER"]  # both processes start searching together, whatever their import times
open(os.path.join(barrier, str(os.getpid())), "w").close()
deadline = time.monotonic() + 120
while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
sys.exit(main(["search", *sys.argv[1:]]))
"""


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_processes_share_n_trials(tmp_path: Path, kind: str) -> None:
    space = _space(tmp_path, SPACE.replace("evaluator: capacity", "evaluator: {kind: logged, seconds: 0.2}"))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    url = str(tmp_path / "p.journal") if kind == "journal" else f"sqlite:///{tmp_path / 'p.db'}"
    log = tmp_path / "calls.log"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "CALLS_LOG": str(log),
        "BARRIER": str(barrier),
    }
    cmd = [sys.executable, str(runner), str(space), "--storage", url, "--trials", "10"]
    procs = [
        subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    errs = [p.communicate(timeout=180)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs

    import optuna

    from planner.search._optuna import open_storage

    study = optuna.load_study(study_name="wide", storage=open_storage(url, None))
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(finished) == 10  # the study's total, not 10 per process
    others = [t for t in study.trials if t.state.name != "COMPLETE"]
    assert all("surplus" in t.user_attrs for t in others)  # at most a surplus record of a race, never run
    calls = log.read_text().split()
    assert len(calls) == len({t.user_attrs["arch_key"] for t in finished}) <= 10  # no candidate evaluated twice
    assert len(set(calls)) == 2, "both processes evaluated trials"  # they ran side by side, not one after the other


def _finished_journal(tmp_path: Path) -> tuple[Path, Path]:
    space = _space(tmp_path)
    journal = tmp_path / "t.journal"
    _run(space, str(journal), n_trials=3)
    return space, journal


def test_torn_journal_record_refused_then_repaired(tmp_path: Path) -> None:
    from planner.cli import main

    space, journal = _finished_journal(tmp_path)
    data = journal.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1  # the last record
    torn = data[: start + (len(data) - start) // 2]  # cut in the middle of it, as a kill mid-write leaves it
    journal.write_bytes(torn)
    assert main(["search", str(space), "--storage", str(journal), "--trials", "5"]) == 2
    assert journal.read_bytes() == torn  # nothing appended after the torn record

    assert main(["repair-journal", str(journal)]) == 0
    assert journal.read_bytes() == data[:start]  # exactly the intact records
    backups = list(tmp_path.glob("t.journal.damaged-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == torn
    study = _run(space, str(journal), n_trials=5)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 5
    assert all(json.loads(line) for line in journal.read_bytes().splitlines())  # every record readable
    assert main(["repair-journal", str(journal)]) == 0  # intact: nothing changed
    assert len(list(tmp_path.glob("t.journal.damaged-*"))) == 1


# exports the front, and stops for good once the new export's files are half written
EXPORT_KILLED = """
import sys, time
from pathlib import Path
import planner.search._pareto as pareto

def stuck(study, front, names, out):
    (Path(sys.argv[1])).write_text(str(out))
    time.sleep(600)

pareto._plots = stuck
from planner.cli import main
sys.exit(main(["pareto", "--study", "wide", "--storage", sys.argv[2], "--export", sys.argv[3], "--force"]))
"""


def test_sigkill_during_pareto_export_keeps_the_old_folder(tmp_path: Path) -> None:
    from hostile.support import snapshot
    from planner.cli import main

    space, journal = _finished_journal(tmp_path)
    out = tmp_path / "front"
    assert main(["pareto", "--study", "wide", "--storage", str(journal), "--export", str(out)]) == 0
    before = snapshot(out)
    _run(space, str(journal), n_trials=6)  # the study moves on: the next export differs

    script, marker = tmp_path / "export.py", tmp_path / "marker"
    script.write_text(EXPORT_KILLED)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marker), str(journal), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the export ended before it could be killed"
            time.sleep(0.05)
        staging = Path(marker.read_text())
        assert staging != out and (staging / "pareto.json").exists()  # the new export is half written beside
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert snapshot(out) == before  # the old export, byte for byte

    assert main(["pareto", "--study", "wide", "--storage", str(journal), "--export", str(out), "--force"]) == 0
    assert not list(tmp_path.glob(".front.*"))  # the killed export's staging folder is gone
    doc = json.loads((out / "pareto.json").read_text())
    assert sorted(p.name for p in out.glob("trial-*.yaml")) == sorted(p["architecture"] for p in doc["points"])


def test_kind_tables_match_the_adapter() -> None:
    from planner.search._optuna import PRUNER_BUILDERS, SAMPLER_BUILDERS
    from planner.search._study import PRUNERS, SAMPLERS

    assert set(SAMPLERS) == set(SAMPLER_BUILDERS)
    assert set(PRUNERS) == set(PRUNER_BUILDERS)
    for kind, cls in {**SAMPLERS, **PRUNERS}.items():
        assert cls.kind == kind


@pytest.mark.parametrize("kind", ["tpe", "nsga2", "nsga3", "random", "grid", "gp"])
def test_every_sampler_kind_builds_and_round_trips(kind: str) -> None:
    pytest.importorskip("torch") if kind == "gp" else None
    from planner.config import to_data
    from planner.search import loads_space, study_from_dict
    from planner.search._optuna import make_sampler

    text = SPACE.replace("{kind: random}", kind).replace("ffn: {range: [64, 4096], step: 64}", "ffn: 128")
    space = loads_space(text, "s.yaml")
    cfg = study_from_dict(space.study, "s.yaml")
    assert cfg.sampler.kind == kind
    assert study_from_dict(to_data(cfg), "s.yaml", path="") == cfg  # exact round trip of the study section
    assert make_sampler(cfg, space) is not None


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    """A 64 KiB tmpfs (root and a kernel that allows the mount); skipped with the reason otherwise."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_during_a_journal_study(small_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from planner.cli import main

    space = _space(tmp_path)
    journal = small_disk / "s.journal"
    code = main(["search", str(space), "--storage", str(journal), "--trials", "100000"])
    err = capsys.readouterr().err
    assert code != 0 and "disk is full" in err and "Traceback" not in err, err
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)  # space again
    code = main(["search", str(space), "--storage", str(journal), "--trials", "3"])
    err = capsys.readouterr().err
    if code != 0:  # the full disk tore the last record: refused with the repair command, nothing appended
        assert "torn" in err and "planner repair-journal" in err, err
        assert main(["repair-journal", str(journal)]) == 0
        code = main(["search", str(space), "--storage", str(journal), "--trials", "3"])
    assert code == 0
    assert all(json.loads(line) for line in journal.read_bytes().splitlines())  # every record readable
