"""A task loss plus weighted distillation in one recipe (``loss.distill_weight``): validation, the loss is
exactly ``task + w * distill``, both parts and the training CER are logged, and a killed run resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import planner
from planner.cli import main
from planner.errors import ConfigError
from planner.nn import build
from support import ALPHABET, kill_after_first_checkpoint, write_tone_corpus, write_tsv
from trainers import (
    BatchStream,
    Distiller,
    dump_recipe,
    load_recipe,
    loads_recipe,
    scan_folder,
    train,
)
from trainers.ctc import error_rates, greedy_decode
from trainers.task import TaskDistillLoss, TaskLoss, read_task_labels
from trainers.teacher import load_teacher

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TEACHER = "teacher: {kind: self, checkpoint: f.pt}\n"
LABELS = "data: {train: a.tsv, labels: l.tsv}\n"

# tiny-student.yaml with a CTC head over ALPHABET + blank, dropout (so sharing a forward is visible) and
# int8 QAT: the USM-Lite setting, CTC fine-tuning with self-distillation from the float twin.
STUDENT = """\
format: 1
name: tiny-ctc-int8
input: {kind: waveform, sample_rate: 16000}
width: 32
frontend:
  - {kind: conv_extractor, conv_layers: [[16, 10, 5], [16, 4, 4], [32, 4, 4], [32, 2, 2]], output_norm: true, projection: true}
  - {kind: mask_embedding}
  - {kind: conv_pos_embedding, kernel: 8, groups: 4}
  - {kind: layer_norm}
layers:
  - {kind: transformer, repeat: 2, heads: 2, ffn: 64, dropout: 0.1}
heads:
  - {kind: ctc, vocab: 5}
compression:
  - {layers: all, modules: [attention, ffn], weight: int8}
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """Spelled utterances (manifest, transcripts), the student's file and its float weights ``float.pt``."""
    rows = write_tone_corpus(tmp_path / "audio", "u", 6, seed=2)
    write_tsv(tmp_path / "audio" / "labels.tsv", rows)
    (tmp_path / "student.yaml").write_text(STUDENT)
    torch.manual_seed(0)
    torch.save(build(planner.load(tmp_path / "student.yaml")).state_dict(), tmp_path / "float.pt")
    scan_folder(tmp_path / "audio", tmp_path / "train.tsv")
    return tmp_path


def recipe_text(**over: str) -> str:
    body = {
        "teacher": "{kind: self, checkpoint: float.pt}",
        "init": "float.pt",
        "data": "{train: [train.tsv], labels: audio/labels.tsv, batch_seconds: 2.0, max_seconds: 1.0, min_seconds: 0.1}",
        "loss": f"{{kind: ctc, alphabet: '{ALPHABET}', distill_weight: 0.5, masking: {{prob: 0.5, span: 5}}}}",
        "optimizer": "{lr: 1.0e-3}",
        "schedule": "{warmup_ratio: 0.2}",
        "steps": "4",
        "logging": "{every: 1}",
        "checkpoint": "{every: 2, keep: 2}",
        "seed": "3",
    } | over
    return "".join(f"{k}: {v}\n" for k, v in body.items() if v)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _curve(run: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["task"], r["distill"], r["cer"]) for r in _rows(run)]


