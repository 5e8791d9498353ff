"""Recipe format 2: engines as registered kinds, one table of engine classes, and the format-1 reader.

The same settings written in either format read into the same :class:`Recipe` with the same fingerprint (the
one run.json holds), so runs written before format 2 resume, with their own recipe or with the format-2
recipe.yaml the run folder now holds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

import planner
from planner.cli import main
from planner.errors import ConfigError, FieldError
from support import DATA, FINGERPRINTS, recipe_text, ta_teacher_yaml
from trainers import load_recipe, loads_recipe, train
from trainers.engine import ENGINES, Engine
from trainers.engine_config import ENGINE_HINTS, ENGINE_KINDS, dump_engine
from trainers.recipe import (
    FORMAT_VERSION,
    DataConfig,
    DeepSpeedEngineConfig,
    Recipe,
    TeacherConfig,
    TorchEngineConfig,
    dump_recipe,
)

ROOT = Path(__file__).resolve().parents[1]
BODY = "teacher: {kind: torchaudio_hubert, checkpoint: t.pt}\ndata: {train: a.tsv}\nsteps: 9\n"


# -- the tables ---------------------------------------------------------------------------------------------


def test_engine_kinds_are_the_engines_the_trainer_builds() -> None:
    assert set(ENGINE_KINDS) == set(ENGINES)
    for kind, cls in ENGINE_KINDS.items():
        assert cls.kind == kind and dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
        assert issubclass(ENGINES[kind], Engine)


@pytest.mark.parametrize("kind", sorted(ENGINE_KINDS))
def test_each_engine_kind_round_trips_through_the_recipe(kind: str) -> None:
    cfg = ENGINE_KINDS[kind]()
    recipe = loads_recipe(f"format: 2\n{BODY}engine: {json.dumps(dump_engine(cfg))}\n")
    assert recipe.engine == cfg and type(recipe.engine) is ENGINE_KINDS[kind]
    assert loads_recipe(f"format: 2\n{BODY}engine: {kind}\n") == recipe  # the bare-name shorthand


def test_hints_name_fields_of_some_kind() -> None:
    fields = {f.name for cls in ENGINE_KINDS.values() for f in dataclasses.fields(cls)}
    assert set(ENGINE_HINTS) <= fields  # no hint for a field that no longer exists


# -- format 1 and format 2: the same recipe, the same run ---------------------------------------------------

# (format-1 engine lines, format-2 engine line, the engine config both read as)
TWINS = [
    ("", "", TorchEngineConfig()),
    ("engine: torch\n", "engine: {kind: torch}\n", TorchEngineConfig()),
    ("engine: torch\n", "engine: torch\n", TorchEngineConfig()),
    ("engine: deepspeed\n", "engine: {kind: deepspeed}\n", DeepSpeedEngineConfig()),
    ("engine: deepspeed\ndeepspeed: {zero_stage: 3}\n", "engine: {kind: deepspeed, zero_stage: 3}\n",
     DeepSpeedEngineConfig(zero_stage=3)),
    ("engine: deepspeed\ndeepspeed: {zero_stage: 2, precision: bf16}\n",
     "engine: {kind: deepspeed, zero_stage: 2, precision: bf16}\n", DeepSpeedEngineConfig(2, "bf16")),
]  # fmt: skip


@pytest.mark.parametrize(("one", "two", "engine"), TWINS)
@pytest.mark.parametrize("format_line", ["", "format: 1\n"])  # no format: is format 1
def test_both_formats_read_into_the_same_recipe_and_run(one: str, two: str, engine: object, format_line: str) -> None:
    old = loads_recipe(format_line + BODY + one, source="one.yaml")
    new = loads_recipe("format: 2\n" + BODY + two, source="two.yaml")
    assert old.engine == engine and old == new and old.fingerprint() == new.fingerprint()
    assert old.format == new.format == FORMAT_VERSION  # the reader converts; the Recipe is format 2
    assert (old.source_format, new.source_format) == (1, 2)
    # errors found later name the field where each file has it
    assert (old.engine_field("precision"), new.engine_field("precision")) == ("deepspeed.precision", "engine.precision")


def test_pinned_format_1_fingerprint_holds_for_the_format_2_twin() -> None:
    text, fingerprint = FINGERPRINTS[0]  # computed before format 2 existed (engine: deepspeed + deepspeed:)
    assert "engine: deepspeed\ndeepspeed: {zero_stage: 2, precision: bf16}\n" in text
    twin = "format: 2\n" + text.replace("engine: deepspeed\ndeepspeed: {zero_stage: 2, precision: bf16}\n",
                                        "engine: {kind: deepspeed, zero_stage: 2, precision: bf16}\n")  # fmt: skip
    assert loads_recipe(text).fingerprint() == loads_recipe(twin).fingerprint() == fingerprint
    assert dump_recipe(loads_recipe(twin))["engine"] == {"kind": "deepspeed", "zero_stage": 2, "precision": "bf16"}


def test_engine_settings_are_part_of_the_identity() -> None:
    prints = {
        loads_recipe(f"format: 2\n{BODY}engine: {e}\n").fingerprint()
        for e in ("torch", "deepspeed", "{kind: deepspeed, zero_stage: 1}", "{kind: deepspeed, precision: bf16}")
    }
    assert len(prints) == 4


@pytest.mark.parametrize("name", ["distill.yaml", "qat.yaml", "qat-ctc-distill.yaml"])
def test_shipped_recipes_are_format_2_and_their_format_1_rewrite_is_the_same_run(name: str) -> None:
    path = ROOT / "recipes" / name
    text = path.read_text(encoding="utf-8")
    assert "format: 2\n" in text and "deepspeed:" not in text
    recipe = load_recipe(path)
    data = yaml.safe_load(text)
    data["format"] = 1
    data["engine"] = recipe.engine.kind  # format 1's layout of the same settings
    old = loads_recipe(yaml.safe_dump(data), base_dir=recipe.base_dir)
    assert old == recipe and old.fingerprint() == recipe.fingerprint()


def test_planner_recipe_prints_format_2_that_loads_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = tmp_path / "one.yaml"
    one.write_text(BODY + "engine: deepspeed\ndeepspeed: {precision: bf16}\n")
    assert main(["recipe", str(one)]) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)
    assert next(iter(data)) == "format" and data["format"] == 2 and "deepspeed" not in data
    assert data["engine"] == {"kind": "deepspeed", "zero_stage": 0, "precision": "bf16"}
    two = tmp_path / "two.yaml"
    two.write_text(printed)
    assert load_recipe(two) == load_recipe(one) and load_recipe(two).fingerprint() == load_recipe(one).fingerprint()


def test_a_format_1_written_dump_still_loads() -> None:
    # what dump_recipe wrote before format 2 for a DeepSpeed recipe (a run folder's recipe.yaml of that time):
    # the engine's name, a deepspeed: section, format: 1 last
    old = dump_recipe(loads_recipe(FINGERPRINTS[0][0]))
    del old["format"]
    old["engine"], old["deepspeed"], old["format"] = "deepspeed", {"zero_stage": 2, "precision": "bf16"}, 1
    recipe = loads_recipe(yaml.safe_dump(old, sort_keys=False))
    assert recipe == loads_recipe(FINGERPRINTS[0][0]) and recipe.fingerprint() == FINGERPRINTS[0][1]


def test_a_recipe_built_in_code_with_another_format_is_refused() -> None:
    recipe = Recipe(DataConfig(train=("a.tsv",)), teacher=TeacherConfig("self", checkpoint="f.pt"), format=1)
    with pytest.raises(FieldError, match="^format: 1 is not the recipe format of a Recipe"):
        recipe.check()


# -- resume across the change --------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by the step hook to stop a run as a kill would."""


