"""Hostile packed exports and run folders for the task heads: a tampered ``task`` entry, a head's tensors
missing, a run's ``task.json`` or ``classifier.pt`` that is not what train writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from torch import nn

import planner
from hostile.support import refused, snapshot
from planner.compress import TaskHead, export
from trainers.recipe import DEFAULT_ALPHABET

DATA = Path(__file__).resolve().parent.parent / "data"
CTC = DATA / "tiny-student-ctc-int8.yaml"


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    sf.write(tmp_path / "x.wav", (0.1 * torch.randn(4000)).numpy(), 16000)
    return tmp_path / "x.wav"


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    """An untrained CTC-head model packed with a classifier head (width 32, classes a, b)."""
    graph = planner.load(CTC)
    torch.manual_seed(0)
    head = TaskHead("classification", classes=["a", "b"], classifier=nn.Linear(32, 2))
    export(planner.materialize(graph), graph, tmp_path / "packed", task=head)
    return tmp_path / "packed"


def _edit_task(packed: Path, change) -> None:  # noqa: ANN001
    manifest = json.loads((packed / "manifest.json").read_text())
    change(manifest["task"])
    (packed / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda t: t.update(kind="regression"), "task: expected {kind: classification | ctc"),
        (
            lambda t: t["tensors"].update(weight="nope.weight"),
            "task.tensors: expected the classifier's weight and bias",
        ),
        (lambda t: t.update(classes=["a", "b", "c"]), "task: the classifier has 2 outputs for 3 classes"),
        (lambda t: t.update(kind="ctc", alphabet="ab"), "the alphabet has 2 characters + blank"),
    ],
)
def test_a_tampered_task_entry_is_refused_naming_the_manifest(cli, packed: Path, wav: Path, change, named: str) -> None:  # noqa: ANN001
    _edit_task(packed, change)
    before = snapshot(packed)
    refused(cli(["evaluate", packed, "--wav", wav]), names=[str(packed / "manifest.json"), named])
    assert snapshot(packed) == before


def _fake_run(tmp_path: Path) -> Path:
    """A run folder as train leaves it for a classification run (untrained weights)."""
    run = tmp_path / "run"
    run.mkdir()
    graph = planner.load(CTC)
    (run / "arch.yaml").write_text(planner.dumps(graph))
    torch.save(planner.materialize(graph).state_dict(), run / "student.pt")
    torch.save(nn.Linear(32, 2).state_dict(), run / "classifier.pt")
    (run / "task.json").write_text(json.dumps({"type": "planner-task-head", "format": 1, "kind": "classification",
                                               "classes": ["a", "b"]}))  # fmt: skip
    return run


@pytest.mark.parametrize(
    ("file", "text", "named"),
    [
        ("task.json", "{not json", "task.json: unreadable"),
        (
            "task.json",
            '{"type": "planner-task-head", "kind": "classification", "classes": ["a"]}',
            "the classifier has 2 outputs for 1 classes",
        ),
        ("classifier.pt", None, "classifier.pt: not a linear classifier's state dict"),
        ("task.json", None, "task.json: missing; this task run predates task.json"),
    ],
)
def test_a_run_whose_head_files_are_not_trains_is_refused(cli, tmp_path: Path, file: str, text: str | None,
                                                          named: str) -> None:  # fmt: skip
    run = _fake_run(tmp_path)
    if text is not None:
        (run / file).write_text(text)
    elif file == "classifier.pt":
        torch.save({"weight": torch.zeros(3)}, run / file)
    else:
        (run / file).unlink()
    before = snapshot(run)
    refused(cli(["export", run, "--out", tmp_path / "out"]), names=[named])
    assert snapshot(run) == before and not (tmp_path / "out").exists()


def test_a_ctc_head_for_an_architecture_without_one_is_refused(cli, tmp_path: Path) -> None:
    graph = planner.load(DATA / "tiny-student.yaml")
    with pytest.raises(planner.compress.CompressionError, match="has no ctc head"):
        export(planner.materialize(graph), graph, tmp_path / "p", task=TaskHead("ctc", alphabet=DEFAULT_ALPHABET))
    assert not (tmp_path / "p").exists()
