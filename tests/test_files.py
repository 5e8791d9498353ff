"""planner.files: atomic writes, whole-folder swaps and confined paths."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from planner.errors import FieldError, WriteError
from planner.files import confined, recover_dir, staged_dir, write_text_atomic, writing


def test_write_text_atomic_replaces_whole_file(tmp_path: Path) -> None:
    p = tmp_path / "a" / "f.txt"
    write_text_atomic(p, "one")
    write_text_atomic(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]  # no temporary left


def test_staged_dir_swaps_whole_folder(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with staged_dir(final) as tmp:
        (tmp / "a").write_text("1")
    with staged_dir(final) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(x.name for x in final.iterdir()) == ["b"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]


def test_staged_dir_error_leaves_old_folder(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with staged_dir(final) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), staged_dir(final) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError("stop")
    assert [x.name for x in final.iterdir()] == ["a"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]


def test_recover_dir_restores_interrupted_two_rename_swap(tmp_path: Path) -> None:
    final = tmp_path / "out"
    old = tmp_path / ".out.old"
    old.mkdir()
    (old / "a").write_text("1")
    (tmp_path / ".out.new-x").mkdir()
    recover_dir(final)
    assert (final / "a").read_text() == "1"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("bad", ["../x.wav", "a/../../x.wav", "/etc/passwd"])
def test_confined_refuses_escapes(tmp_path: Path, bad: str) -> None:
    with pytest.raises(FieldError, match="line 3"):
        confined(tmp_path, bad, "line 3")


def test_confined_refuses_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    os.symlink("/etc", tmp_path / "root" / "link")
    with pytest.raises(FieldError):
        confined(tmp_path / "root", "link/passwd", "line 1")
    assert confined(tmp_path / "root", "sub/x.wav", "line 1") == (tmp_path / "root" / "sub" / "x.wav").resolve()


def test_writing_names_a_full_disk(tmp_path: Path) -> None:
    with pytest.raises(WriteError, match="disk is full"), writing(tmp_path / "x"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_published_files_and_folders_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "f.txt", "x")
        with staged_dir(tmp_path / "out") as tmp:
            (tmp / "a").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
