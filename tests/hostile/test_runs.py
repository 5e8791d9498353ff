"""Hostile and careless run folders: planted pickles, damaged checkpoints, a folder in use, failed starts.

Every file ``planner train`` (resume) and ``planner evaluate`` read from a run folder is read as data: a
pickle planted there (one whose ``__reduce__`` would create a marker file) is refused, the marker never
appears, and the run folder is unchanged byte for byte.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hostile._runs import STUDENT, copy_run, plant, setup_corpus, trained
from hostile.support import refused, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 2-step run (checkpoints at steps 1 and 2) and its recipe, shared by the module (copy it)."""
    return trained(tmp_path_factory.mktemp("runs"))


def _task(folder: Path, corpus_root: Path) -> Path:
    """A classification probe task over the corpus (two classes by file name)."""
    rows = sorted(p.relative_to(corpus_root / "audio").as_posix() for p in (corpus_root / "audio").rglob("u*.*"))
    tsv = "".join(f"{r}\t{'a' if i % 2 else 'b'}\n" for i, r in enumerate(rows))
    (corpus_root / "audio" / "probe.tsv").write_text(tsv)
    task = folder / "task.yaml"
    task.write_text(f"train: {corpus_root / 'audio' / 'probe.tsv'}\ntest: {corpus_root / 'audio' / 'probe.tsv'}\n"
                    "steps: 2\nfeatures: last\n")  # fmt: skip
    return task


def _train(cli, recipe: Path, out: Path):  # noqa: ANN001, ANN202
    return cli(["train", STUDENT, "--recipe", recipe, "--out", out])


# -- planted pickles ------------------------------------------------------------------------------------

RESUME_FILES = ["engine.pt", "trainer.pt"]


@pytest.mark.parametrize("name", RESUME_FILES)
def test_a_pickle_planted_in_the_only_checkpoint_is_refused_on_resume(cli, finished, tmp_path: Path, name: str) -> None:
    run, recipe = finished
    run = copy_run(run, tmp_path / "run")
    for old in sorted((run / "checkpoints").iterdir())[:-1]:  # keep one checkpoint: nothing to fall back to
        shutil.rmtree(old)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    if name == "trainer.pt":  # an older run's trainer state (format 1-2: a torch file)
        (ckpt / "trainer.json").unlink()
    (run / "student.pt").unlink()  # unfinished: the command resumes
    marker = tmp_path / "owned"
    plant(ckpt / name, marker)
    before = snapshot(run)
    result = _train(cli, recipe, run)
    refused(result, names=[str(ckpt / name), "weights_only=True"], code=4)
    assert not marker.exists() and snapshot(run) == before


@pytest.mark.parametrize("name", ["student.pt", "engine.pt", "--checkpoint"])
def test_a_pickle_planted_for_evaluate_is_refused(cli, finished, tmp_path: Path, name: str) -> None:
    run, recipe = finished
    run = copy_run(run, tmp_path / "run")
    marker = tmp_path / "owned"
    args = []
    if name == "student.pt":
        target = plant(run / "student.pt", marker)
    elif name == "engine.pt":  # no student.pt: evaluate reads the newest checkpoint's engine state
        (run / "student.pt").unlink()
        target = plant(sorted((run / "checkpoints").iterdir())[-1] / "engine.pt", marker)
    else:
        target = plant(tmp_path / "weights.pt", marker)
        args = ["--checkpoint", target]
    before = snapshot(run)
    result = cli(["evaluate", run, "--task", _task(tmp_path, recipe.parent), *args])
    refused(result, names=[str(target)], code=4)
    assert not marker.exists() and snapshot(run) == before