def test_a_format_1_run_resumes_with_its_recipe_and_with_the_saved_format_2_one(
    tmp_path: Path,
    corpus: Path,
    ta_teacher_file: Path,
) -> None:
    text = "format: 1\nengine: torch\n" + recipe_text(ta_teacher_yaml(ta_teacher_file), corpus, steps="4")
    one = loads_recipe(text, source=str(tmp_path / "one.yaml"), base_dir=str(tmp_path))
    run = tmp_path / "run"
    student = planner.load(DATA / "tiny-student.yaml")

    def stop(step: int, metrics: dict) -> None:
        if step == 3:
            raise _Stop

    with pytest.raises(_Stop):
        train(student, one, run, log=None, on_step=stop)
    assert json.loads((run / "run.json").read_text())["recipe_fingerprint"] == one.fingerprint()
    saved = load_recipe(run / "recipe.yaml")  # the run folder's copy: format 2, loads again
    assert yaml.safe_load((run / "recipe.yaml").read_text())["format"] == 2
    assert saved == one and saved.fingerprint() == one.fingerprint()
    resumed = train(student, saved, run, log=None)  # the format-2 copy continues the format-1 run
    assert (resumed.resumed_from, resumed.step) == (2, 4)
    again = train(student, one, run, log=None)  # and the format-1 recipe is still this run (finished)
    assert (again.resumed_from, again.step) == (4, 4)


# -- the engine's machine check names the field where the file has it ---------------------------------------


@pytest.mark.parametrize(("engine", "where"), [
    ("format: 2\nengine: {kind: deepspeed, precision: fp16}\n", "engine.precision"),
    ("engine: deepspeed\ndeepspeed: {precision: fp16}\n", "deepspeed.precision"),
])  # fmt: skip
def test_unsupported_precision_names_the_file_and_its_field(engine: str, where: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    pytest.importorskip("deepspeed")
    from deepspeed.accelerator import get_accelerator

    from trainers.engine import check_engine

    monkeypatch.setattr(type(get_accelerator()), "is_fp16_supported", lambda self: False)
    recipe = loads_recipe(engine + BODY, source="r.yaml")
    with pytest.raises(ConfigError, match=rf"^r.yaml: {where}: fp16 is not supported by DeepSpeed's"):
        check_engine(recipe)
