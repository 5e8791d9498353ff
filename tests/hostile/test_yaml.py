"""Hostile YAML in every file kind: repeated keys, alias bombs, cyclic aliases, deep nesting, tags.

Each case is refused with exit 2, no traceback, the file and the line named; the alias bombs and deep
documents are refused while the file is composed, before any walk expands them (:mod:`planner._yaml`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hostile.support import ARCH, SPACE, bomb, nested, refused
from planner.config import MAX_DEPTH, MAX_NODES, parse_yaml
from planner.errors import ConfigError

pytestmark = pytest.mark.usefixtures("hang_guard")  # each case must be refused within GUARD_S seconds

TASK = "format: 1\nkind: classification\ntrain: train.tsv\ntest: test.tsv\n"
HARDWARE = (Path(__file__).resolve().parents[2] / "planner/cost/catalog/a100.yaml").read_text()
RECIPE = (Path(__file__).resolve().parents[2] / "recipes/distill.yaml").read_text()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- repeated keys, one per file kind ---------------------------------------------------------------------


def test_repeated_key_in_an_architecture_names_both_lines(tmp_path, cli) -> None:
    path = _write(tmp_path, "arch.yaml", ARCH.replace("width: 32\n", "width: 32\nwidth: 64\n"))
    refused(cli(["validate", path]), names=[str(path), "line 5", "key 'width' repeats line 4"], code=2)


def test_repeated_key_inside_a_flow_mapping_of_a_layer(tmp_path, cli) -> None:
    path = _write(tmp_path, "arch.yaml", ARCH.replace("heads: 2, ffn: 64", "heads: 2, ffn: 64, heads: 4"))
    refused(cli(["cost", path]), names=[str(path), "line 11", "key 'heads' repeats line 11"], code=2)


def test_every_repeated_key_of_a_file_is_reported_at_once(tmp_path, cli) -> None:
    text = ARCH.replace("name: tiny\n", "name: tiny\nname: other\n").replace("width: 32\n", "width: 32\nwidth: 8\n")
    path = _write(tmp_path, "arch.yaml", text)
    refused(cli(["validate", path]), names=["line 3: key 'name' repeats line 2", "line 6: key 'width' repeats line 5"])


def test_repeated_key_in_a_space(tmp_path, cli) -> None:
    path = _write(tmp_path, "space.yaml", SPACE.replace("name: width}", "name: width, name: w}"))
    refused(cli(["sample", path, "-n", "1"]), names=[str(path), "line 4", "key 'name' repeats line 4"], code=2)


def test_repeated_key_in_a_study_file(tmp_path, cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a search that got further would create studies/ here
    space = _write(tmp_path, "space.yaml", SPACE)
    study = _write(tmp_path, "study.yaml", "name: s\nobjectives: [{metric: params, direction: minimize}]\n"
                                           "n_trials: 2\nn_trials: 3\n")  # fmt: skip
    refused(cli(["search", space, "--study-file", study]), names=[str(study), "line 4", "'n_trials' repeats line 3"])
    assert not (tmp_path / "studies").exists()


def test_repeated_key_in_a_recipe(tmp_path, cli) -> None:
    path = _write(tmp_path, "recipe.yaml", RECIPE.replace("steps: 200000\n", "steps: 200000\nsteps: 10\n"))
    refused(cli(["recipe", path]), names=[str(path), "key 'steps' repeats line"], code=2)


def test_repeated_key_in_a_task(tmp_path, cli) -> None:
    path = _write(tmp_path, "task.yaml", TASK + "steps: 5\nsteps: 6\n")
    refused(cli(["validate", path]), names=[str(path), "line 6", "key 'steps' repeats line 5"], code=2)


def test_repeated_key_in_a_hardware_file(tmp_path, cli) -> None:
    arch = _write(tmp_path, "arch.yaml", ARCH)
    hw = _write(tmp_path, "hw.yaml", HARDWARE.replace("int8: 624.0e12", "int8: 624.0e12\n  int8: 1.0"))
    refused(cli(["cost", arch, "--hardware", hw]), names=[str(hw), "key 'int8' repeats line"], code=2)


def test_keys_equal_as_values_repeat_too(tmp_path, cli) -> None:
    # 1 and 1.0 are one key once parsed: the second silently replaced the first before
    path = _write(tmp_path, "arch.yaml", ARCH.replace("width: 32\n", "width: 32\nreuse: {1: a, 1.0: b}\n"))
    refused(cli(["validate", path]), names=[str(path), "line 5", "key 1.0 repeats line 5"])


def test_a_merge_key_may_be_overridden() -> None:
    # not a repetition: `<<` brings defaults that the mapping's own keys override (a legitimate YAML idiom)
    data = parse_yaml("base: &b {heads: 2, ffn: 64}\nlayer: {<<: *b, ffn: 128}\n", "m.yaml")
    assert data["layer"] == {"heads": 2, "ffn": 128}


# -- alias bombs and cyclic aliases -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["architecture", "space", "task", "recipe"])
def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path, cli, kind) -> None:
    text = bomb()
    assert len(text) < 1024  # the 1 kB file; it expands to 9**12 values
    head = {"architecture": ARCH, "space": SPACE, "task": TASK, "recipe": RECIPE}[kind]
    # the bomb under a key the loader then has to read (name; a task's train; a recipe's data.train)
    body = re.sub(r"^name: .*$", "name: *b11", head, count=1, flags=re.M)
    body = body.replace("train: train.tsv", "train: *b11").replace("train: [../manifests/train-960.tsv]", "train: *b11")
    assert "*b11" in body
    path = _write(tmp_path, f"{kind}.yaml", text + body)
    argv = ["recipe", path] if kind == "recipe" else ["validate", path]
    result = cli(argv)
    refused(result, names=[str(path), "line", f"more than {MAX_NODES:,} values"], code=2)


def test_a_few_anchors_are_fine(tmp_path, cli) -> None:
    text = ARCH.replace(
        "  - {kind: transformer, repeat: 2, heads: 2, ffn: 64}\n",
        "  - &layer {kind: transformer, heads: 2, ffn: 64}\n  - *layer\n  - *layer\n",
    )
    path = _write(tmp_path, "arch.yaml", text)
    result = cli(["validate", path])
    assert result.code == 0, result.err
    assert "ok (tiny" in result.out


def test_a_cyclic_alias_is_refused(tmp_path, cli) -> None:
    path = _write(tmp_path, "space.yaml", SPACE.replace("layers:\n", "loop: &loop [1, *loop]\nlayers:\n"))
    refused(cli(["validate", path]), names=[str(path), "line 10", "alias *loop refers to a value that contains it"])


# -- deep nesting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "cost", "show", "sample"])
def test_thousands_of_levels_are_a_clean_error(tmp_path, cli, command) -> None:
    path = _write(tmp_path, "deep.yaml", ARCH.replace("name: tiny", "name: " + nested(5000)))
    argv = [command, path] + (["-n", "1"] if command == "sample" else [])
    refused(cli(argv), names=[str(path), "line 2", f"nests deeper than {MAX_DEPTH} levels"], code=2)


def test_deep_lists_in_a_hardware_file(tmp_path, cli) -> None:
    arch = _write(tmp_path, "arch.yaml", ARCH)
    hw = _write(tmp_path, "hw.yaml", "name: " + "[" * 3000 + "]" * 3000 + "\n")
    refused(cli(["cost", arch, "--hardware", hw]), names=[str(hw), "nests deeper than"], code=2)


def test_the_deepest_accepted_document_survives_every_walk(tmp_path, cli) -> None:
    # exactly at the limit, inside a space (its parser, freezer and validator all recurse per level): the top
    # mapping, frontend, its entry, MAX_DEPTH - 6 mappings, then the choice, its list and its options
    deep = nested(MAX_DEPTH - 6, "{choice: [1, 2]}")
    path = _write(tmp_path, "space.yaml", SPACE.replace("    projection: true\n", f"    projection: {deep}\n"))
    parse_yaml(path.read_text(), str(path))  # the reader accepts it ...
    refused(cli(["validate", path]), names=[str(path), "frontend[0].projection"], code=2)  # ... walks refuse it


def test_one_level_past_the_limit_is_refused() -> None:
    parse_yaml(nested(MAX_DEPTH - 1), "ok.yaml")
    with pytest.raises(ConfigError, match=f"deep.yaml: line 1: the document nests deeper than {MAX_DEPTH}"):
        parse_yaml(nested(MAX_DEPTH), "deep.yaml")


# -- tags and numbers --------------------------------------------------------------------------------------


def test_python_tags_stay_refused(tmp_path, cli) -> None:
    marker = tmp_path / "ran"
    path = _write(tmp_path, "arch.yaml", f"!!python/object/apply:os.system ['touch {marker}']\n")
    refused(cli(["validate", path]), names=[str(path), "line 1", "could not determine a constructor"], code=2)
    assert not marker.exists()


def test_an_integer_too_long_to_read(tmp_path, cli) -> None:
    path = _write(tmp_path, "arch.yaml", ARCH.replace("width: 32", "width: " + "9" * 5000))
    refused(cli(["validate", path]), names=[str(path), "line 4", "5,000 digits is too long"], code=2)
