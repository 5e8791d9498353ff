"""Hostile and careless supernet inputs: recipe sections, damaged or planted supernet folders, other recipes,
damaged ``--init`` weights. Each is refused naming the file (and the field), with no traceback, and the
folder it read is unchanged byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hostile._runs import plant
from hostile.support import refused, snapshot
from planner.cli import main
from support import SUPERNET_SPACE, supernet_setup

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = supernet_setup(tmp_path_factory.mktemp("hostile-supernet"), steps=2)
    out = paths["root"] / "super"
    assert main(["supernet", "train", str(paths["space"]), "--recipe", str(paths["recipe"]), "--out", str(out)]) == 0
    return {**paths, "out": out}


def _copy(trained: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained["out"], tmp_path / "super"))


def _search(cli, trained: dict[str, Path], tmp_path: Path, folder: Path, recipe: Path | None = None):  # noqa: ANN001, ANN202
    space = tmp_path / "study.yaml"
    space.write_text(SUPERNET_SPACE.replace("BUDGET", "10000000").replace("CKPT", str(folder))
                     .replace("RECIPE", str(recipe or trained["recipe"])))  # fmt: skip
    return cli(["search", str(space), "--storage", str(tmp_path / "s.journal"), "--trials", "1"])


@pytest.mark.parametrize(
    ("section", "names"),
    [
        ("{random: -1}", ["supernet.random", "at least 0"]),
        ("{random: 2, sandwich: 3}", ["supernet.sandwich", "unknown field"]),
        ("{cover: .nan}", ["supernet.cover"]),
        ("[1, 2]", ["supernet"]),
    ],
)
def test_a_bad_supernet_section_is_refused(cli, trained: dict[str, Path], tmp_path: Path, section: str,
                                           names: list[str]) -> None:  # fmt: skip
    recipe = tmp_path / "r.yaml"
    text = (
        trained["recipe"].read_text().replace("supernet: {random: 1, cover: 8, recalibrate: 1}", f"supernet: {section}")
    )
    recipe.write_text(text)
    out = tmp_path / "o"
    refused(cli(["supernet", "train", str(trained["space"]), "--recipe", str(recipe), "--out", str(out)]),
            names=[str(recipe), *names])  # fmt: skip
    assert not out.exists()


def test_a_task_loss_with_a_supernet_section_is_refused(cli, trained: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    labels = tmp_path / "labels.tsv"
    labels.write_text("")
    text = trained["recipe"].read_text().replace("loss: {layers: proportional, masking: {prob: 0.5, span: 3}}",
                                                 "loss: {kind: classification}")  # fmt: skip
    recipe.write_text(text.replace("teacher:", "# teacher:"))
    refused(cli(["supernet", "train", str(trained["space"]), "--recipe", str(recipe), "--out", str(tmp_path / "o")]),
            names=[str(recipe), "supernet"])  # fmt: skip


@pytest.mark.parametrize("damage", ["truncated", "junk", "pickle"])
def test_damaged_or_planted_shared_tensors_are_refused(cli, trained: dict[str, Path], tmp_path: Path,
                                                       damage: str) -> None:  # fmt: skip
    folder = _copy(trained, tmp_path)
    weights = folder / "supernet.safetensors"
    marker = tmp_path / "MARKER"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:200])
    elif damage == "junk":
        weights.write_bytes(b"\x00" * 64)
    else:
        plant(weights, marker)
    before = snapshot(folder)
    refused(_search(cli, trained, tmp_path, folder), names=[str(weights)])
    assert snapshot(folder) == before and not marker.exists()


@pytest.mark.parametrize("damage", ["not json", "wrong slots", "other format"])
def test_a_damaged_supernet_description_is_refused(cli, trained: dict[str, Path], tmp_path: Path, damage: str) -> None:
    folder = _copy(trained, tmp_path)
    info_path = folder / "supernet.json"
    info = json.loads(info_path.read_text())
    if damage == "not json":
        info_path.write_text("{slots: [")
    elif damage == "wrong slots":
        key = next(iter(info["slots"]))
        info["slots"][key]["shape"] = [n + 1 for n in info["slots"][key]["shape"]]
        info_path.write_text(json.dumps(info))
    else:
        info_path.write_text(json.dumps({**info, "format": 99}))
    before = snapshot(folder)
    refused(_search(cli, trained, tmp_path, folder), names=["supernet"])
    assert snapshot(folder) == before


def test_scoring_with_another_recipe_is_refused_naming_it(cli, trained: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(trained["recipe"].read_text().replace("seed: 3", "seed: 4"))
    refused(_search(cli, trained, tmp_path, trained["out"], other), names=[str(other), "fingerprint"])


def test_an_unfinished_or_missing_supernet_folder_is_refused(cli, trained: dict[str, Path], tmp_path: Path) -> None:
    refused(
        _search(cli, trained, tmp_path, tmp_path / "nothing"),
        names=[str(tmp_path / "nothing"), "planner supernet train"],
    )


@pytest.mark.parametrize("damage", ["junk", "pickle", "missing"])
def test_damaged_init_weights_are_refused(cli, trained: dict[str, Path], tmp_path: Path, damage: str) -> None:
    arch = tmp_path / "arch.yaml"
    from planner.ir.io import dumps
    from planner.search import SpaceSampler, load_space

    arch.write_text(dumps(SpaceSampler(load_space(trained["space"]), samples=0).smallest()))
    init = tmp_path / "w.safetensors"
    marker = tmp_path / "MARKER"
    if damage == "junk":
        init.write_bytes(b"\x01" * 100)
    elif damage == "pickle":
        plant(init, marker)
    out = tmp_path / "run"
    refused(cli(["train", str(arch), "--recipe", str(trained["distill"]), "--init", str(init), "--out", str(out)]),
            names=[str(init)])  # fmt: skip
    assert not out.exists() and not marker.exists()


def test_validate_names_a_missing_supernet_folder_and_task(cli, trained: dict[str, Path], tmp_path: Path) -> None:
    space = tmp_path / "study.yaml"
    text = SUPERNET_SPACE.replace("BUDGET", "10000000").replace("CKPT", str(tmp_path / "nothing"))
    space.write_text(text.replace("recipe: RECIPE}", f"recipe: {trained['recipe']}, task: {tmp_path / 'task.yaml'}}}"))
    refused(cli(["validate", "--strict", str(space)]),
            names=["study.evaluator.checkpoint", "supernet.json", "study.evaluator.task", "task.yaml"])  # fmt: skip
    assert cli(["validate", str(space)]).code == 0  # warnings only, without --strict
