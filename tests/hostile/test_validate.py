"""``planner validate`` agrees with the commands: each case is a file that a command would refuse, and
validate refuses it the same way, naming the file and the field, all mistakes at once.

Covered: recipes read as recipes whatever their keys (and a note where the kind is in doubt), the files a
recipe, a probe task or a study's evaluator names (missing, a folder, not given), errors of a space and of
its study section together, and the shipped recipes. Validate writes nothing (snapshots).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from hostile.support import refused, snapshot
from planner.validate import ARCHITECTURE_KEYS, RECIPE_KEYS, STUDY_KEYS, TASK_KEYS, detect_kind

ROOT = Path(__file__).resolve().parents[2]
TEACHER_ARCH = ROOT / "tests" / "data" / "tiny-teacher.yaml"

SPACE = """format: 1
name: tiny
input: {kind: waveform, sample_rate: 16000}
width: {choice: [64, 96], name: width}
frontend:
  - kind: conv_extractor
    conv_layers: [[32, 10, 5], "2 x [32, 3, 2]"]
    projection: true
  - kind: layer_norm
layers:
  - kind: transformer
    repeat: {range: [1, 2]}
    heads: 2
    ffn: 128
study:
  name: tiny
  objectives: [{metric: params}]
  n_trials: 2
  evaluator: EVALUATOR
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _validate(cli, folder: Path, *files: Path):
    before = snapshot(folder)
    result = cli(["validate", *files])
    assert snapshot(folder) == before  # validate writes nothing
    return result


# -- kinds -----------------------------------------------------------------------------------------------


def test_key_sets_are_the_dataclass_fields() -> None:
    from planner.ir.spec import ArchSpec
    from planner.search._study import StudyConfig
    from trainers.evaluate import ProbeTask
    from trainers.recipe import Recipe

    def keys(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.init}

    assert keys(ArchSpec) == ARCHITECTURE_KEYS and keys(Recipe) == RECIPE_KEYS and keys(ProbeTask) == TASK_KEYS
    assert keys(StudyConfig) == STUDY_KEYS


def test_recipe_without_teacher_or_engine_is_read_as_a_recipe(tmp_path: Path, cli) -> None:
    # a task-loss recipe has neither teacher nor engine; its mistake is a recipe mistake, not "name: missing"
    recipe = _write(tmp_path / "r.yaml", "data: {train: [a.tsv], labels: l.tsv}\nloss: {kind: ctc, alphabet: aab}\n")
    result = _validate(cli, tmp_path, recipe)
    refused(result, names=[f"{recipe}: loss.alphabet: ", "each once"], code=2)
    assert "name:" not in result.err and "read as" not in result.err  # its keys leave no doubt


def test_valid_recipe_without_teacher_or_engine_passes_as_a_recipe(tmp_path: Path, cli) -> None:
    for name in ("a.tsv", "l.tsv"):
        (tmp_path / name).touch()
    recipe = _write(
        tmp_path / "r.yaml", "data: {train: [a.tsv], labels: l.tsv}\nloss: {kind: classification}\nsteps: 5\n"
    )
    result = _validate(cli, tmp_path, recipe)
    assert result.code == 0 and result.out == f"{recipe}: ok (training recipe, classification loss, 5 steps on torch)\n"


def test_file_of_shared_keys_only_says_what_it_was_read_as(tmp_path: Path, cli) -> None:
    recipe = _write(tmp_path / "r.yaml", "steps: 3\nseed: 1\n")  # keys a recipe and a probe task share
    refused(_validate(cli, tmp_path, recipe), names=[f"{recipe}: data: required field is missing",
                                                     f"{recipe}: (read as a training recipe"], code=2)  # fmt: skip


def test_file_mixing_kinds_says_which_it_was_read_as(tmp_path: Path, cli) -> None:
    mixed = _write(tmp_path / "m.yaml", "width: 8\ndata: {train: a.tsv}\nloss: {kind: ctc}\n")
    result = _validate(cli, tmp_path, mixed)
    refused(result, names=[f"{mixed}: width: unknown field", "read as a training recipe (by its keys data, loss)",
                           "width is an architecture's"], code=2)  # fmt: skip
    assert detect_kind({"name": "x", "width": 8, "layers": [], "steps": 3}) == ("architecture", None)


# -- files a recipe names --------------------------------------------------------------------------------


MISSING = [
    "{recipe}: teacher.checkpoint: {tmp}/gone/f.pt does not exist", "{recipe}: data.train[0]: {tmp}/a.tsv does not exist",
    "{recipe}: data.valid: {tmp}/v.tsv does not exist", "{recipe}: init: {tmp}/i.pt does not exist",
]  # fmt: skip


