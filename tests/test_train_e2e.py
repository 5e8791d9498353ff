"""End to end on real speech: spoken digits synthesized with espeak-ng (several voices and speeds), the
corpus of ``planner data demo`` (:func:`trainers.demo.build_demo_corpus`, the first five digits).

teacher (cross-entropy on word classes) -> masking distillation into a smaller student -> int4 + 2:4 QAT
with a few-shot mask schedule and the float student as self-distillation teacher -> linear probe on frozen
features, evaluated on voices never trained on (and on asterisk's real 8 kHz recordings of the digits when
installed). Each stage prints its metric. espeak-ng comes from ``.ci/apt.sh``; without it the test fails
under CI=true and skips elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from planner.cli import main
from trainers.demo import build_demo_corpus

DATA = Path(__file__).resolve().parent / "data"
WORDS = 5  # the first five digits; chance 1/5 on the balanced held-out voices


def _espeak() -> None:
    if shutil.which("espeak-ng") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("espeak-ng is not installed: .ci/apt.sh installs it (apt-get install -y espeak-ng)")
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")


def _last(run: Path, key: str) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return rows[-1][key]


def _first(run: Path, key: str) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])[key]


def _evaluate(run: Path, task: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["evaluate", str(run), "--task", str(task)]) == 0
    return json.loads(capsys.readouterr().out)


def _pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str], *, batch_seconds: float,
              teacher_steps: int, distill_steps: int, qat_steps: int, probe_steps: int) -> dict[str, float]:  # fmt: skip
    _espeak()
    corpus = build_demo_corpus(tmp_path / "corpus", words=WORDS, probe_steps=probe_steps).root
    manifest, labels = corpus / "train.tsv", corpus / "labels.tsv"
    data = (
        f"{{train: [{manifest}], labels: {labels}, batch_seconds: {batch_seconds}, max_seconds: 1.0, min_seconds: 0.1}}"
    )
    common = "schedule: {warmup_ratio: 0.1}\nlogging: {every: 10}\nseed: 0\n"
    figures: dict[str, float] = {}

    # 1. teacher: cross-entropy on the five words, trainer-owned linear classifier on the mean-pooled output
    (tmp_path / "teacher.yaml").write_text(
        f"data: {data}\nloss: {{kind: classification}}\noptimizer: {{lr: 2.0e-3}}\nsteps: {teacher_steps}\n"
        f"checkpoint: {{every: {teacher_steps}, keep: 1}}\n{common}")  # fmt: skip
    t_run = tmp_path / "runs" / "teacher"
    assert (
        main(["train", str(DATA / "e2e-teacher.yaml"), "--recipe", str(tmp_path / "teacher.yaml"), "--out", str(t_run)])
        == 0
    )
    figures["teacher_train_accuracy"] = _last(t_run, "accuracy")
    assert (t_run / "classifier.pt").is_file()

    # 2. masking distillation of the student from that teacher
    data_nl = data.replace(f", labels: {labels}", "")
    (tmp_path / "distill.yaml").write_text(
        f"teacher: {{kind: architecture, arch: {DATA / 'e2e-teacher.yaml'}, checkpoint: {t_run / 'student.pt'}}}\n"
        f"data: {data_nl}\nloss: {{masking: {{prob: 0.5, span: 3}}}}\noptimizer: {{lr: 2.0e-3}}\n"
        f"steps: {distill_steps}\ncheckpoint: {{every: {distill_steps}, keep: 1}}\n{common}")  # fmt: skip
    s_run = tmp_path / "runs" / "student"
    assert (
        main(["train", str(DATA / "e2e-student.yaml"), "--recipe", str(tmp_path / "distill.yaml"), "--out", str(s_run)])
        == 0
    )
    figures["distill_loss_first"], figures["distill_loss_last"] = _first(s_run, "loss"), _last(s_run, "loss")

    # 3. int4 + 2:4 QAT from the distilled weights, few-shot masks (T_p = a quarter of the steps),
    #    self-distillation from the float student
    (tmp_path / "qat.yaml").write_text(
        f"teacher: {{kind: self, checkpoint: {s_run / 'student.pt'}}}\ninit: {s_run / 'student.pt'}\n"
        f"compression: {{schedule: few_shot, steps: {max(1, qat_steps // 4)}}}\n"
        f"data: {data_nl}\noptimizer: {{lr: 5.0e-4}}\nsteps: {qat_steps}\n"
        f"checkpoint: {{every: {qat_steps}, keep: 1}}\n{common}")  # fmt: skip
    q_run = tmp_path / "runs" / "qat"
    assert (
        main(
            [
                "train",
                str(DATA / "e2e-student-int4-2of4.yaml"),
                "--recipe",
                str(tmp_path / "qat.yaml"),
                "--out",
                str(q_run),
            ]
        )
        == 0
    )
    figures["qat_loss_first"], figures["qat_loss_last"] = _first(q_run, "loss"), _last(q_run, "loss")

    # 4. linear probes on frozen features, held-out voices (and real recordings when installed)
    for name, run in (("teacher", t_run), ("student", s_run), ("qat", q_run)):
        figures[f"probe_{name}"] = _evaluate(run, corpus / "task-held.yaml", capsys)["accuracy"]
    if (corpus / "task-real.yaml").is_file():  # asterisk-core-sounds-en-wav's real recordings, where installed
        figures["probe_qat_asterisk"] = _evaluate(q_run, corpus / "task-real.yaml", capsys)["accuracy"]
    with capsys.disabled():
        print("\n" + "  ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    return figures


def test_spoken_digits_reduced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _pipeline(
        tmp_path, capsys, batch_seconds=4.0, teacher_steps=50, distill_steps=60, qat_steps=12, probe_steps=200
    )
    assert f["distill_loss_last"] < f["distill_loss_first"]
    assert f["probe_qat"] > 2 * 0.2  # chance is 1/5 on the balanced held-out voices


@pytest.mark.slow
def test_spoken_digits_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _pipeline(
        tmp_path, capsys, batch_seconds=12.0, teacher_steps=300, distill_steps=200, qat_steps=80, probe_steps=400
    )
    assert f["teacher_train_accuracy"] > 0.6
    assert f["distill_loss_last"] < f["distill_loss_first"] and f["qat_loss_last"] < f["qat_loss_first"]
    assert f["probe_teacher"] > 2 * 0.2 and f["probe_qat"] > 2 * 0.2
