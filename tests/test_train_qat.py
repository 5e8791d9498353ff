"""QAT / N:M fine-tuning: the trainer drives the mask clock, masks and quantizers ride in checkpoints (exact
resume after SIGKILL), task losses (CTC, classification), the self teacher, the linear probe and its task file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import planner
from planner.cli import main
from planner.errors import ConfigError
from support import DATA, ROOT, kill_after_first_checkpoint, recipe_text, ta_teacher_yaml
from trainers import load_recipe, loads_recipe, train
from trainers.evaluate import evaluate, load_task
from trainers.teacher import float_state, load_teacher

QAT = DATA / "tiny-student-int4-2of4.yaml"
CTC = DATA / "tiny-student-ctc-int8.yaml"


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def _masks(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt / "engine.pt", weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.endswith("sparsifier.mask")} | {
        "clock": state["mask_schedule.step_count"]
    }


def _labels(manifest: Path, how) -> Path:  # noqa: ANN001
    lines = manifest.read_text().splitlines()
    path = manifest.with_name("labels.tsv")
    path.write_text("".join(f"{line.split(chr(9))[0]}\t{how(i)}\n" for i, line in enumerate(lines[1:])))
    return path


def test_shipped_qat_recipe_loads() -> None:
    recipe = load_recipe(ROOT / "recipes" / "qat.yaml")
    assert recipe.teacher.kind == "self" and recipe.compression.schedule == "few_shot"
    assert recipe.compression.sparsity_schedule().steps == recipe.compression.steps


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("data: {train: a.tsv}\n", "teacher"),
        ("data: {train: a.tsv}\nloss: {kind: ctc}\n", "data.labels"),
        (
            "teacher: {kind: self, checkpoint: f.pt}\ndata: {train: a.tsv, labels: l.tsv}\nloss: {kind: classification}\n",
            "teacher",
        ),
        ("teacher: {kind: self}\ndata: {train: a.tsv}\n", "teacher.checkpoint"),
        ("data: {train: a.tsv, labels: l.tsv}\nloss: {kind: ctc, masking: {prob: 0.5}}\n", "loss.masking"),
        ("data: {train: a.tsv, labels: l.tsv}\nloss: {kind: ctc, classes: [a, b]}\n", "loss.classes"),
        (
            "data: {train: a.tsv, labels: l.tsv}\nloss: {kind: ctc}\ncompression: {schedule: few_shot}\n",
            "compression.steps",
        ),
        (
            "data: {train: a.tsv, labels: l.tsv}\nloss: {kind: ctc}\ncompression: {schedule: one_shot, T_p: 3}\n",
            "compression.T_p",
        ),
    ],
)
def test_recipe_errors_name_file_and_field(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_recipe(text, source="r.yaml")
    assert str(info.value).startswith(f"r.yaml: {where}: "), str(info.value)


def test_few_shot_masks_stop_changing_after_tp_trainer_steps(
    tmp_path: Path, corpus: Path, ta_teacher_file: Path
) -> None:
    text = recipe_text(ta_teacher_yaml(ta_teacher_file), corpus, steps="6", optimizer="{lr: 3.0e-2}",
                       checkpoint="{every: 1, keep: 10}", compression="{schedule: few_shot, steps: 3}")  # fmt: skip
    train(planner.load(QAT), loads_recipe(text, base_dir=str(tmp_path)), tmp_path / "run", log=None)
    masks = {int(p.name.split("-")[1]): _masks(p) for p in (tmp_path / "run" / "checkpoints").iterdir()}
    assert sorted(masks) == [1, 2, 3, 4, 5, 6] and len(masks[6]) > 1
    assert [int(masks[k]["clock"]) for k in range(1, 7)] == [1, 2, 3, 4, 5, 6]  # step() once per optimizer step
    # the forward of step k (0-based) recomputes masks while k < T_p = 3: the last recomputation is at step 2
    for k in (4, 5, 6):
        assert all(torch.equal(masks[k][n], masks[3][n]) for n in masks[3] if n != "clock")
    assert any(not torch.equal(masks[1][n], masks[3][n]) for n in masks[3] if n != "clock")  # it did update before
    for n, m in masks[6].items():
        if n != "clock":  # exactly 2 of every 4 consecutive inputs kept
            assert torch.equal(m.reshape(-1, 4).sum(1), torch.full((m.numel() // 4,), 2))


def test_one_shot_masks_never_change(tmp_path: Path, corpus: Path, ta_teacher_file: Path) -> None:
    text = recipe_text(ta_teacher_yaml(ta_teacher_file), corpus, steps="3", optimizer="{lr: 3.0e-2}",
                       checkpoint="{every: 1, keep: 10}")  # fmt: skip
    train(planner.load(QAT), loads_recipe(text, base_dir=str(tmp_path)), tmp_path / "run", log=None)
    masks = [_masks(p) for p in sorted((tmp_path / "run" / "checkpoints").iterdir())]
    assert all(torch.equal(m[n], masks[0][n]) for m in masks for n in m if n != "clock")


def test_sigkill_and_resume_is_exact_with_an_int4_2of4_student(
    tmp_path: Path, corpus: Path, ta_teacher_file: Path
) -> None:
    recipe_file = tmp_path / "qat.yaml"
    recipe_file.write_text(recipe_text(ta_teacher_yaml(ta_teacher_file), corpus, steps="6",
                                       compression="{schedule: few_shot, steps: 3}"))  # fmt: skip
    reference = tmp_path / "reference"
    assert main(["train", str(QAT), "--recipe", str(recipe_file), "--out", str(reference)]) == 0
    killed = tmp_path / "killed"
    assert kill_after_first_checkpoint(QAT, recipe_file, killed) < 6
    assert main(["train", str(QAT), "--recipe", str(recipe_file), "--out", str(killed)]) == 0
    # Exact: masks, mask clock, quantizer state, optimizer, RNG and data position all come back.
    assert _losses(killed) == _losses(reference)
    a = torch.load(killed / "student.pt", weights_only=True)
    b = torch.load(reference / "student.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["mask_schedule.step_count"]) == 6


def test_init_from_float_weights_and_self_teacher(tmp_path: Path, corpus: Path) -> None:
    float_model = planner.materialize(planner.load(DATA / "tiny-student.yaml"))
    torch.save(float_model.state_dict(), tmp_path / "float.pt")
    text = (
        recipe_text("{kind: self, checkpoint: float.pt}", corpus, steps="2", loss="{layers: {0: 0, 1: 1}}")
        + "init: float.pt\n"
    )
    recipe = loads_recipe(text, base_dir=str(tmp_path))
    teacher = load_teacher(recipe, planner.load(QAT))
    x = torch.randn(2, 8000)
    with torch.no_grad():  # the self teacher is the float twin: same weights, no fake quantization
        assert torch.equal(
            teacher(x, torch.tensor([8000, 6000])).hidden[-1],
            float_model.eval()(x, torch.tensor([8000, 6000])).hidden_states[-1],
        )
    result = train(planner.load(QAT), recipe, tmp_path / "run", log=None)
    assert result.step == 2 and result.metrics[-1]["loss"] > 0
    state = torch.load(tmp_path / "run" / "student.pt", weights_only=True)
    assert set(float_state(state)) == set(float_model.state_dict())


def test_ctc_fine_tuning(tmp_path: Path, corpus: Path) -> None:
    labels = _labels(corpus, lambda i: ["seven", "one two", "zero"][i % 3])
    body = recipe_text("x", corpus, steps="3").replace("teacher: x\n", "")
    body = body.replace("loss: {layers: {0: 1, 1: 2}, masking: {prob: 0.5, span: 5}}", "loss: {kind: ctc}")
    body = body.replace("min_seconds: 0.1}", f"min_seconds: 0.1, labels: {labels}}}")
    result = train(planner.load(CTC), loads_recipe(body, base_dir=str(tmp_path)), tmp_path / "run", log=None)
    assert result.step == 3 and all(0 < r["loss"] < 1e3 for r in result.metrics)
    bad = body.replace("loss: {kind: ctc}", "loss: {kind: ctc, alphabet: abc}")
    with pytest.raises(ConfigError, match="loss.alphabet"):
        train(planner.load(CTC), loads_recipe(bad, base_dir=str(tmp_path)), tmp_path / "run2", log=None)


def test_classification_then_probe(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = _labels(corpus, lambda i: "ab"[i % 2])
    body = recipe_text("x", corpus, steps="3").replace("teacher: x\n", "")
    body = body.replace("loss: {layers: {0: 1, 1: 2}, masking: {prob: 0.5, span: 5}}", "loss: {kind: classification}")
    body = body.replace("min_seconds: 0.1}", f"min_seconds: 0.1, labels: {labels}}}")
    result = train(planner.load(QAT), loads_recipe(body, base_dir=str(tmp_path)), tmp_path / "run", log=None)
    assert 0 <= result.metrics[-1]["accuracy"] <= 1
    assert set(torch.load(tmp_path / "run" / "classifier.pt", weights_only=True)) == {"weight", "bias"}
    root = corpus.read_text().splitlines()[0]
    rows = [f"{root}/{line}" for line in labels.read_text().splitlines()]
    (tmp_path / "tr.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "te.tsv").write_text("\n".join(rows[:4]) + "\n")
    (tmp_path / "task.yaml").write_text("train: tr.tsv\ntest: te.tsv\nsteps: 50\nfeatures: last\n")
    out = evaluate(tmp_path / "run", tmp_path / "task.yaml")
    assert out["n_train"] == 6 and out["n_test"] == 4 and out["classes"] == ["a", "b"] and 0 <= out["accuracy"] <= 1
    assert main(["evaluate", str(tmp_path / "run"), "--task", str(tmp_path / "task.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == out["accuracy"]  # seeded: the same probe


def test_task_file_errors_name_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "task.yaml").write_text("train: a.tsv\ntest: b.tsv\nstepz: 3\n")
    with pytest.raises(ConfigError, match=r"task.yaml: stepz: "):
        load_task(tmp_path / "task.yaml")
    (tmp_path / "task.yaml").write_text("train: a.tsv\ntest: b.tsv\nfeatures: first\n")
    assert main(["evaluate", str(tmp_path), "--task", str(tmp_path / "task.yaml")]) != 0
    assert "task.yaml: features: " in capsys.readouterr().err


def test_recipe_command_prints_the_resolved_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", str(ROOT / "recipes" / "qat.yaml")]) == 0
    text = capsys.readouterr().out
    assert "compression:\n  schedule: few_shot" in text and "clip_norm:" in text
