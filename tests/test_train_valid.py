"""``data.valid`` in ``planner train``: the held-out loss every logged step, the best weights in ``best/``,
and training itself unchanged by it (the same loss curve, exact resume after SIGKILL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import planner
from planner.cli import main
from planner.errors import ConfigError
from support import DATA, kill_after_first_checkpoint, recipe_text, ta_teacher_yaml, write_corpus
from trainers import loads_recipe, scan_folder, train
from trainers.run import _held_out
from trainers.train import build_loss, build_student, build_valid

STUDENT = DATA / "tiny-student.yaml"
QAT = DATA / "tiny-student-int4-2of4.yaml"


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def held(tmp_path: Path) -> Path:
    """A held-out manifest of other clips (other chirps and noise) than the training corpus."""
    write_corpus(tmp_path / "held", [0.35, 0.5, 0.3, 0.45], seed=7)
    scan_folder(tmp_path / "held", tmp_path / "valid.tsv")
    return tmp_path / "valid.tsv"


def _recipe(tmp_path: Path, corpus: Path, teacher: Path, valid: Path | None, **extra: str) -> Path:
    text = recipe_text(ta_teacher_yaml(teacher), corpus, **extra)
    if valid is not None:
        text = text.replace("min_seconds: 0.1}", f"min_seconds: 0.1, valid: {valid}, valid_batches: 2}}")
    path = tmp_path / ("recipe-valid.yaml" if valid is not None else "recipe.yaml")
    path.write_text(text)
    return path


def test_valid_loss_logged_best_kept_and_training_unchanged(
    tmp_path: Path, corpus: Path, ta_teacher_file: Path, held: Path
) -> None:
    plain = _recipe(tmp_path, corpus, ta_teacher_file, None, steps="4")
    with_valid = _recipe(tmp_path, corpus, ta_teacher_file, held, steps="4")
    train(planner.load(STUDENT), loads_recipe(plain.read_text(), base_dir=str(tmp_path)), tmp_path / "a", log=None)
    recipe = loads_recipe(with_valid.read_text(), base_dir=str(tmp_path))
    train(planner.load(STUDENT), recipe, tmp_path / "b", log=None)
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    # Exact: held-out evaluation restores every random state and runs in eval mode, so the training steps
    # are the same float operations on the same batches, masks and dropout draws.
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert "valid_loss" not in a[0] and not (tmp_path / "a" / "best").exists()
    values = [r["valid_loss"] for r in b]
    assert len(values) == 4 and all(v > 0 for v in values) and len(set(values)) > 1  # training moves it
    best = json.loads((tmp_path / "b" / "best" / "best.json").read_text())
    first = min(range(4), key=lambda i: (values[i], i))
    assert best["step"] == b[first]["step"] and best["valid_loss"] == values[first]

    # best/student.pt holds the weights that scored it: evaluated again, the same loss (exact: the same
    # modules, weights, batches and fixed masks, on the CPU)
    graph = planner.load(STUDENT)
    student = build_student(graph, recipe)
    student.load_state_dict(torch.load(tmp_path / "b" / "best" / "student.pt", weights_only=True))
    loss_obj, model = build_loss(graph, recipe, student)
    batches = build_valid(graph, recipe, loss_obj)
    assert len(batches) == 2  # data.valid_batches caps it
    again = _held_out(loss_obj, model, batches, torch.device("cpu"))
    assert again["valid_loss"] == best["valid_loss"]
    # ... and the fixed masks do not move with the step: a second evaluation is the same number
    assert _held_out(loss_obj, model, batches, torch.device("cpu")) == again


@pytest.mark.slow  # two runs and a killed subprocess: about 35 s on a busy 2-core machine
def test_sigkill_and_resume_gives_the_uninterrupted_valid_curve(
    tmp_path: Path, corpus: Path, ta_teacher_file: Path, held: Path
) -> None:
    recipe = _recipe(tmp_path, corpus, ta_teacher_file, held)
    reference = tmp_path / "reference"
    assert main(["train", str(STUDENT), "--recipe", str(recipe), "--out", str(reference)]) == 0
    killed = tmp_path / "killed"
    assert kill_after_first_checkpoint(STUDENT, recipe, killed) < 6
    assert main(["train", str(STUDENT), "--recipe", str(recipe), "--out", str(killed)]) == 0
    # exact: the resumed half repeats the same float operations (see test_train_run.py)
    keys = ("step", "loss", "valid_loss")
    assert [[r[k] for k in keys] for r in _rows(killed)] == [[r[k] for k in keys] for r in _rows(reference)]
    assert (killed / "best" / "best.json").read_text() == (reference / "best" / "best.json").read_text()
    ref = torch.load(reference / "best" / "student.pt", weights_only=True)
    got = torch.load(killed / "best" / "student.pt", weights_only=True)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_task_loss_valid_needs_labels_and_reports_accuracy(tmp_path: Path, corpus: Path, held: Path) -> None:
    lines = corpus.read_text().splitlines()
    labels = corpus.with_name("labels.tsv")
    labels.write_text("".join(f"{line.split(chr(9))[0]}\t{'ab'[i % 2]}\n" for i, line in enumerate(lines[1:])))
    # held-out clips under the training root, labelled there
    (tmp_path / "valid-in.tsv").write_text("\n".join([lines[0], *lines[1:4]]) + "\n")
    body = recipe_text("x", corpus, steps="2").replace("teacher: x\n", "")
    body = body.replace("loss: {layers: {0: 1, 1: 2}, masking: {prob: 0.5, span: 5}}", "loss: {kind: classification}")
    good = body.replace("min_seconds: 0.1}", f"min_seconds: 0.1, labels: {labels}, valid: valid-in.tsv}}")
    result = train(planner.load(QAT), loads_recipe(good, base_dir=str(tmp_path)), tmp_path / "run", log=None)
    row = result.metrics[-1]
    assert row["valid_loss"] > 0 and 0 <= row["valid_accuracy"] <= 1
    assert (tmp_path / "run" / "best" / "classifier.pt").is_file()
    assert json.loads((tmp_path / "run" / "best" / "task.json").read_text())["classes"] == ["a", "b"]
    # clips elsewhere without a label: refused before the run folder is claimed, naming the field
    bad = body.replace("min_seconds: 0.1}", f"min_seconds: 0.1, labels: {labels}, valid: {held}}}")
    with pytest.raises(ConfigError, match=r"r\.yaml: data\.valid: .*4 utterance\(s\) have no label in data\.labels"):
        train(
            planner.load(QAT), loads_recipe(bad, source="r.yaml", base_dir=str(tmp_path)), tmp_path / "run2", log=None
        )
    assert not (tmp_path / "run2").exists()
    # ... labelled in data.valid_labels (relative to the valid manifest's root): used; a class training does
    # not know is refused naming the file
    rows = [line.split("\t")[0] for line in held.read_text().splitlines()[1:]]
    (tmp_path / "held.tsv").write_text("".join(f"{r}\t{'ba'[i % 2]}\n" for i, r in enumerate(rows)))
    labelled = bad.replace(f"valid: {held}}}", f"valid: {held}, valid_labels: held.tsv}}")
    result = train(planner.load(QAT), loads_recipe(labelled, base_dir=str(tmp_path)), tmp_path / "run3", log=None)
    assert result.metrics[-1]["valid_loss"] > 0 and 0 <= result.metrics[-1]["valid_accuracy"] <= 1
    (tmp_path / "held.tsv").write_text("".join(f"{r}\tc\n" for r in rows))
    with pytest.raises(ConfigError, match=r"data\.valid_labels: .*held\.tsv: .*'c' is not a training class \(a, b\)"):
        train(planner.load(QAT), loads_recipe(labelled, base_dir=str(tmp_path)), tmp_path / "run4", log=None)
    assert not (tmp_path / "run4").exists()


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ("valid: v.tsv, valid_labels: l.tsv", "data.valid_labels: only used by the task losses"),
        ("valid_labels: l.tsv", "data.valid_labels: labels the held-out manifest, which needs valid:"),
    ],
)
def test_valid_labels_only_where_they_label_something(data: str, where: str) -> None:
    with pytest.raises(ConfigError, match=rf"r\.yaml: {where}"):
        loads_recipe(f"data: {{train: a.tsv, {data}}}\nteacher: {{kind: self, checkpoint: f.pt}}\n", source="r.yaml")


@pytest.mark.parametrize("value", ["0", "-1", ".nan", "2.5"])
def test_valid_batches_must_be_a_positive_count(value: str) -> None:
    with pytest.raises(ConfigError, match=r"r\.yaml: data\.valid_batches: "):
        loads_recipe(f"data: {{train: a.tsv, valid: v.tsv, valid_batches: {value}}}\nteacher: {{kind: self, "
                     "checkpoint: f.pt}\n", source="r.yaml")  # fmt: skip


@pytest.mark.slow  # two DeepSpeed processes on the CPU: about a minute
@pytest.mark.usefixtures("one_thread")
def test_two_deepspeed_zero3_processes_keep_one_best(
    tmp_path: Path, corpus: Path, ta_teacher_file: Path, held: Path
) -> None:
    pytest.importorskip("deepspeed")
    from support import launch_ok, two_processes

    text = _recipe(tmp_path, corpus, ta_teacher_file, held, steps="3").read_text()
    (tmp_path / "zero3.yaml").write_text(text + "engine: deepspeed\ndeepspeed: {zero_stage: 3}\n")
    run = tmp_path / "run"
    # the best/ weights are gathered collectively: every process must take the same decision (no hang)
    launch_ok(two_processes("deepspeed", str(STUDENT), "--recipe", str(tmp_path / "zero3.yaml"), "--out", str(run)))
    values = [r["valid_loss"] for r in _rows(run)]
    best = json.loads((run / "best" / "best.json").read_text())
    assert len(values) == 3 and best["valid_loss"] == min(values)
    planner.materialize(planner.load(STUDENT)).load_state_dict(
        torch.load(run / "best" / "student.pt", weights_only=True)
    )
