"""Hostile and careless ``planner search`` / ``pareto`` / ``sample`` arguments and storages.

Each case is refused with a located message and no traceback, and leaves every existing study, journal and
export unchanged byte for byte.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hostile.support import STUDY_SPACE, refused, snapshot


@pytest.fixture
def space(tmp_path: Path) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(STUDY_SPACE)
    return p


@pytest.fixture
def journal(cli, space: Path, tmp_path: Path) -> Path:
    """A journal study with two finished trials."""
    path = tmp_path / "study.journal"
    assert cli(["search", space, "--storage", path]).code == 0
    return path


ARGS = [
    (["--trials", "0"], ["--trials"]),
    (["--trials", "-3"], ["--trials"]),
    (["--trials", "10000000000"], ["--trials"]),
    (["--workers", "0"], ["--workers"]),
    (["--workers", "-2"], ["--workers"]),
    (["--seed", "-1"], ["--seed"]),
    (["--seed", "4294967296"], ["--seed"]),
    (["--timeout", "nan"], ["--timeout"]),
    (["--timeout", "-5"], ["--timeout"]),
    (["--study", "a/b"], ["--study"]),
]


@pytest.mark.parametrize("args, names", ARGS)
def test_bad_search_argument(cli, space: Path, tmp_path: Path, args: list[str], names: list[str]) -> None:
    store = tmp_path / "s.journal"
    refused(cli(["search", space, "--storage", store, *args]), names=names, code=2)
    assert not store.exists()


STORAGES = [
    ("not a url", ["--storage", "not a storage URL", "sqlite:///"]),
    ("nosuchdb://host/db", ["--storage", "nosuchdb"]),
    ("postgresql+nosuchdriver://u@localhost/db", ["--storage", "postgresql"]),
    ("sqlite:////proc/forbidden/x.db", ["--storage", "/proc/forbidden"]),
]


@pytest.mark.parametrize("url, names", STORAGES)
def test_bad_storage_url(cli, space: Path, url: str, names: list[str]) -> None:
    refused(cli(["search", space, "--storage", url]), names=names, code=2)


def test_unreachable_server_hides_the_password(cli, space: Path) -> None:
    # port 1 on the loopback refuses at once; without psycopg2 the refusal names the missing driver instead
    result = cli(["search", space, "--storage", "postgresql+psycopg2://user:s3cret@127.0.0.1:1/db"])
    names = ["--storage", "127.0.0.1"] if importlib.util.find_spec("psycopg2") else ["psycopg2", "pip install"]
    refused(result, names=names, code=2)
    assert "s3cret" not in result.out + result.err


@pytest.mark.skipif(importlib.util.find_spec("pymysql") is not None, reason="PyMySQL is installed here")
def test_missing_driver_is_named(cli, space: Path) -> None:
    refused(
        cli(["search", space, "--storage", "mysql+pymysql://u@localhost/db"]),
        names=["'pymysql'", "pip install PyMySQL"],
        code=2,
    )


def test_sqlite_file_that_is_not_a_database(cli, space: Path, tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_text("my notes, not a database\n" * 50)
    before = snapshot(db)
    refused(cli(["search", space, "--storage", f"sqlite:///{db}"]), names=["--storage", "notes.db"], code=2)
    assert snapshot(db) == before


def test_study_file_storage_is_located(cli, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(STUDY_SPACE.replace("seed: 0", "seed: 0\n  storage: 'nosuchdb://x'"))
    refused(cli(["search", space]), names=[f"{space}: study.storage", "nosuchdb"], code=2)


def test_torn_journal_is_refused_and_never_appended(cli, space: Path, journal: Path) -> None:
    data = journal.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(data[: last + (len(data) - last) // 2])  # cut in the middle of the last record
    before = snapshot(journal)
    result = cli(["search", space, "--storage", journal, "--trials", "4"])
    refused(result, names=[str(journal), "torn", f"planner repair-journal {journal}"], code=2)
    assert snapshot(journal) == before
    refused(
        cli(["pareto", "--study", "tiny", "--storage", journal, "--export", journal.parent / "out"]),
        names=["torn"],
        code=2,
    )
    assert snapshot(journal) == before and not (journal.parent / "out").exists()


def test_journal_broken_in_the_middle_is_refused(cli, space: Path, journal: Path) -> None:
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[1] = b'{"op_code": 0, "worker_id": \n'
    journal.write_bytes(b"".join(lines))
    before = snapshot(journal)
    refused(cli(["search", space, "--storage", journal]), names=[str(journal), "record 2", "repair-journal"], code=2)
    assert snapshot(journal) == before


def test_journal_path_is_a_folder(cli, space: Path, tmp_path: Path) -> None:
    (tmp_path / "dir.journal").mkdir()
    refused(cli(["search", space, "--storage", tmp_path / "dir.journal"]), names=["--storage", "dir.journal"], code=2)


def test_resume_with_other_directions_is_refused(cli, space: Path, journal: Path) -> None:
    other = space.with_name("other.yaml")
    other.write_text(STUDY_SPACE.replace("[{metric: params}]", "[{metric: params}, {metric: macs}]"))
    before = snapshot(journal)
    refused(cli(["search", other, "--storage", journal]), names=["study.objectives", "directions"], code=2)
    assert snapshot(journal) == before


def test_pareto_into_a_folder_of_other_files(cli, journal: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    before = snapshot(out, journal)
    for force in ([], ["--force"]):  # --force replaces only an earlier Pareto export, never other files
        refused(
            cli(["pareto", "--study", "tiny", "--storage", journal, "--export", out, *force]),
            names=[str(out), "not a Pareto export"],
        )
        assert snapshot(out, journal) == before


def test_pareto_over_an_export_needs_force(cli, journal: Path, tmp_path: Path) -> None:
    out = tmp_path / "front"
    assert cli(["pareto", "--study", "tiny", "--storage", journal, "--export", out]).code == 0
    before = snapshot(out)
    refused(cli(["pareto", "--study", "tiny", "--storage", journal, "--export", out]), names=[str(out), "--force"])
    assert snapshot(out) == before
    assert cli(["pareto", "--study", "tiny", "--storage", journal, "--export", out, "--force"]).code == 0
    assert json.loads((out / "pareto.json").read_text())["study"] == "tiny"


def test_pareto_export_onto_a_file(cli, journal: Path, tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    refused(cli(["pareto", "--study", "tiny", "--storage", journal, "--export", target]), names=[str(target), "file"])
    assert target.read_text() == "x"


def test_pareto_of_a_missing_study(cli, journal: Path, tmp_path: Path) -> None:
    before = snapshot(journal)
    refused(
        cli(["pareto", "--study", "nope", "--storage", journal, "--export", tmp_path / "o"]),
        names=["--study", "'nope'"],
    )
    assert snapshot(journal) == before


@pytest.mark.parametrize("n", ["0", "-4"])
def test_sample_count(cli, space: Path, n: str) -> None:
    refused(cli(["sample", space, "-n", n]), names=["-n"], code=2)


def test_repair_of_a_missing_journal(cli, tmp_path: Path) -> None:
    refused(cli(["repair-journal", tmp_path / "none.journal"]), names=["none.journal"], code=2)
