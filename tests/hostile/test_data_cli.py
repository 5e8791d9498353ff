"""Careless ``planner data`` commands: each is refused with the folder or option named, no traceback, and
nothing that existed before is changed."""

from __future__ import annotations

from pathlib import Path

from hostile.support import refused, snapshot


def test_demo_into_a_file_or_a_foreign_folder(tmp_path: Path, cli) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    refused(cli(["data", "demo", file, "--synthetic"]), names=[str(file), "is not a folder"], code=1)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"not audio")
    before = snapshot(tmp_path)
    refused(cli(["data", "demo", folder, "--synthetic", "--force"]), names=[str(folder), "not a demo corpus"], code=1)
    assert snapshot(tmp_path) == before  # --force replaces only an earlier demo corpus


def test_demo_options_out_of_range(tmp_path: Path, cli) -> None:
    for argv, name in ((["--words", "11"], "--words: 11"), (["--words", "1"], "--words: 1"),
                       (["--probe-steps", "0"], "--probe-steps: 0"), (["--seed", "-1"], "--seed: -1")):  # fmt: skip
        refused(cli(["data", "demo", tmp_path / "d", "--synthetic", *argv]), names=[name], code=1)
    assert not (tmp_path / "d").exists()


def test_demo_twice_needs_force(tmp_path: Path, cli) -> None:
    assert cli(["data", "demo", tmp_path / "d", "--synthetic", "--words", "2"]).code == 0
    before = snapshot(tmp_path)
    refused(cli(["data", "demo", tmp_path / "d", "--synthetic", "--words", "3"]), names=["--force"], code=1)
    assert snapshot(tmp_path) == before


def test_scan_and_report_of_nothing(tmp_path: Path, cli) -> None:
    refused(
        cli(["data", "scan", tmp_path / "gone", tmp_path / "m.tsv"]), names=[str(tmp_path / "gone"), "not a folder"]
    )
    (tmp_path / "empty").mkdir()
    refused(cli(["data", "scan", tmp_path / "empty", tmp_path / "m.tsv"]), names=["no .wav/.flac/.ogg files"])
    assert not (tmp_path / "m.tsv").exists()
    refused(
        cli(["data", "report", tmp_path / "empty"]), names=[str(tmp_path / "empty"), "examples/quickstart.sh"], code=1
    )
