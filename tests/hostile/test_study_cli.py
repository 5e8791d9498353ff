"""Hostile and careless uses of studies: a typo in a study name, storages that do not exist, hardware that
is not there, an edited space. Each is refused with a located message, creating and changing nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.support import STUDY_SPACE, refused, snapshot


def test_pareto_of_a_typo_creates_no_database(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    refused(
        cli(["pareto", "--study", "quikstart", "--export", tmp_path / "out"]),
        names=["--study", "'quikstart'", "does not exist", "--space", "nothing was created"],
    )
    assert list(tmp_path.iterdir()) == []  # no studies/ folder, no database, no export


def test_pareto_of_a_typo_lists_the_studies_found(cli, tmp_path: Path, monkeypatch) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(STUDY_SPACE)
    monkeypatch.chdir(tmp_path)
    assert cli(["search", space]).code == 0  # studies/tiny.db beside the space
    before = snapshot(tmp_path / "studies")
    refused(cli(["pareto", "--study", "tiyn", "--export", tmp_path / "out"]), names=["'tiyn'", "found there: tiny"])
    refused(cli(["pareto", "--study", "tiyn", "--storage", f"sqlite:///{tmp_path / 'studies' / 'tiny.db'}",
                 "--export", tmp_path / "out"]), names=["'tiyn'", "its studies: tiny"])  # fmt: skip
    assert snapshot(tmp_path / "studies") == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("storage", ["sqlite:///{d}/none.db", "{d}/none.journal", "sqlite:///{d}/sub/none.db"])
def test_pareto_of_a_missing_storage_creates_nothing(cli, tmp_path: Path, storage: str) -> None:
    url = storage.format(d=tmp_path)
    refused(
        cli(["pareto", "--study", "tiny", "--storage", url, "--export", tmp_path / "out"]),
        names=["--storage", "none.", "does not exist"],
    )
    assert list(tmp_path.iterdir()) == []


STUDY_CASES = [
    ("seed: 0", "seed: 0\n  hardware: a1000", ["study.hardware", "'a1000'", "a100"]),
    ("seed: 0", "seed: 0\n  hardware: ''", ["study.hardware", "empty"]),
    ("seed: 0", "seed: 0\n  budgets: {latency_s: 0.001}", ["study.budgets.latency_s", "study.hardware"]),
    (
        "objectives: [{metric: params}]",
        "objectives: [{metric: latency_s}]",
        ["study.objectives[0].metric", "study.hardware"],
    ),
]


@pytest.mark.parametrize("old, new, names", STUDY_CASES)
def test_hardware_mistakes(cli, tmp_path: Path, old: str, new: str, names: list[str]) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(STUDY_SPACE.replace(old, new))
    refused(cli(["search", space, "--storage", tmp_path / "s.journal"]), names=[str(space), *names], code=2)
    refused(cli(["validate", space]), names=[str(space), names[0]], code=2)  # validate agrees with search
    assert not (tmp_path / "s.journal").exists()


def test_a_bad_hardware_file_is_located_in_it(cli, tmp_path: Path) -> None:
    (tmp_path / "gpu.yaml").write_text(
        "format: 1\nname: gpu\npeak_ops_per_s: {fp32: 1}\nmemory_bandwidth_bytes_per_s: -1\n"
    )
    space = tmp_path / "space.yaml"
    space.write_text(STUDY_SPACE.replace("seed: 0", "seed: 0\n  hardware: gpu.yaml"))  # relative to the space file
    refused(
        cli(["search", space, "--storage", tmp_path / "s.journal"]),
        names=[str(tmp_path / "gpu.yaml"), "memory_bandwidth_bytes_per_s", "peak_ops_per_s.tf32"],
        code=2,
    )
    assert not (tmp_path / "s.journal").exists()


def test_an_edited_space_leaves_the_study_as_it_was(cli, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(STUDY_SPACE)
    journal = tmp_path / "s.journal"
    assert cli(["search", space, "--storage", journal]).code == 0
    space.write_text(
        STUDY_SPACE.replace("width: {choice: [64, 96], name: width}", "width: {choice: [64, 96, 128], name: width}")
    )
    before = snapshot(journal)
    refused(cli(["search", space, "--storage", journal, "--trials", "4"]),
            names=[f"{space}: width: domain 'width' was one of 64, 96, is now one of 64, 96, 128", "--study NEW"],
            code=2)  # fmt: skip
    assert snapshot(journal) == before
