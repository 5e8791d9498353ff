"""Faults on the trainer and export side: SIGKILL during an export swap, a checkpoint write and a run claim;
a full disk (a small tmpfs); an unreadable newest checkpoint; an older run's trainer.pt.

Each kill is a real SIGKILL that a child process sends itself at one exact point (a library function
patched in the child only), so the test knows what was on disk when it died.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import planner
from hostile._runs import STUDENT, setup_corpus
from hostile.support import snapshot
from planner.cli import main
from planner.compress import export, load_packed

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("one_thread")


def _killed(script: str) -> None:
    """Runs ``script`` in a fresh interpreter on this worktree's code; it must end by SIGKILL."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    env.pop("MASTER_PORT", None)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, expected SIGKILL:\n{proc.stderr[-3000:]}"


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def _train_cli(recipe: Path, out: Path) -> int:
    return main(["train", str(STUDENT), "--recipe", str(recipe), "--out", str(out)])


# -- export swap ----------------------------------------------------------------------------------------

EXPORT_KILL = """
import os, signal, torch, planner, planner.files as files
from planner.compress import export
real = files._exchange
def exchange(a, b):
    if {point!r} == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    done = real(a, b)
    os.kill(os.getpid(), signal.SIGKILL)
files._exchange = exchange
torch.manual_seed(1)
graph = planner.load({student!r})
export(planner.materialize(graph), graph, {out!r}, force=True)
"""