# -- the recipe surface ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        (LABELS + "loss: {kind: ctc, distill_weight: 0.5}\n", "loss.distill_weight", "needs a teacher: section"),
        (TEACHER + LABELS + "loss: {kind: ctc}\n", "teacher", "set loss.distill_weight"),
        (
            TEACHER + LABELS + "loss: {distill_weight: 0.5}\n",
            "loss.distill_weight",
            "layer_to_layer is distillation alone",
        ),
        (TEACHER + LABELS + "loss: {kind: ctc, distill_weight: 0}\n", "loss.distill_weight", "must be positive"),
        (TEACHER + LABELS + "loss: {kind: ctc, distill_weight: -1.0}\n", "loss.distill_weight", "must be positive"),
        (TEACHER + LABELS + "loss: {kind: ctc, distill_weight: yes}\n", "loss.distill_weight", "expected a number"),
        (LABELS + "loss: {kind: classification, layers: {0: 0}}\n", "loss.layers", "a task loss with distill_weight"),
        (LABELS + "loss: {kind: ctc, masking: {prob: 0.5}}\n", "loss.masking", "only allowed with distillation"),
        (
            TEACHER + LABELS + "loss: {kind: ctc, distill_weight: 1, classes: [a, b]}\n",
            "loss.classes",
            "classification",
        ),
    ],
)
def test_recipe_errors_name_the_field(text: str, where: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_recipe(text, source="r.yaml")
    assert str(info.value).startswith(f"r.yaml: {where}: ") and says in str(info.value), str(info.value)


def test_combined_recipe_round_trips_and_old_fingerprints_hold(capsys: pytest.CaptureFixture[str]) -> None:
    text = TEACHER + LABELS + "loss: {kind: ctc, distill_weight: 0.25, masking: {prob: 0.5}}\n"
    recipe = loads_recipe(text)
    assert recipe.loss.distill_weight == 0.25 and recipe.loss.distills and recipe.loss.masking.prob == 0.5
    assert loads_recipe(yaml.safe_dump(dump_recipe(recipe))) == recipe
    # A recipe without distill_weight hashes as it did before the field existed (the value below is what the
    # code of that time computed), so runs started then still resume; the weight itself changes the run.
    task_only = loads_recipe(LABELS + "loss: {kind: ctc}\n")
    assert task_only.fingerprint() == "f7ac56850d08d393" and not task_only.loss.distills
    assert load_recipe(ROOT / "recipes" / "qat.yaml").fingerprint() == "b37c83254508ea90"
    assert recipe.fingerprint() != loads_recipe(text.replace("0.25", "0.5")).fingerprint()
    shipped = load_recipe(ROOT / "recipes" / "qat-ctc-distill.yaml")
    assert shipped.loss.kind == "ctc" and shipped.loss.distill_weight > 0 and shipped.teacher.kind == "self"
    assert main(["recipe", str(ROOT / "recipes" / "qat-ctc-distill.yaml")]) == 0
    assert "distill_weight: 0.5" in capsys.readouterr().out


# -- the loss --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masking", [False, True])
def test_combined_loss_is_the_task_loss_plus_the_weighted_distillation(work: Path, masking: bool) -> None:
    loss = f"{{kind: ctc, alphabet: '{ALPHABET}', distill_weight: 0.5{', masking: {prob: 0.5, span: 5}' if masking else ''}}}"
    recipe = loads_recipe(recipe_text(loss=loss), base_dir=str(work))
    graph = planner.load(work / "student.yaml")
    torch.manual_seed(0)
    student = planner.materialize(graph).train()
    task = TaskLoss(graph, recipe, read_task_labels(recipe))
    distiller = Distiller(graph, load_teacher(recipe, graph), recipe)
    combined = TaskDistillLoss(task, distiller, 0.5)
    batch = next(BatchStream([str(work / "train.tsv")], batch_seconds=2.0, max_seconds=1.0, seed=3))
    calls: list[torch.Tensor | None] = []
    hook = student.register_forward_pre_hook(lambda m, a, kw: calls.append(kw.get("mask")), with_kwargs=True)

    def grads() -> list[torch.Tensor]:
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in student.parameters()]

    def parts() -> tuple:
        """The combined loss and, from the same seeds, its two parts computed apart, with gradients."""
        student.zero_grad()
        torch.manual_seed(1)
        res = combined(student, batch, 2)
        res.total.backward()
        g = grads()
        student.zero_grad()
        torch.manual_seed(1)
        t = task(student, batch, 2)
        t.total.backward()
        g_t = grads()
        student.zero_grad()
        if not masking:  # one shared forward: the distillation alone must draw the same dropout
            torch.manual_seed(1)
        d = distiller(student, batch, 2)  # with masking: the second forward, as in the combined loss
        d.total.backward()
        g_d = grads()
        return res, t, d, g, g_t, g_d

    res, t, d, g, g_t, g_d = parts()
    hook.remove()
    # Exact: the same operations on the same values (seeded dropout, masks seeded by the step).
    assert torch.equal(res.total, t.total + 0.5 * d.total)
    assert res.task == float(t.total.detach()) and res.distill == float(d.total.detach()) and res.distill > 0
    assert (res.masked, res.unmasked, res.per_layer) == (d.masked, d.unmasked, d.per_layer)
    assert (res.masked > 0) == masking
    # The gradient is the sum of the parts' gradients. One backward through the shared graph sums in another
    # order than two: float32 rounding, ~1e-7 of the gradient's norm, where a wrong or missing weight is O(1).
    # (Measured over all parameters at once: some, such as biases feeding a layer norm, have a gradient
    # that is zero up to rounding, so no per-tensor relative bound holds.)
    flat, ref = torch.cat([a.flatten() for a in g]), torch.cat([(b + 0.5 * c).flatten() for b, c in zip(g_t, g_d)])
    assert (flat - ref).norm() <= 1e-5 * ref.norm()
    assert (torch.cat([b.flatten() for b in g_t]) - flat).norm() > 1e-3 * ref.norm()  # the distillation counts
    # Without masking one forward serves both parts; with masking the task sees the clean input and the
    # distillation a masked one.
    combined_calls = calls[: 2 if masking else 1]
    assert [m is None for m in combined_calls] == ([True, False] if masking else [True])
    # Dropout is live, so the seeding above is what makes the parts match (the equality is not vacuous).
    torch.manual_seed(2)
    assert not torch.equal(task(student, batch, 2).total, t.total)
    # The CER of the batch comes from the greedy paths of the task forward.
    torch.manual_seed(1)
    with torch.no_grad():
        out = student(batch.waveforms, batch.lengths)
    refs = [dict(line.split("\t") for line in (work / "audio" / "labels.tsv").read_text().splitlines())[Path(p).name]
            for p in batch.paths]  # fmt: skip
    assert res.decoding.error_rates() == error_rates(greedy_decode(out.logits, out.lengths, ALPHABET), refs)


