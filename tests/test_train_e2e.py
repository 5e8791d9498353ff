"""End to end on real speech: spoken digits synthesized with espeak-ng (several voices and speeds).

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
import subprocess
from pathlib import Path

import pytest

from planner.cli import main
from trainers import scan_folder

DATA = Path(__file__).resolve().parent / "data"
WORDS = ["zero", "one", "two", "three", "four"]
TRAIN_VOICES = ["en+m1", "en+m3", "en+f2", "en+f4", "en-us+m5", "en-us+f3"]
HELD_OUT_VOICES = ["en+m7", "en+f5"]
ASTERISK = Path("/usr/share/asterisk/sounds/en/digits")


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("espeak-ng is not installed: .ci/apt.sh installs it (apt-get install -y espeak-ng)")
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    return exe


def _synthesize(exe: str, folder: Path, voices: list[str], speeds: list[int]) -> list[tuple[str, str]]:
    """Writes ``voice-speed-word.wav`` files (22.05 kHz); returns ``(relative path, word)``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for v in voices:
        for s in speeds:
            for w in WORDS:
                name = f"{v}-{s}-{w}.wav"
                subprocess.run([exe, "-w", str(folder / name), "-v", v, "-s", str(s), w], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                out.append((name, w))
    return out


def _tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{p}\t{w}\n" for p, w in rows))
    return path


def _last(run: Path, key: str) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return rows[-1][key]


def _first(run: Path, key: str) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])[key]


def _evaluate(run: Path, task: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["evaluate", str(run), "--task", str(task)]) == 0
    return json.loads(capsys.readouterr().out)


def _pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str], *, speeds: list[int], batch_seconds: float,
              teacher_steps: int, distill_steps: int, qat_steps: int, probe_steps: int) -> dict[str, float]:  # fmt: skip
    exe = _espeak()
    train_rows = _synthesize(exe, tmp_path / "audio" / "train", TRAIN_VOICES, speeds)
    held_rows = _synthesize(exe, tmp_path / "audio" / "held", HELD_OUT_VOICES, [130, 170])
    manifest = tmp_path / "train.tsv"
    scan_folder(tmp_path / "audio" / "train", manifest)
    labels = _tsv(tmp_path / "audio" / "train" / "labels.tsv", train_rows)
    held = _tsv(tmp_path / "audio" / "held" / "labels.tsv", held_rows)
    data = f"{{train: [{manifest}], labels: {labels}, batch_seconds: {batch_seconds}, max_seconds: 1.0, min_seconds: 0.1}}"
    common = "schedule: {warmup_ratio: 0.1}\nlogging: {every: 10}\nseed: 0\n"
    figures: dict[str, float] = {}

    # 1. teacher: cross-entropy on the five words, trainer-owned linear classifier on the mean-pooled output
    (tmp_path / "teacher.yaml").write_text(
        f"data: {data}\nloss: {{kind: classification}}\noptimizer: {{lr: 2.0e-3}}\nsteps: {teacher_steps}\n"
        f"checkpoint: {{every: {teacher_steps}, keep: 1}}\n{common}")  # fmt: skip
    t_run = tmp_path / "runs" / "teacher"
    assert main(["train", str(DATA / "e2e-teacher.yaml"), "--recipe", str(tmp_path / "teacher.yaml"), "--out", str(t_run)]) == 0
    figures["teacher_train_accuracy"] = _last(t_run, "accuracy")
    assert (t_run / "classifier.pt").is_file()

    # 2. masking distillation of the student from that teacher
    data_nl = data.replace(f", labels: {labels}", "")
    (tmp_path / "distill.yaml").write_text(
        f"teacher: {{kind: architecture, arch: {DATA / 'e2e-teacher.yaml'}, checkpoint: {t_run / 'student.pt'}}}\n"
        f"data: {data_nl}\nloss: {{masking: {{prob: 0.5, span: 3}}}}\noptimizer: {{lr: 2.0e-3}}\n"
        f"steps: {distill_steps}\ncheckpoint: {{every: {distill_steps}, keep: 1}}\n{common}")  # fmt: skip
    s_run = tmp_path / "runs" / "student"
    assert main(["train", str(DATA / "e2e-student.yaml"), "--recipe", str(tmp_path / "distill.yaml"), "--out", str(s_run)]) == 0
    figures["distill_loss_first"], figures["distill_loss_last"] = _first(s_run, "loss"), _last(s_run, "loss")

    # 3. int4 + 2:4 QAT from the distilled weights, few-shot masks (T_p = a quarter of the steps),
    #    self-distillation from the float student
    (tmp_path / "qat.yaml").write_text(
        f"teacher: {{kind: self, checkpoint: {s_run / 'student.pt'}}}\ninit: {s_run / 'student.pt'}\n"
        f"compression: {{schedule: few_shot, steps: {max(1, qat_steps // 4)}}}\n"
        f"data: {data_nl}\noptimizer: {{lr: 5.0e-4}}\nsteps: {qat_steps}\n"
        f"checkpoint: {{every: {qat_steps}, keep: 1}}\n{common}")  # fmt: skip
    q_run = tmp_path / "runs" / "qat"
    assert main(["train", str(DATA / "e2e-student-int4-2of4.yaml"), "--recipe", str(tmp_path / "qat.yaml"), "--out", str(q_run)]) == 0
    figures["qat_loss_first"], figures["qat_loss_last"] = _first(q_run, "loss"), _last(q_run, "loss")

    # 4. linear probes on frozen features, held-out voices (and real recordings when installed)
    task = tmp_path / "task.yaml"
    task.write_text(f"train: {labels}\ntest: {held}\nsteps: {probe_steps}\nlr: 1.0e-2\n")
    for name, run in (("teacher", t_run), ("student", s_run), ("qat", q_run)):
        figures[f"probe_{name}"] = _evaluate(run, task, capsys)["accuracy"]
    if ASTERISK.is_dir() and all((ASTERISK / f"{i}.wav").is_file() for i in range(5)):
        real = _tsv(tmp_path / "asterisk.tsv", [(str(ASTERISK / f"{i}.wav"), w) for i, w in enumerate(WORDS)])
        (tmp_path / "task-real.yaml").write_text(f"train: {labels}\ntest: {real}\nsteps: {probe_steps}\nlr: 1.0e-2\n")
        figures["probe_qat_asterisk"] = _evaluate(q_run, tmp_path / "task-real.yaml", capsys)["accuracy"]
    with capsys.disabled():
        print("\n" + "  ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    return figures


def test_spoken_digits_reduced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _pipeline(tmp_path, capsys, speeds=[140], batch_seconds=4.0, teacher_steps=50, distill_steps=60, qat_steps=12, probe_steps=200)
    assert f["distill_loss_last"] < f["distill_loss_first"]
    assert f["probe_qat"] > 2 * 0.2  # chance is 1/5 on the balanced held-out voices


@pytest.mark.slow
def test_spoken_digits_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _pipeline(tmp_path, capsys, speeds=[120, 160], batch_seconds=12.0, teacher_steps=300, distill_steps=200, qat_steps=80, probe_steps=400)
    assert f["teacher_train_accuracy"] > 0.6
    assert f["distill_loss_last"] < f["distill_loss_first"] and f["qat_loss_last"] < f["qat_loss_first"]
    assert f["probe_teacher"] > 2 * 0.2 and f["probe_qat"] > 2 * 0.2