@pytest.mark.parametrize("point", ["before", "after"])
def test_sigkill_during_an_export_swap_leaves_one_whole_export(tmp_path: Path, point: str) -> None:
    graph = planner.load(STUDENT)
    out = tmp_path / "packed"
    torch.manual_seed(0)
    export(planner.materialize(graph), graph, out)
    old = snapshot(out)
    _killed(EXPORT_KILL.format(point=point, student=str(STUDENT), out=str(out)))
    now = snapshot(out)
    if point == "before":
        assert now == old  # the swap never happened: the old export, byte for byte
    else:  # swapped: the new export, whole (other weights, the same three files)
        assert now != old and sorted(Path(p).name for p in now) == sorted(Path(p).name for p in old)
    load_packed(out)  # either way a complete export
    assert main(["export", str(STUDENT), "--out", str(out), "--force"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["packed"]  # the staging folder a kill left is removed


# -- checkpoint write -----------------------------------------------------------------------------------

CKPT_KILL = """
import importlib, io, os, signal, torch, planner, trainers
T = importlib.import_module("trainers.run")
E = importlib.import_module("trainers.engine")
calls = []
if {point!r} == "before-rename":
    real = T.fsync_tree
    def fsync_folder(root):
        real(root)
        calls.append(root)
        if len(calls) == 2:  # the second checkpoint is complete and fsynced, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
    T.fsync_tree = fsync_folder
else:
    real = E.save_torch
    def save_torch(obj, path):
        calls.append(path)
        if len(calls) < 2:
            return real(obj, path)
        buf = io.BytesIO()
        torch.save(obj, buf)
        with open(path, "wb") as f:  # half of engine.pt, as a kill mid-write leaves it
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    E.save_torch = save_torch
trainers.train(planner.load({student!r}), trainers.load_recipe({recipe!r}), {out!r}, log=None)
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, float]]]:
    """A corpus and recipe (3 steps, a checkpoint after each), and the uninterrupted run's loss curve."""
    root = tmp_path_factory.mktemp("faults")
    recipe = setup_corpus(root, steps=3)
    assert _train_cli(recipe, root / "reference") == 0
    return recipe, _losses(root / "reference")


@pytest.mark.parametrize("point", ["before-rename", "torn-engine"])
def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(reference, tmp_path: Path,
                                                                              point: str) -> None:  # noqa: ANN001  # fmt: skip
    recipe, curve = reference
    out = tmp_path / "run"
    _killed(CKPT_KILL.format(point=point, student=str(STUDENT), recipe=str(recipe), out=str(out)))
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [".tmp-2", "step-00000001"]  # never published half
    assert _train_cli(recipe, out) == 0
    # Exact: the same float ops in the same order, from step 1's weights, optimizer, RNG and data position.
    assert _losses(out) == curve
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000001", "step-00000002", "step-00000003"]


# -- run claim ------------------------------------------------------------------------------------------

CLAIM_KILL = """
import importlib, os, signal, planner, trainers
T = importlib.import_module("trainers.run")
real = T.write_text_atomic
calls = []
def write(path, text):
    calls.append(path)
    if len(calls) == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, text)
T.write_text_atomic = write
trainers.train(planner.load({student!r}), trainers.load_recipe({recipe!r}), {out!r}, log=None)
"""


@pytest.mark.parametrize("n", [1, 2, 3])  # killed before arch.yaml, recipe.yaml, run.json
def test_sigkill_during_the_claim_leaves_a_folder_the_same_command_uses(reference, tmp_path: Path, n: int) -> None:  # noqa: ANN001
    recipe, curve = reference
    out = tmp_path / "run"
    _killed(CLAIM_KILL.format(n=n, student=str(STUDENT), recipe=str(recipe), out=str(out)))
    assert out.is_dir() and not (out / "run.json").exists()
    assert _train_cli(recipe, out) == 0
    assert _losses(out) == curve


# -- unreadable newest checkpoint; an older run's trainer.pt ----------------------------------------------


def test_an_unreadable_newest_checkpoint_falls_back_and_says_so(reference, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001  # fmt: skip
    recipe, curve = reference
    out = tmp_path / "run"
    _killed(CKPT_KILL.format(point="before-rename", student=str(STUDENT), recipe=str(recipe), out=str(out)))
    os.replace(out / "checkpoints" / ".tmp-2", out / "checkpoints" / "step-00000002")  # published, then
    engine = out / "checkpoints" / "step-00000002" / "engine.pt"
    engine.write_bytes(engine.read_bytes()[:1000])  # damaged (a bad disk, a copy cut short)
    capsys.readouterr()
    assert _train_cli(recipe, out) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "previous intact checkpoint" in line]
    assert len(warned) == 1 and str(engine) in warned[0] and "step-00000001" in warned[0]
    assert _losses(out) == curve


def test_an_older_runs_trainer_pt_still_resumes_exactly(reference, tmp_path: Path) -> None:  # noqa: ANN001
    from trainers.run import _rng_from_json

    recipe, curve = reference
    out = tmp_path / "run"
    _killed(CKPT_KILL.format(point="before-rename", student=str(STUDENT), recipe=str(recipe), out=str(out)))
    shutil.rmtree(out / "checkpoints" / ".tmp-2")
    ckpt = out / "checkpoints" / "step-00000001"
    state = json.loads((ckpt / "trainer.json").read_text())
    state["format"] = 2  # as this planner wrote it before trainer.json: numpy arrays and tensors, pickled
    state["rng"] = [_rng_from_json(r) for r in state["rng"]]
    torch.save(state, ckpt / "trainer.pt")
    (ckpt / "trainer.json").unlink()
    assert _train_cli(recipe, out) == 0
    assert _losses(out) == curve


# -- a full disk ----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    """A 4 MiB tmpfs at ``tmp_path/disk`` (root and mount rights needed; skipped with the reason otherwise)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}): the full-disk cases need one"
        )
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fills ``disk`` but ``leave`` bytes; returns the filler file."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_during_training_is_a_refusal_and_the_run_resumes(small_disk: Path, reference,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001  # fmt: skip
    recipe, curve = reference
    out = small_disk / "run"
    filler = _fill(small_disk, 64 * 1024)  # the claim fits; a checkpoint (engine.pt: ~400 kB) does not
    capsys.readouterr()
    code = _train_cli(recipe, out)
    err = capsys.readouterr().err
    assert code != 0 and "disk is full" in err and "Traceback" not in err, err
    filler.unlink()
    assert _train_cli(recipe, out) == 0  # the same command, with space again, finishes the run
    assert _losses(out) == curve


def test_a_full_disk_during_export_force_keeps_the_old_export(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = small_disk / "packed"
    assert main(["export", str(STUDENT), "--out", str(out)]) == 0
    old = snapshot(out)
    _fill(small_disk, 16 * 1024)  # less than one export's weights
    capsys.readouterr()
    code = main(["export", str(STUDENT), "--out", str(out), "--force"])
    err = capsys.readouterr().err
    assert code != 0 and "disk is full" in err and "Traceback" not in err, err
    assert snapshot(out) == old
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "packed"]  # no staging folder left


# -- two processes on one run folder --------------------------------------------------------------------

SLOW_TRAIN = """
import time, planner, trainers
trainers.train(planner.load({student!r}), trainers.load_recipe({recipe!r}), {out!r}, log=None,
               on_step=lambda step, metrics: time.sleep(1.0))
"""


def test_a_second_train_process_on_one_folder_is_refused_while_the_first_runs(reference, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001  # fmt: skip
    import time

    recipe, curve = reference
    out = tmp_path / "run"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    first = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN.format(student=str(STUDENT), recipe=str(recipe), out=str(out))],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "run.json").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first process ended before the second started"
        capsys.readouterr()
        assert _train_cli(recipe, out) == 3
        assert "another planner train is training into this folder" in capsys.readouterr().err
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert _losses(out) == curve  # the first run, undisturbed