# -- training runs ---------------------------------------------------------------------------------------


def test_training_logs_both_parts_and_resumes_exactly_after_sigkill(work: Path) -> None:
    recipe_file = work / "r.yaml"
    recipe_file.write_text(recipe_text(steps="3", checkpoint="{every: 1, keep: 2}"))
    student = str(work / "student.yaml")
    reference = work / "reference"
    assert main(["train", student, "--recipe", str(recipe_file), "--out", str(reference)]) == 0
    rows = _rows(reference)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["loss"] == pytest.approx(r["task"] + 0.5 * r["distill"], rel=1e-6)
        assert r["task"] > 0 and r["distill"] > 0 and r["masked"] > 0 and r["unmasked"] > 0
        assert 0 <= r["cer"] and 0 <= r["wer"]
    killed = work / "killed"
    stopped_at = kill_after_first_checkpoint(student, recipe_file, killed)
    assert stopped_at < 3
    assert main(["train", student, "--recipe", str(recipe_file), "--out", str(killed)]) == 0
    # Exact: nothing new is saved (the teacher is frozen and rebuilt from float.pt); the task forward, the
    # masked forward and the step's mask come back from the restored weights, RNG and data position.
    assert _curve(killed) == _curve(reference)
    a = torch.load(killed / "student.pt", weights_only=True)
    b = torch.load(reference / "student.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ctc_alone_logs_cer_and_no_parts(work: Path) -> None:
    text = recipe_text(teacher="", loss=f"{{kind: ctc, alphabet: '{ALPHABET}'}}", steps="2")
    result = train(planner.load(work / "student.yaml"), loads_recipe(text, base_dir=str(work)), work / "run", log=None)
    row = result.metrics[-1]
    assert "task" not in row and "distill" not in row and 0 <= row["cer"] and 0 <= row["wer"]


def test_classification_with_distillation_starts_from_the_same_task_loss(work: Path) -> None:
    labels = work / "audio" / "classes.tsv"
    write_tsv(labels, [(f"u{i}.wav", "ab"[i % 2]) for i in range(6)])
    qat = planner.load(DATA / "tiny-student-int4-2of4.yaml")  # no dropout: the first forward is deterministic
    torch.manual_seed(0)
    torch.save(build(qat).state_dict(), work / "qat-float.pt")
    data = "{train: [train.tsv], labels: audio/classes.tsv, batch_seconds: 2.0, max_seconds: 1.0, min_seconds: 0.1}"
    alone = recipe_text(teacher="", init="qat-float.pt", data=data, loss="{kind: classification}", steps="2")
    both = recipe_text(teacher="{kind: self, checkpoint: qat-float.pt}", init="qat-float.pt", data=data,
                       loss="{kind: classification, distill_weight: 2.0}", steps="2")  # fmt: skip
    a = train(qat, loads_recipe(alone, base_dir=str(work)), work / "alone", log=None).metrics
    b = train(qat, loads_recipe(both, base_dir=str(work)), work / "both", log=None).metrics
    # The classifier is built before the teacher, so step 1 (weights untouched) has the task loss of the
    # run without distillation; the distillation of a student that starts at its teacher's weights differs
    # only through quantization (int4 + 2:4 against float) and is positive.
    assert b[0]["task"] == a[0]["loss"] and b[0]["distill"] > 0
    assert b[0]["loss"] == pytest.approx(b[0]["task"] + 2.0 * b[0]["distill"], rel=1e-6)
    assert 0 <= b[-1]["accuracy"] <= 1
    assert set(torch.load(work / "both" / "classifier.pt", weights_only=True)) == {"weight", "bias"}
