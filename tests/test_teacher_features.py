"""A features-input architecture as teacher: it computes the student pipeline's filterbanks from the batch's
audio, trains a student with masking distillation, serves the distillation proxy, and passes validate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import planner
from planner.cli import main
from planner.errors import ConfigError
from support import DATA, recipe_text
from trainers import distill_proxy, load_recipe, load_teacher, loads_recipe, train
from trainers.data import BatchStream, collate

STUDENT = DATA / "tiny-student.yaml"
# 40 ms frames (10 ms hop, 4x subsampling) against the student's 10 ms: masks and layers are resampled
TEACHER = """\
format: 1
name: fbank-teacher
input: {kind: features, n_mels: 16}
width: 48
frontend:
  - {kind: conv2d_subsampling, channels: [8, 4]}
  - {kind: mask_embedding}
layers: [{kind: transformer, repeat: 3, heads: 2, ffn: 64}]
"""


@pytest.fixture
def teacher(tmp_path: Path) -> Path:
    (tmp_path / "fbank-teacher.yaml").write_text(TEACHER)
    torch.manual_seed(0)
    torch.save(planner.materialize(planner.load(tmp_path / "fbank-teacher.yaml")).state_dict(), tmp_path / "t.pt")
    return tmp_path / "fbank-teacher.yaml"


def _recipe(tmp_path: Path, corpus: Path, teacher: Path, **extra: str) -> Path:
    text = recipe_text(f"{{kind: architecture, arch: {teacher.name}, checkpoint: t.pt}}", corpus, **extra)
    text = text.replace("min_seconds: 0.1}", "min_seconds: 0.1, valid: " + str(corpus) + "}")
    (tmp_path / "recipe.yaml").write_text(text)
    return tmp_path / "recipe.yaml"


def test_teacher_computes_the_student_pipelines_filterbanks(tmp_path: Path, corpus: Path, teacher: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path, corpus, teacher))
    t = load_teacher(recipe)
    spec = planner.load(teacher).spec.input
    batch = next(BatchStream([str(corpus)], batch_seconds=1.0, max_seconds=0.5, seed=3))  # waveforms only
    out = t(batch.waveforms, batch.lengths)
    # what a features student of this spec is given: the same batch through collate's fbank
    feats = collate([w[: int(n)] for w, n in zip(batch.waveforms, batch.lengths)], batch.paths, spec)
    with torch.no_grad():
        ref = t.model(feats.features, feats.feature_lengths)
    # exact: the same kaldi fbank of the same samples, zero-padded alike, through the same modules
    assert all(torch.equal(a, b) for a, b in zip(out.hidden, ref.hidden_states)) and len(out.hidden) == 3
    assert torch.equal(out.lengths, ref.hidden_lengths[-1])
    lengths, _ = t.mask_lengths(batch.lengths)
    assert torch.equal(lengths, out.lengths)  # masks are drawn at the frames the teacher computes


def test_masking_distillation_and_proxy_with_a_features_teacher(tmp_path: Path, corpus: Path, teacher: Path) -> None:
    path = _recipe(tmp_path, corpus, teacher, steps="2")
    recipe = load_recipe(path)
    result = train(planner.load(STUDENT), recipe, tmp_path / "run", log=None)
    assert result.step == 2 and all(0 < r["loss"] < 1e3 and r["masked"] > 0 for r in result.metrics)
    values = list(distill_proxy(planner.load(STUDENT), recipe, steps=2, eval_every=1, eval_batches=1))
    assert [s for s, _ in values] == [1, 2] and all(0 < v < 1e3 for _, v in values)
    assert main(["validate", str(path)]) == 0


def test_a_teacher_at_another_sample_rate_is_refused_where_it_is_named(
    tmp_path: Path, corpus: Path, teacher: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher.write_text(TEACHER.replace("n_mels: 16}", "n_mels: 16, sample_rate: 8000}"))
    path = _recipe(tmp_path, corpus, teacher)
    with pytest.raises(
        ConfigError, match=r"recipe\.yaml: teacher\.arch: .*input\.sample_rate 8000 .*data\.sample_rate 16000"
    ):
        load_teacher(load_recipe(path))
    assert main(["validate", str(path)]) != 0
    err = capsys.readouterr().err
    assert "teacher.arch: " in err and "input.sample_rate 8000" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="input.sample_rate 8000"):
        train(planner.load(STUDENT), loads_recipe(path.read_text(), base_dir=str(tmp_path)), tmp_path / "run", log=None)
    assert not (tmp_path / "run").exists()