def test_missing_files_of_a_recipe_are_all_warned_about(tmp_path: Path, cli) -> None:
    recipe = _write(tmp_path / "r.yaml", "teacher: {kind: self, checkpoint: gone/f.pt}\ninit: i.pt\n"
                                         "data: {train: [a.tsv, b.tsv], valid: v.tsv}\n")  # fmt: skip
    (tmp_path / "b.tsv").touch()
    names = [m.format(recipe=recipe, tmp=tmp_path) for m in MISSING]
    result = _validate(cli, tmp_path, recipe)  # a recipe for files the user has yet to make: warnings, exit 0
    assert result.code == 0 and result.out.startswith(f"{recipe}: ok (training recipe, "), result.err
    assert "4 named file(s) missing" in result.out and "data.train[1]" not in result.err
    assert [line.split(" (warning")[0] for line in result.err.splitlines()] == names
    strict = cli(["validate", "--strict", recipe])
    refused(strict, names=names, code=2)
    assert "warning" not in strict.err and "data.train[1]" not in strict.err


def test_train_refuses_the_missing_files_all_at_once(tmp_path: Path, cli) -> None:
    recipe = _write(tmp_path / "r.yaml", "teacher: {kind: self, checkpoint: gone/f.pt}\ninit: i.pt\n"
                                         "data: {train: [a.tsv, b.tsv], valid: v.tsv}\n")  # fmt: skip
    (tmp_path / "b.tsv").touch()
    result = cli(["train", TEACHER_ARCH, "--recipe", recipe, "--out", tmp_path / "run"])
    refused(result, names=[m.format(recipe=recipe, tmp=tmp_path) for m in MISSING], code=2)
    assert "warning" not in result.err and not (tmp_path / "run").exists()  # refused before the folder is claimed


def test_teacher_without_checkpoint_is_refused(tmp_path: Path, cli) -> None:
    (tmp_path / "a.tsv").touch()
    recipe = _write(tmp_path / "r.yaml", "teacher: {kind: torchaudio_hubert}\ndata: {train: a.tsv}\n")
    refused(
        _validate(cli, tmp_path, recipe), names=[f"{recipe}: teacher.checkpoint: a teacher needs its weights"], code=2
    )


def test_teacher_checkpoint_that_is_a_folder_is_refused(tmp_path: Path, cli) -> None:
    (tmp_path / "a.tsv").touch()
    (tmp_path / "ckpt").mkdir()
    recipe = _write(tmp_path / "r.yaml", "teacher: {kind: torchaudio_hubert, checkpoint: ckpt}\ndata: {train: a.tsv}\n")
    refused(
        _validate(cli, tmp_path, recipe), names=[f"{recipe}: teacher.checkpoint: ", "is a folder, not a file"], code=2
    )


def test_teacher_architecture_missing_or_invalid(tmp_path: Path, cli) -> None:
    for name in ("a.tsv", "t.pt"):
        (tmp_path / name).touch()
    recipe = _write(
        tmp_path / "r.yaml", "teacher: {kind: architecture, arch: t.yaml, checkpoint: t.pt}\ndata: {train: a.tsv}\n"
    )
    result = _validate(cli, tmp_path, recipe)
    assert result.code == 0 and f"{recipe}: teacher.arch: {tmp_path / 't.yaml'} does not exist (warning" in result.err
    refused(cli(["validate", "--strict", recipe]), names=[f"{recipe}: teacher.arch: ", "t.yaml does not exist"], code=2)
    # an invalid teacher architecture: its own file and field are named, as planner train would
    _write(tmp_path / "t.yaml", TEACHER_ARCH.read_text(encoding="utf-8").replace("heads: 2", "heads: 5", 1))
    refused(_validate(cli, tmp_path, recipe), names=[f"{tmp_path / 't.yaml'}: layers[0].heads: "], code=2)


# -- probe tasks -----------------------------------------------------------------------------------------


def test_task_tsvs_are_looked_for(tmp_path: Path, cli) -> None:
    (tmp_path / "train.tsv").touch()
    task = _write(tmp_path / "t.yaml", "train: train.tsv\ntest: held/out.tsv\nkind: ctc\n")
    result = _validate(cli, tmp_path, task)
    assert result.code == 0 and result.err == (f"{task}: test: {tmp_path / 'held' / 'out.tsv'} does not exist "
                                               "(warning: planner train refuses it; --strict makes this an error)\n")  # fmt: skip
    result = cli(["validate", "--strict", task])
    refused(result, names=[f"{task}: test: {tmp_path / 'held' / 'out.tsv'} does not exist"], code=2)
    assert f"{task}: train:" not in result.err
    (tmp_path / "held" / "out.tsv").mkdir(parents=True)  # a folder where a file belongs is a mistake, not a warning
    refused(_validate(cli, tmp_path, task), names=[f"{task}: test: ", "is a folder, not a file"], code=2)


# -- study sections --------------------------------------------------------------------------------------


