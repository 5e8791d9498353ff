"""The ``planner`` command line on the study files, and the YAML round trip of every study file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import planner
from planner.cli import main

ROOT = Path(__file__).resolve().parent.parent
STUDY_FILES = sorted((ROOT / "studies").glob("**/*.yaml"))
STUDY_IDS = [str(p.relative_to(ROOT / "studies")) for p in STUDY_FILES]
ARMHUBERT_S = ROOT / "studies" / "recycle-and-distill" / "armhubert-s.yaml"
MALFORMED = ROOT / "tests" / "malformed"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_there_are_study_files() -> None:
    assert ARMHUBERT_S in STUDY_FILES


@pytest.mark.parametrize("path", STUDY_FILES, ids=STUDY_IDS)
def test_validate_study_file(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["validate", str(path)], capsys)
    assert code == 0, err
    assert err == ""
    assert out.startswith(f"{path}: ok ("), out


@pytest.mark.parametrize("path", STUDY_FILES, ids=STUDY_IDS)
def test_show_table_lists_every_node(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["show", str(path)], capsys)
    assert code == 0, err
    for node in planner.load(path).nodes():
        assert node.name in out


@pytest.mark.parametrize("path", STUDY_FILES, ids=STUDY_IDS)
def test_show_json(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["show", "--json", str(path)], capsys)
    assert code == 0, err
    desc = json.loads(out)
    assert {"name", "params", "nodes", "edges"} <= desc.keys()
    graph = planner.load(path)
    assert desc["name"] == graph.name
    assert desc["params"] == graph.param_count
    assert [n["name"] for n in desc["nodes"]] == [n.name for n in graph.nodes()]


def test_show_json_armhubert_s(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["show", "--json", str(ARMHUBERT_S)], capsys)
    assert code == 0, err
    desc = json.loads(out)
    assert desc["name"] == "armhubert-s"
    assert desc["params"] == 22394080
    maps = sorted((e["from"], e["to"]) for e in desc["edges"] if e["type"] == "attention_map")
    # 2by6: layers 0, 2, ..., 10 compute a map, the next layer reuses it
    assert maps == sorted((f"layers.{i}", f"layers.{i + 1}") for i in range(0, 12, 2))


def test_show_invalid_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    path = MALFORMED / "17-heads-not-divisor.yaml"
    code, out, err = _run(["show", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith(f"{path}: layers[0].heads: ")


def test_validate_many_files_reports_each(capsys: pytest.CaptureFixture[str]) -> None:
    bad = MALFORMED / "17-heads-not-divisor.yaml"
    code, out, err = _run(["validate", str(bad), str(ARMHUBERT_S)], capsys)
    assert code == 2
    assert f"{ARMHUBERT_S}: ok (" in out
    assert err.startswith(f"{bad}: ")


def test_console_script_exits_2_without_traceback() -> None:
    script = shutil.which("planner") or shutil.which("planner", path=str(Path(sys.executable).parent))
    assert script is not None, "the planner console script is not installed (pip install -e .)"
    path = MALFORMED / "17-heads-not-divisor.yaml"
    proc = subprocess.run([script, "validate", str(path.relative_to(ROOT))], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("tests/malformed/17-heads-not-divisor.yaml: layers[0].heads: the width 432")


@pytest.mark.parametrize("path", STUDY_FILES, ids=STUDY_IDS)
def test_round_trip(path: Path) -> None:
    graph = planner.load(path)
    text = planner.dumps(graph)
    again = planner.loads(text)
    assert again == graph
    assert again.param_count == graph.param_count
    assert planner.dumps(again) == text


SHIPPED_OTHER = sorted((ROOT / "searchspaces").glob("*.yaml")) + sorted((ROOT / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_OTHER, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED_OTHER])
def test_validate_reads_every_shipped_space_and_recipe(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the shipped recipes name the user's checkpoints and manifests: warnings (tests/hostile/test_validate.py)
    code, out, err = _run(["validate", str(path)], capsys)
    assert code == 0, err
    kind = "search space" if path.parent.name == "searchspaces" else "training recipe"
    if path.name.endswith("-arch.yaml"):  # recipes/demo/teacher-arch.yaml: the demo teacher's architecture
        kind = "demo-teacher"
    assert out.startswith(f"{path}: ok ({kind}, "), out


def test_validate_tells_the_kinds_apart() -> None:
    from planner.validate import file_kind

    assert file_kind({"name": "a", "width": 8, "layers": []}) == "architecture"
    assert file_kind({"name": "a", "width": {"choice": [8, 16]}, "layers": []}) == "space"
    assert file_kind({"name": "a", "width": 8, "layers": [], "study": {"name": "s"}}) == "space"
    assert file_kind({"teacher": {"kind": "self"}, "data": {}}) == "recipe"
    assert file_kind({"train": "a.tsv", "test": "b.tsv"}) == "task"
    assert file_kind([1, 2]) == "architecture"


def test_validate_space_errors_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "searchspaces" / "quickstart.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "bad-space.yaml"
    bad.write_text(text.replace("study:\n", "study:\n  samplr: tpe\n", 1), encoding="utf-8")
    code, out, err = _run(["validate", str(bad)], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"{bad}: study.samplr: unknown field"), err


def test_validate_space_whose_candidates_never_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # every width choice is odd, and 2 heads never divide it: the search would find nothing to evaluate
    space = tmp_path / "never.yaml"
    space.write_text(
        "format: 1\nname: never\ninput: {kind: waveform, sample_rate: 16000}\nwidth: {choice: [33, 35]}\n"
        "frontend:\n  - {kind: conv_extractor, conv_layers: [[16, 10, 5], [16, 8, 4]], projection: true}\n"
        "layers:\n  - {kind: transformer, repeat: 2, heads: 2, ffn: 64}\n", encoding="utf-8")  # fmt: skip
    code, out, err = _run(["validate", str(space)], capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"{space}: none of 16 sampled candidates is a valid architecture"), err
    assert "not divisible by 2 heads" in err


def test_validate_recipe_and_task_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("format: 1\nteacher: {kind: self, checkpoint: f.pt}\ndata: {train: [a.tsv]}\nstepz: 3\n",
                      encoding="utf-8")  # fmt: skip
    code, _, err = _run(["validate", str(recipe)], capsys)
    assert code == 2 and f"{recipe}: stepz: unknown field" in err, err
    task = tmp_path / "t.yaml"
    task.write_text("train: a.tsv\ntest: b.tsv\nkind: regression\n", encoding="utf-8")
    code, _, err = _run(["validate", str(task)], capsys)
    assert code == 2 and err.startswith(f"{task}: kind: "), err
    task.write_text("train: a.tsv\ntest: b.tsv\nkind: ctc\n", encoding="utf-8")
    (tmp_path / "a.tsv").touch(), (tmp_path / "b.tsv").touch()  # validate looks for the TSVs a task names
    code, out, _ = _run(["validate", str(task)], capsys)
    assert code == 0 and out == f"{task}: ok (ctc probe task)\n"
