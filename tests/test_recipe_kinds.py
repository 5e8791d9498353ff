"""The loss and teacher kinds of a recipe: each kind's YAML fields, the flat configs the trainers read, the dump
that loads again, and fingerprints that stay what they were before the kinds held only their own fields."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from planner.errors import ConfigError, FieldError
from support import FINGERPRINTS
from trainers.recipe import (
    LOSS_KINDS,
    TEACHER_KINDS,
    LossConfig,
    TeacherConfig,
    dump_recipe,
    loads_recipe,
    recipe_error,
    recipe_errors,
)


def _fields(cls: type) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.init}


@pytest.mark.parametrize(("table", "flat"), [(LOSS_KINDS, LossConfig), (TEACHER_KINDS, TeacherConfig)])
def test_kinds_cover_the_flat_config_with_the_same_defaults(table: dict[str, type], flat: type) -> None:
    flat_fields = _fields(flat)
    union: dict[str, object] = {}
    for cls in table.values():
        for name, default in _fields(cls).items():
            union[name] = default
            if flat_fields[name] is not dataclasses.MISSING and default is not dataclasses.MISSING:
                assert default == flat_fields[name], (cls.__name__, name)
    assert set(union) == set(flat_fields) - {"kind"}


def test_kind_names_match_the_flat_literal() -> None:
    from typing import get_args, get_type_hints

    assert set(LOSS_KINDS) == set(get_args(get_type_hints(LossConfig)["kind"]))
    assert set(TEACHER_KINDS) == set(get_args(get_type_hints(TeacherConfig)["kind"]))


@pytest.mark.parametrize(("text", "fingerprint"), FINGERPRINTS)
def test_fingerprints_and_dump_round_trip(text: str, fingerprint: str) -> None:
    recipe = loads_recipe(text, base_dir="/x")
    assert recipe.fingerprint() == fingerprint
    dumped = dump_recipe(recipe)
    again = loads_recipe(yaml.safe_dump(dumped), base_dir="/x")
    assert again == recipe and again.fingerprint() == fingerprint
    # the dump holds the chosen kinds' own fields only, so it loads again
    assert set(dumped["loss"]) == {"kind", *_fields(LOSS_KINDS[recipe.loss.kind])}
    # format 2: the engine is one mapping of its kind's own fields, no deepspeed: section
    assert dumped["format"] == 2 and "deepspeed" not in dumped
    assert dumped["engine"]["kind"] == recipe.engine.kind
    assert set(dumped["engine"]) == {"kind", *_fields(type(recipe.engine))}


def test_recipe_error_names_the_file() -> None:
    recipe = loads_recipe(FINGERPRINTS[0][0], source="recipes/x.yaml")
    err = recipe_error(recipe, "teacher.checkpoint", "/nope.pt does not exist")
    assert isinstance(err, ConfigError) and str(err) == "recipes/x.yaml: teacher.checkpoint: /nope.pt does not exist"


def test_recipe_errors_name_the_file_on_recipe_fields_only() -> None:
    recipe = loads_recipe(FINGERPRINTS[0][0], source="r.yaml")
    with pytest.raises(ConfigError, match=r"^r.yaml: loss.weights: 2 weights for 3 layers$"):
        with recipe_errors(recipe):
            raise FieldError("loss.weights", "2 weights for 3 layers")
    with pytest.raises(ConfigError, match=r"^r.yaml: data.train\[0\]: empty$"):
        with recipe_errors(recipe):
            raise ConfigError([FieldError("data.train[0]", "empty")])
    # not a recipe field, or another file's error: left as it is
    with pytest.raises(FieldError, match=r"^layers\[0\].heads: odd$"):
        with recipe_errors(recipe):
            raise FieldError("layers[0].heads", "odd")
    with pytest.raises(ConfigError, match=r"^arch.yaml: loss: x$"):
        with recipe_errors(recipe):
            raise ConfigError([FieldError("loss", "x")], "arch.yaml")