def test_distill_evaluator_recipe_missing(tmp_path: Path, cli) -> None:
    space = _write(
        tmp_path / "s.yaml", SPACE.replace("EVALUATOR", f"{{kind: distill, recipe: {tmp_path / 'nope.yaml'}}}")
    )
    assert "nope.yaml does not exist" in _validate(cli, tmp_path, space).err
    refused(cli(["validate", "--strict", space]), names=[f"{space}: study.evaluator.recipe: ", "nope.yaml does not exist"],
            code=2)  # fmt: skip


def test_distill_evaluator_recipe_mistakes_name_the_recipe(tmp_path: Path, cli) -> None:
    recipe = _write(tmp_path / "r.yaml", "teacher: {kind: self, checkpoint: f.pt}\ndata: {train: a.tsv}\n"
                                         "optimizer: {lr: .nan}\n")  # fmt: skip
    space = _write(tmp_path / "s.yaml", SPACE.replace("EVALUATOR", f"{{kind: distill, recipe: {recipe}}}"))
    refused(_validate(cli, tmp_path, space), names=[f"{recipe}: optimizer.lr: ", f"(the recipe of {space}: study.evaluator)"],
            code=2)  # fmt: skip


def test_distill_evaluator_recipe_files_and_held_out_manifest(tmp_path: Path, cli) -> None:
    (tmp_path / "a.tsv").touch()
    recipe = _write(tmp_path / "r.yaml", "teacher: {kind: self, checkpoint: f.pt}\ndata: {train: a.tsv}\n")
    space = _write(tmp_path / "s.yaml", SPACE.replace("EVALUATOR", f"{{kind: distill, recipe: {recipe}, steps: 2}}"))
    refused(_validate(cli, tmp_path, space), names=[f"{recipe}: teacher.checkpoint: ", "f.pt does not exist",
                                                    f"{recipe}: data.valid: the distill evaluator needs"], code=2)  # fmt: skip


def test_study_file_is_read_as_a_study(tmp_path: Path, cli) -> None:
    # planner search SPACE --study-file FILE: the study keys at the top level
    study = _write(tmp_path / "study.yaml", "name: apart\nobjectives: [{metric: params}]\nn_trials: 3\n")
    result = _validate(cli, tmp_path, study)
    assert result.code == 0 and result.out.startswith(f"{study}: ok (study file, study 'apart', 1 objective(s)"), (
        result.err
    )
    _write(
        study, f"name: apart\nn_trials: 3\nsamplr: tpe\nevaluator: {{kind: distill, recipe: {tmp_path / 'r.yaml'}}}\n"
    )
    refused(_validate(cli, tmp_path, study), names=[f"{study}: samplr: unknown field"], code=2)
    _write(study, f"name: apart\nn_trials: 3\nevaluator: {{kind: distill, recipe: {tmp_path / 'r.yaml'}}}\n")
    refused(
        cli(["validate", "--strict", study]), names=[f"{study}: evaluator.recipe: ", "r.yaml does not exist"], code=2
    )


def test_space_and_study_mistakes_are_reported_together(tmp_path: Path, cli) -> None:
    text = SPACE.replace("EVALUATOR", "capacity").replace("  n_trials: 2\n", "  n_trials: 2\n  samplr: tpe\n")
    space = _write(tmp_path / "s.yaml", text.replace("ffn: 128", "ffn: 128\n    fnn: 3"))
    refused(_validate(cli, tmp_path, space), names=[f"{space}: study.samplr: unknown field", "fnn"], code=2)


# -- shipped recipes ---------------------------------------------------------------------------------------

SHIPPED = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("shipped", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_recipe_passes_where_its_files_exist(tmp_path: Path, cli, shipped: Path) -> None:
    from trainers.recipe import load_recipe, recipe_files

    copy = tmp_path / "recipes" / shipped.name
    copy.parent.mkdir()
    shutil.copy(shipped, copy)
    in_place = cli(["validate", shipped])  # the checkpoints and manifests are the user's: not in the repository
    assert in_place.code == 0 and in_place.out.startswith(f"{shipped}: ok (training recipe, "), in_place.err
    for field in ("teacher.checkpoint", "data.train[0]"):
        assert f"{shipped}: {field}: " in in_place.err and "does not exist (warning" in in_place.err
    refused(cli(["validate", "--strict", shipped]), names=[f"{shipped}: teacher.checkpoint: ", f"{shipped}: data.train[0]: "],
            code=2)  # fmt: skip
    for _, path in recipe_files(load_recipe(copy)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()
    result = cli(["validate", copy])
    assert result.code == 0 and result.out.startswith(f"{copy}: ok (training recipe, "), result.err
    assert cli(["validate", "--no-files", shipped]).code == 0


def test_no_files_still_refuses_content_mistakes(tmp_path: Path, cli) -> None:
    recipe = _write(tmp_path / "r.yaml", "teacher: {kind: self, checkpoint: f.pt}\ndata: {train: a.tsv}\nsteps: -5\n")
    result = cli(["validate", "--no-files", recipe])
    refused(result, names=[f"{recipe}: steps: "], code=2)
    assert "does not exist" not in result.err
