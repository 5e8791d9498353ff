"""The malformed-architecture corpus: every file must fail ``planner validate`` with a located message.

Each ``tests/malformed/NN-short-name.yaml`` starts with ``# expect: <substring>``; validating it must exit
with code 2, print ``FILE: field.path: what is wrong (what is allowed)`` on stderr, and print no traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.cli import main

MALFORMED = Path(__file__).resolve().parent / "malformed"
CORPUS = sorted(MALFORMED.glob("*.yaml"))
EXPECT = "# expect:"

VALID = """\
format: 1
name: tiny
width: 432
frontend:
  - kind: conv_extractor
    conv_layers: [[432, 10, 5], "2 x [432, 3, 2]"]
layers:
"""


def _expected(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(EXPECT), f"{path.name}: the first line must be '{EXPECT} <message substring>'"
    expected = first[len(EXPECT) :].strip()
    assert expected, f"{path.name}: empty expectation"
    return expected


def _validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 35


def test_corpus_names_are_numbered_and_unique() -> None:
    numbers = [p.name.split("-", 1)[0] for p in CORPUS]
    assert all(n.isdigit() and len(n) == 2 for n in numbers), numbers
    assert len(set(numbers)) == len(numbers)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_malformed_file_is_reported(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = _expected(path)
    code, out, err = _validate(path, capsys)
    assert code == 2, err
    assert not out, out
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines, "nothing printed on stderr"
    for line in lines:
        assert line.startswith(f"{path}: "), line
    assert expected in err, f"expected {expected!r} in:\n{err}"


def test_two_independent_errors_are_both_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two-errors.yaml"
    path.write_text(
        VALID
        + "  - {kind: transformer, heads: 12, ffn: 816, dim_ff: 816}\n"
        + "  - {kind: transformer, heads: 0, ffn: 816}\n",
        encoding="utf-8",
    )
    code, _, err = _validate(path, capsys)
    assert code == 2
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert f"{path}: layers[0].dim_ff: unknown field" in err
    assert f"{path}: layers[1].heads: 0 must be a positive integer" in err


def test_two_graph_errors_are_both_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two-graph-errors.yaml"
    path.write_text(
        VALID + "  - {kind: transformer, heads: 5, ffn: 816}\n" + "  - {kind: transformer, heads: 7, ffn: 816}\n",
        encoding="utf-8",
    )
    code, _, err = _validate(path, capsys)
    assert code == 2
    assert f"{path}: layers[0].heads: the width 432 is not divisible by 5 heads" in err
    assert f"{path}: layers[1].heads: the width 432 is not divisible by 7 heads" in err


def test_repeated_block_reports_its_error_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "repeated.yaml"
    path.write_text(VALID + "  - {kind: transformer, repeat: 4, heads: 5, ffn: 816}\n", encoding="utf-8")
    code, _, err = _validate(path, capsys)
    assert code == 2
    assert err.count("layers[0].heads: the width 432 is not divisible by 5 heads") == 1, err


def test_missing_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.yaml"
    code, _, err = _validate(path, capsys)
    assert code == 2
    assert err.startswith(f"{path}: no such file")
    assert "Traceback" not in err
