"""Hostile and careless training recipes: each is refused with the recipe file and the field.

The content cases run ``planner validate RECIPE`` and ``planner recipe RECIPE`` (the loader ``planner train``
uses) on a recipe with one mistake: a non-finite or out-of-range number, or a field that does not apply to
the chosen kind. The train cases run ``planner train`` until the recipe's teacher is loaded: a missing,
planted-pickle or unfitting teacher is refused naming ``RECIPE: teacher.FIELD``. Nothing in the folder
changes (validate writes nothing), and a planted pickle never runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from hostile.support import refused, snapshot

ROOT = Path(__file__).resolve().parents[2]
STUDENT = ROOT / "tests" / "data" / "tiny-student.yaml"

# One line per section, so that a case replaces whole sections.
BASE = {
    "format": "format: 1",
    "teacher": "teacher: {kind: torchaudio_hubert, checkpoint: t.pt}",
    "data": "data: {train: [a.tsv], valid: v.tsv}",
    "loss": "loss: {kind: layer_to_layer, masking: {prob: 0.8, span: 10}}",
    "optimizer": "optimizer: {lr: 2.0e-4, betas: [0.9, 0.98], eps: 1.0e-6, clip_norm: 10.0}",
    "schedule": "schedule: {kind: linear, warmup_ratio: 0.07}",
    "steps": "steps: 10",
    "logging": "logging: {every: 5}",
    "checkpoint": "checkpoint: {every: 5, keep: 2}",
    "seed": "seed: 0",
}
FILES = ("t.pt", "a.tsv", "v.tsv", "l.tsv", "f.pt")  # every file the cases name exists: only the mistake shows


def write_recipe(folder: Path, **sections: str) -> Path:
    """``BASE`` with ``sections`` replaced (an empty string drops a section), and the files it names."""
    for name in FILES:
        (folder / name).touch()
    lines = [v for k, v in (BASE | sections).items() if v]
    path = folder / "r.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# (id, replaced sections, the field paths the message must name)
CASES = [
    # non-finite numbers
    pytest.param({"optimizer": "optimizer: {lr: .nan}"}, ["optimizer.lr", "not a finite number"], id="nan-lr"),
    pytest.param(
        {"data": "data: {train: [a.tsv], batch_seconds: .inf}"}, ["data.batch_seconds", "finite"], id="inf-batch"
    ),
    pytest.param({"optimizer": "optimizer: {betas: [0.9, .nan]}"}, ["optimizer.betas[1]"], id="nan-beta"),
    pytest.param(
        {"loss": "loss: {layers: {0: 0, 1: 1}, weights: [.nan, 1.0]}"}, ["loss.weights[0]"], id="nan-layer-weight"
    ),
    pytest.param({"loss": "loss: {masking: {prob: .nan}}"}, ["loss.masking.prob"], id="nan-mask-prob"),
    pytest.param(
        {"loss": "loss: {masking: {prob: 0.4, schedule: linear, prob_end: .inf}}"},
        ["loss.masking.prob_end"],
        id="inf-mask-prob-end",
    ),
    pytest.param({"schedule": "schedule: {warmup_ratio: .nan}"}, ["schedule.warmup_ratio"], id="nan-warmup"),
    pytest.param(
        {"teacher": "teacher: {kind: torchaudio_hubert, checkpoint: t.pt, overrides: {encoder_layer_drop: .nan}}"},
        ["teacher.overrides.encoder_layer_drop", "finite"],
        id="nan-override",
    ),
    # positive-only numbers
    pytest.param({"optimizer": "optimizer: {eps: 0}"}, ["optimizer.eps", "greater than 0"], id="zero-eps"),
    pytest.param({"optimizer": "optimizer: {lr: -1.0e-4}"}, ["optimizer.lr"], id="negative-lr"),
    pytest.param({"optimizer": "optimizer: {clip_norm: -1}"}, ["optimizer.clip_norm"], id="negative-clip"),
    pytest.param({"optimizer": "optimizer: {weight_decay: -0.1}"}, ["optimizer.weight_decay"], id="negative-decay"),
    pytest.param({"data": "data: {train: [a.tsv], max_seconds: 0}"}, ["data.max_seconds"], id="zero-max-seconds"),
    pytest.param(
        {"schedule": "schedule: {warmup_ratio: 1.0}"}, ["schedule.warmup_ratio", "less than 1"], id="warmup-1"
    ),
    pytest.param({"loss": "loss: {masking: {prob: 0}}"}, ["loss.masking.prob"], id="zero-mask-prob"),
    pytest.param({"loss": "loss: {masking: {span: 0}}"}, ["loss.masking.span", "at least 1"], id="zero-span"),
    pytest.param({"steps": "steps: 0"}, ["steps", "at least 1"], id="zero-steps"),
    pytest.param({"checkpoint": "checkpoint: {every: 5, keep: 0}"}, ["checkpoint.keep"], id="keep-0"),
    pytest.param({"logging": "logging: {every: -1}"}, ["logging.every"], id="logging-negative"),
    pytest.param({"seed": "seed: -1"}, ["seed"], id="negative-seed"),
    pytest.param(
        {"loss": "loss: {distance: l1_cosine, cosine_weight: -1}"}, ["loss.cosine_weight"], id="negative-cosine"
    ),
    # fields that do not apply to the chosen kind
    pytest.param(
        {"loss": "loss: {kind: layer_to_layer, alphabet: abc}"},
        ["loss.alphabet", "only allowed with kind: ctc"],
        id="alphabet-on-distill",
    ),
    pytest.param(
        {"loss": "loss: {kind: layer_to_layer, distill_weight: 0.5}"},
        ["loss.distill_weight"],
        id="distill-weight-on-distill",
    ),
    pytest.param(
        {"teacher": "", "data": "data: {train: [a.tsv], labels: l.tsv}", "loss": "loss: {kind: ctc, classes: [a, b]}"},
        ["loss.classes", "classification"],
        id="classes-on-ctc",
    ),
    pytest.param(
        {
            "teacher": "",
            "data": "data: {train: [a.tsv], labels: l.tsv}",
            "loss": "loss: {kind: ctc, masking: {prob: 0.5}}",
        },
        ["loss.masking", "only allowed with distillation"],
        id="masking-on-task-alone",
    ),
    pytest.param(
        {"teacher": "teacher: {kind: hubert_large, checkpoint: t.pt}"},
        ["teacher.kind", "torchaudio_hubert"],
        id="unknown-teacher-kind",
    ),
    pytest.param(
        {"teacher": "teacher: {kind: torchaudio_hubert, checkpoint: t.pt, arch: x.yaml}"},
        ["teacher.arch", "only allowed with kind: architecture"],
        id="arch-on-torchaudio-teacher",
    ),
    pytest.param(
        {"teacher": "teacher: {kind: self, checkpoint: f.pt, overrides: {encoder_num_layers: 2}}"},
        ["teacher.overrides", "torchaudio kinds"],
        id="overrides-on-self-teacher",
    ),
    pytest.param(
        {"format": "format: 1\ndeepspeed: {zero_stage: 0, precision: fp32}"},
        ["deepspeed", "engine: deepspeed"],
        id="deepspeed-with-torch",
    ),
    pytest.param(
        {"schedule": "schedule: {kind: constant, final_ratio: 0.1}"},
        ["schedule.final_ratio", "linear, cosine"],
        id="final-ratio-on-constant",
    ),
    pytest.param(
        {"data": "data: {train: [a.tsv], labels: l.tsv}"}, ["data.labels", "task losses"], id="labels-on-distill"
    ),
]


@pytest.mark.parametrize(("sections", "names"), CASES)
@pytest.mark.parametrize("command", ["validate", "recipe"])
def test_recipe_mistake_is_refused(
    tmp_path: Path, cli, sections: dict[str, str], names: list[str], command: str
) -> None:
    recipe = write_recipe(tmp_path, **sections)
    before = snapshot(tmp_path)
    result = cli([command, recipe])
    refused(result, names=[f"{recipe}: {names[0]}: ", *names[1:]], code=2)
    assert result.out == ""
    assert snapshot(tmp_path) == before


def test_several_mistakes_are_reported_together(tmp_path: Path, cli) -> None:
    recipe = write_recipe(
        tmp_path,
        loss="loss: {kind: layer_to_layer, alphabet: abc, masking: {prob: 0, span: 0}}",
        optimizer="optimizer: {lr: .nan, eps: 0, clip_norm: -1}",
        steps="steps: 0\nstepz: 3",
        teacher="teacher: {kind: torchaudio_hubert, checkpoint: t.pt, arch: x.yaml}",
    )
    result = cli(["validate", recipe])
    expected = ["teacher.arch", "loss.alphabet", "loss.masking.prob", "loss.masking.span", "optimizer.lr",
                "optimizer.eps", "optimizer.clip_norm", "steps", "stepz"]  # fmt: skip
    refused(result, names=[f"{recipe}: {field}: " for field in expected], code=2)
    assert len(result.err.strip().splitlines()) == len(expected), result.err  # one line each, nothing else


def test_all_checks_of_one_section_are_reported_together(tmp_path: Path, cli) -> None:
    # both cross-field checks of data (min > max, batch < max) fail: check() collects, it does not stop
    recipe = write_recipe(tmp_path, data="data: {train: [a.tsv], batch_seconds: 2, max_seconds: 4, min_seconds: 5}")
    refused(
        cli(["validate", recipe]), names=[f"{recipe}: data.min_seconds: ", f"{recipe}: data.batch_seconds: "], code=2
    )


# -- planner train: errors from recipe values found while starting name the recipe file and the field ------


def _train_recipe(folder: Path, teacher: str) -> Path:
    (folder / "a.tsv").write_text(f"{folder}\n", encoding="utf-8")  # an empty manifest: the teacher fails first
    path = folder / "r.yaml"
    path.write_text(f"format: 1\nteacher: {teacher}\ndata: {{train: [a.tsv]}}\nsteps: 2\n", encoding="utf-8")
    return path


class _Planted:
    """A pickle that would create ``marker`` when loaded (weights_only=True must refuse it first)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_train_missing_teacher_checkpoint_names_recipe_and_field(tmp_path: Path, cli) -> None:
    recipe = _train_recipe(tmp_path, "{kind: self, checkpoint: nope.pt}")
    refused(cli(["train", STUDENT, "--recipe", recipe, "--out", tmp_path / "run"]),
            names=[f"{recipe}: teacher.checkpoint: ", "nope.pt does not exist"])  # fmt: skip


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the protocol before refusing the file
def test_train_planted_pickle_teacher_is_refused_and_never_runs(tmp_path: Path, cli) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "ran"
    torch.save({"w": _Planted(marker)}, tmp_path / "evil.pt", pickle_protocol=pickle.DEFAULT_PROTOCOL)
    assert not marker.exists()  # saving does not run it
    recipe = _train_recipe(tmp_path, "{kind: self, checkpoint: evil.pt}")
    result = cli(["train", STUDENT, "--recipe", recipe, "--out", tmp_path / "run"])
    refused(
        result, names=[f"{recipe}: teacher.checkpoint: ", "evil.pt cannot be read as data, a state dict of tensors"]
    )
    assert not marker.exists()
    assert "weights_only` set to `False`" not in result.err  # torch's advice to load it anyway is not passed on