def test_a_pickle_planted_as_the_export_checkpoint_is_refused(cli, tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    ckpt = plant(tmp_path / "ckpt.pt", marker)
    result = cli(["export", STUDENT, "--checkpoint", ckpt, "--out", tmp_path / "export"])
    refused(result, names=[str(ckpt), "weights_only=True"])
    assert not marker.exists() and not (tmp_path / "export").exists()


# -- damaged checkpoints --------------------------------------------------------------------------------


def test_every_checkpoint_unreadable_is_a_refusal_naming_the_file(cli, finished, tmp_path: Path) -> None:
    run, recipe = finished
    run = copy_run(run, tmp_path / "run")
    (run / "student.pt").unlink()
    for ckpt in (run / "checkpoints").iterdir():
        (ckpt / "engine.pt").write_bytes(b"PK\x03\x04 torn")
    before = snapshot(run)
    result = _train(cli, recipe, run)
    refused(result, names=["engine.pt", "no older checkpoint"], code=4)
    assert snapshot(run) == before


def test_an_unreadable_trainer_json_is_a_refusal(cli, finished, tmp_path: Path) -> None:
    run, recipe = finished
    run = copy_run(run, tmp_path / "run")
    (run / "student.pt").unlink()
    for ckpt in (run / "checkpoints").iterdir():
        (ckpt / "trainer.json").write_text('{"type": "planner-train-state", "rng": [')
    result = _train(cli, recipe, run)
    refused(result, names=["trainer.json", "unreadable trainer state"], code=4)


# -- the run folder -------------------------------------------------------------------------------------


def test_out_pointing_at_a_file_is_refused(cli, tmp_path: Path) -> None:
    recipe = setup_corpus(tmp_path)
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    result = _train(cli, recipe, out)
    refused(result, names=[str(out), "is a file"])
    assert out.read_text() == "mine"


def test_a_second_train_on_a_folder_in_use_is_refused(cli, finished, tmp_path: Path) -> None:
    run, recipe = finished
    run = copy_run(run, tmp_path / "run")
    (run / "student.pt").unlink()
    fd = os.open(run / ".lock", os.O_RDWR)  # stands for a live `planner train` (another open file: flock conflicts)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = snapshot(run)
        result = _train(cli, recipe, run)
        refused(result, names=[str(run), "another planner train"], code=3)
        assert snapshot(run) == before
    finally:
        os.close(fd)


BAD_STARTS = [
    ("teacher", "{kind: torchaudio_hubert, checkpoint: missing-teacher.pt}", "teacher.checkpoint"),
    ("data", "{train: [missing.tsv], batch_seconds: 1.0, max_seconds: 0.5, min_seconds: 0.1}", "missing.tsv"),
    ("init", "missing-init.pt", "init"),
]


@pytest.mark.parametrize(("key", "value", "named"), BAD_STARTS)
def test_a_failed_start_leaves_no_folder(cli, tmp_path: Path, key: str, value: str, named: str) -> None:
    recipe = setup_corpus(tmp_path, **{key: value})
    out = tmp_path / "new-run"
    result = _train(cli, recipe, out)
    refused(result, names=[named] + ([str(recipe)] if key != "data" else []))
    assert not out.exists()


def test_a_nan_sample_in_the_audio_is_refused_naming_the_file(cli, tmp_path: Path) -> None:
    recipe = setup_corpus(tmp_path, steps=1)
    bad = sorted((tmp_path / "audio").rglob("*.wav"))[0]
    data, sr = sf.read(bad, dtype="float32")
    data[len(data) // 2] = np.nan
    sf.write(bad, data, sr, subtype="FLOAT")  # float WAV keeps the NaN
    # batches hold 1 s: 6 steps read every file of the corpus at least once
    recipe.write_text(recipe.read_text().replace("steps: 1", "steps: 6"))
    result = _train(cli, recipe, tmp_path / "run")
    refused(result, names=[str(bad), "NaN or infinite"])
    assert not (tmp_path / "run" / "student.pt").exists()


def test_a_nan_loss_stops_training_naming_step_loss_and_recipe(cli, tmp_path: Path) -> None:
    recipe = setup_corpus(tmp_path, steps=3)
    state = torch.load(tmp_path / "teacher.pt", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point() and "encoder.transformer.layers.0" in k)
    state[key] = torch.full_like(state[key], float("nan"))  # a teacher with NaN weights: a NaN target
    torch.save(state, tmp_path / "teacher.pt")
    result = _train(cli, recipe, tmp_path / "run")
    refused(result, names=[str(recipe), "optimizer.lr", "diverged at step 1", "loss nan"], code=5)
    assert not (tmp_path / "run" / "student.pt").exists()


# -- DeepSpeed's files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ds_finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 2-step DeepSpeed ZeRO-1 run (model and optimizer state files) and its recipe."""
    return trained(tmp_path_factory.mktemp("ds-runs"), engine="deepspeed", deepspeed="{zero_stage: 1}")


DS_CASES = [("train", "*model_states.pt"), ("train", "*optim_states.pt"),
            ("evaluate", "*model_states.pt"), ("evaluate", "*optim_states.pt")]  # fmt: skip


@pytest.mark.parametrize(("command", "pattern"), DS_CASES)
def test_a_pickle_planted_in_deepspeeds_files_is_refused(cli, ds_finished, tmp_path: Path, command: str,
                                                         pattern: str) -> None:  # fmt: skip
    run, recipe = ds_finished
    run = copy_run(run, tmp_path / "run")
    for old in sorted((run / "checkpoints").iterdir())[:-1]:
        shutil.rmtree(old)
    (run / "student.pt").unlink()  # train resumes; evaluate reads the checkpoint
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    target = next((ckpt / "state").glob(pattern))
    marker = tmp_path / "owned"
    plant(target, marker)
    before = snapshot(run)
    if command == "train":
        result = _train(cli, recipe, run)
    else:
        result = cli(["evaluate", run, "--task", _task(tmp_path, recipe.parent)])
    refused(result, names=[str(target), "weights_only=True"], code=4)
    assert not marker.exists() and snapshot(run) == before


# -- files a recipe names --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["teacher.checkpoint", "init"])
def test_a_pickle_planted_as_a_recipe_checkpoint_is_refused_before_the_claim(cli, tmp_path: Path, field: str) -> None:
    recipe = setup_corpus(tmp_path, **({"init": "init.pt"} if field == "init" else {}))
    marker = tmp_path / "owned"
    target = plant(tmp_path / ("teacher.pt" if field == "teacher.checkpoint" else "init.pt"), marker)
    result = _train(cli, recipe, tmp_path / "run")
    refused(result, names=[str(target), "as data"])
    assert not marker.exists() and not (tmp_path / "run").exists()
