"""Hostile and careless manifests, label TSVs and export folders: paths stay inside their root, every
mistake names the file and the line, and nothing is created or changed by a refused command."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import planner
from hostile._runs import STUDENT, Planted, setup_corpus
from hostile.support import refused, snapshot
from planner.compress import CompressionError, export, load_packed
from planner.errors import ConfigError
from trainers.data import read_labels, read_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(manifest: Path) -> list[str]:
    return manifest.read_text().splitlines()


# -- training manifests (planner train reads them before it claims the run folder) ----------------------

MANIFEST_CASES = [
    ("escape", lambda root: "../../outside.wav\t8000", "leaves its folder"),
    ("absolute", lambda root: "/etc/hostname\t8000", "leaves its folder"),  # under an absolute root: inside only
    ("zero-samples", lambda root: "b/u0.flac\t0", "has 0 samples"),
    ("link-out", lambda root: "link.wav\t8000", "leaves its folder"),
]


@pytest.mark.parametrize(("case", "row", "message"), MANIFEST_CASES)
def test_a_manifest_row_is_refused_naming_file_and_line(cli, tmp_path: Path, case: str, row, message: str) -> None:  # noqa: ANN001
    recipe = setup_corpus(tmp_path)
    manifest = tmp_path / "train.tsv"
    root = Path(_rows(manifest)[0])
    if case == "link-out":
        (tmp_path / "elsewhere.wav").write_bytes(b"")
        os.symlink(tmp_path / "elsewhere.wav", root / "link.wav")
    lines = _rows(manifest)
    lines.insert(2, row(root))
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    result = cli(["train", STUDENT, "--recipe", recipe, "--out", out])
    refused(result, names=[str(manifest), "line 3", message], code=2)
    assert not out.exists()


def test_a_non_utf8_manifest_names_the_line(cli, tmp_path: Path) -> None:
    recipe = setup_corpus(tmp_path)
    manifest = tmp_path / "train.tsv"
    lines = manifest.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"u", b"\xff", 1)
    manifest.write_bytes(b"\n".join(lines))
    result = cli(["train", STUDENT, "--recipe", recipe, "--out", tmp_path / "run"])
    refused(result, names=[str(manifest), "line 4", "0xff", "UTF-8"], code=2)
    assert not (tmp_path / "run").exists()


def test_an_audio_file_without_samples_is_named(cli, tmp_path: Path) -> None:
    recipe = setup_corpus(tmp_path, steps=6)  # 1 s batches: 6 steps read every file at least once
    empty = sorted((tmp_path / "audio").rglob("*.wav"))[0]
    sf.write(empty, np.zeros(0, np.float32), 16000)  # the manifest still says it has samples
    result = cli(["train", STUDENT, "--recipe", recipe, "--out", tmp_path / "run"])
    refused(result, names=[str(empty), "no audio samples"])


def test_a_relative_root_line_is_taken_against_the_manifest_folder(tmp_path: Path) -> None:
    (tmp_path / "data" / "clips").mkdir(parents=True)
    (tmp_path / "data" / "m.tsv").write_text("clips\nx.wav\t10\n")
    m = read_manifest(tmp_path / "data" / "m.tsv")
    assert m.utterances[0].path == str(tmp_path / "data" / "clips" / "x.wav")
    # an absolute row: only under an absolute root line, and inside it
    (tmp_path / "data" / "m.tsv").write_text(f"clips\n{tmp_path / 'data' / 'clips' / 'x.wav'}\t10\n")
    with pytest.raises(ConfigError, match=r"m.tsv: line 2: .* is an absolute path"):
        read_manifest(tmp_path / "data" / "m.tsv")
    (tmp_path / "data" / "m.tsv").write_text(f"{tmp_path / 'data'}\n{tmp_path / 'data' / 'clips' / 'x.wav'}\t10\n")
    assert read_manifest(tmp_path / "data" / "m.tsv").utterances[0].path == str(tmp_path / "data" / "clips" / "x.wav")


# -- label TSVs (planner evaluate reads them before the run) --------------------------------------------

TSV_CASES = [
    ("escape", "../../../etc/hostname\tyes\n", "line 1", "leaves its folder"),
    ("absolute", "a.wav\tno\n/etc/hostname\tyes\n", "line 2", "leaves its folder"),
    ("not-utf8", "a.wav\tno\nb.wav\t\xff\n", "line 2", "not UTF-8"),
]


@pytest.mark.parametrize(("case", "text", "line", "message"), TSV_CASES)
def test_a_probe_tsv_row_is_refused_naming_file_and_line(cli, tmp_path: Path, case: str, text: str, line: str,
                                                         message: str) -> None:  # fmt: skip
    tsv = tmp_path / "probe" / "train.tsv"
    tsv.parent.mkdir()
    tsv.write_bytes(text.encode("latin-1") if case == "not-utf8" else text.encode())
    (tmp_path / "probe" / "test.tsv").write_text("a.wav\tno\n")
    task = tmp_path / "probe" / "task.yaml"
    task.write_text("train: train.tsv\ntest: test.tsv\n")
    result = cli(["evaluate", tmp_path / "no-run", "--task", task])
    refused(result, names=[str(tsv), line, message], code=2)


def test_labels_resolve_inside_their_root(tmp_path: Path) -> None:
    (tmp_path / "labels.tsv").write_text("a/x.wav\tone\n")
    assert read_labels(tmp_path / "labels.tsv") == {str(tmp_path / "a" / "x.wav"): "one"}
    (tmp_path / "bad.tsv").write_text("../x.wav\tone\n")
    with pytest.raises(ConfigError, match=r"bad.tsv: line 1: .*leaves its folder"):
        read_labels(tmp_path / "bad.tsv", str(tmp_path / "a"))


# -- packed exports --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    graph = planner.load(STUDENT)
    out = tmp_path_factory.mktemp("export") / "packed"
    export(planner.materialize(graph), graph, out)
    return out


EXPORT_CASES = [
    ("architecture", "../../outside.yaml", "leaves its folder"),
    ("weights", "/etc/hostname", "is an absolute path"),
    ("architecture", 3, "is not a file name"),
]


@pytest.mark.parametrize(("key", "value", "message"), EXPORT_CASES)
def test_load_packed_never_follows_a_path_out_of_its_folder(packed: Path, tmp_path: Path, key: str, value,
                                                            message: str) -> None:  # noqa: ANN001  # fmt: skip
    folder = shutil.copytree(packed, tmp_path / "packed")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest[key] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(folder)
    with pytest.raises(CompressionError, match=message) as err:
        load_packed(folder)
    assert "manifest.json" in str(err.value) and snapshot(folder) == before


def test_a_pickle_in_place_of_the_safetensors_is_refused(packed: Path, tmp_path: Path) -> None:
    import torch

    folder = shutil.copytree(packed, tmp_path / "packed")
    marker = tmp_path / "owned"
    (folder / "weights.safetensors").unlink()
    torch.save({"x": Planted(marker)}, folder / "weights.safetensors")
    with pytest.raises(CompressionError, match="cannot read the weights as safetensors"):
        load_packed(folder)
    assert not marker.exists()


def test_export_into_a_non_empty_folder_needs_force_and_keeps_it(cli, packed: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(packed, tmp_path / "packed")
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    refused(cli(["export", STUDENT, "--out", folder]), names=[str(folder), "--force"])
    assert snapshot(folder) == before
    assert cli(["export", STUDENT, "--out", folder, "--force"]).code == 0
    # swapped whole: the new export only, nothing of the old folder mixed in, no staging folder left
    assert sorted(p.name for p in folder.iterdir()) == ["architecture.yaml", "manifest.json", "weights.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["packed"]