def test_train_empty_teacher_checkpoint_names_recipe_and_field(tmp_path: Path, cli) -> None:
    (tmp_path / "empty.pt").touch()
    recipe = _train_recipe(tmp_path, "{kind: self, checkpoint: empty.pt}")
    refused(cli(["train", STUDENT, "--recipe", recipe, "--out", tmp_path / "run"]),
            names=[f"{recipe}: teacher.checkpoint: ", "empty.pt is empty"])  # fmt: skip


def test_train_teacher_override_torchaudio_rejects_names_recipe_and_field(tmp_path: Path, cli) -> None:
    pytest.importorskip("torchaudio")
    (tmp_path / "t.pt").touch()  # planner train refuses missing files before it builds the teacher
    recipe = _train_recipe(
        tmp_path, "{kind: torchaudio_hubert, checkpoint: t.pt, overrides: {encoder_num_layers: many}}"
    )
    refused(cli(["train", STUDENT, "--recipe", recipe, "--out", tmp_path / "run"]),
            names=[f"{recipe}: teacher.overrides: ", "wav2vec2_model rejects"])  # fmt: skip


def test_train_missing_teacher_architecture_names_recipe_and_field(tmp_path: Path, cli) -> None:
    (tmp_path / "t.pt").touch()
    recipe = _train_recipe(tmp_path, "{kind: architecture, arch: gone.yaml, checkpoint: t.pt}")
    refused(cli(["train", STUDENT, "--recipe", recipe, "--out", tmp_path / "run"]),
            names=[f"{recipe}: teacher.arch: ", "gone.yaml does not exist"])  # fmt: skip
