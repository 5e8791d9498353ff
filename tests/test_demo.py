"""The demo corpus (``planner data demo``) and examples/quickstart.sh, reduced in the default suite, whole when slow.

The reduced path runs the real script on a copy of the files it reads (recipes/demo, searchspaces/demo.yaml)
with fewer steps and trials, on espeak-ng speech where installed and on ``--synthetic`` tones elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from planner.errors import WriteError
from trainers.demo import DemoError, build_demo_corpus, quickstart_rows
from trainers.evaluate import load_task

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "quickstart.sh"
HAVE_ESPEAK = shutil.which("espeak-ng") is not None


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- the corpus --------------------------------------------------------------------------------------------


def test_synthetic_corpus_is_what_the_trainers_read_and_fixed_by_its_seed(tmp_path: Path) -> None:
    from trainers.data import read_labels, read_manifest

    a = build_demo_corpus(tmp_path / "a", synthetic=True, words=3, seed=4)
    b = build_demo_corpus(tmp_path / "b", synthetic=True, words=3, seed=4)
    c = build_demo_corpus(tmp_path / "c", synthetic=True, words=3, seed=5)
    same = {k: v for k, v in _tree(a.root).items() if not k.endswith(".tsv")}  # manifests name their own folder
    assert same == {k: v for k, v in _tree(b.root).items() if not k.endswith(".tsv")}
    assert _tree(a.root)["audio/train/en+m1-130-zero.wav"] != _tree(c.root)["audio/train/en+m1-130-zero.wav"]
    info = json.loads((a.root / "corpus.json").read_text())
    assert info["kind"] == "synthetic" and info["classes"] == ["zero", "one", "two"]
    assert info["utterances"] == {"train": 6 * 2 * 3, "held": 2 * 2 * 3}  # voices x speeds x words
    train = read_manifest(a.root / "train.tsv")
    assert train.root == str(a.root / "audio" / "train") and all(os.path.isfile(u.path) for u in train.utterances)
    labels = read_labels(a.root / "labels.tsv", train.root)
    assert sorted(labels) == sorted(u.path for u in train.utterances)
    task, base = load_task(a.root / "task-held.yaml")
    held = read_labels(base / task.test, str(base))
    assert len(held) == 12 and all(os.path.isfile(p) for p in held) and not (a.root / "task-real.yaml").exists()


def test_corpus_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no espeak-ng anywhere
    with pytest.raises(DemoError, match=r"apt-get install -y espeak-ng\), or pass --synthetic"):
        build_demo_corpus(tmp_path / "x")
    with pytest.raises(DemoError, match="--words: 1 is not a word count"):
        build_demo_corpus(tmp_path / "x", synthetic=True, words=1)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(WriteError, match="not a demo corpus"):
        build_demo_corpus(tmp_path / "mine", synthetic=True, words=2)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    build_demo_corpus(tmp_path / "d", synthetic=True, words=2)
    with pytest.raises(WriteError, match="--force"):
        build_demo_corpus(tmp_path / "d", synthetic=True, words=2)
    assert build_demo_corpus(tmp_path / "d", synthetic=True, words=3, force=True).info["utterances"]["held"] == 12


def test_cli_refuses_without_espeak_naming_the_package(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(ROOT)}
    if shutil.which("espeak-ng", path=env["PATH"]):
        pytest.skip("espeak-ng sits beside python here")
    r = subprocess.run([sys.executable, "-m", "planner.cli", "data", "demo", str(tmp_path / "d")], env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode != 0 and "espeak-ng" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed (apt-get install -y espeak-ng)")
def test_espeak_corpus_has_real_speakers_where_installed(tmp_path: Path) -> None:
    from trainers.demo import real_digits

    c = build_demo_corpus(tmp_path / "d", words=2)
    assert c.info["kind"] == "espeak" and c.info["utterances"]["train"] == 6 * 2 * 2
    real = real_digits(("zero", "one"))
    assert c.info["voices"]["real"] == sorted(real)
    assert (c.root / "task-real.yaml").is_file() == bool(real)
    again = build_demo_corpus(tmp_path / "e", words=2)  # espeak-ng is deterministic: the seed fixes every file
    assert _tree(c.root / "audio") == _tree(again.root / "audio")


# -- the quickstart ----------------------------------------------------------------------------------------


def _reduced_copy(root: Path, *, steps: int, trials: int, proxy_steps: int) -> Path:
    """The files examples/quickstart.sh reads, copied under ``root`` with fewer steps and trials."""
    for rel in ("examples/quickstart.sh", "searchspaces/demo.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    shutil.copytree(ROOT / "recipes" / "demo", root / "recipes" / "demo")
    for name in ("teacher", "distill", "qat"):
        path = root / "recipes" / "demo" / f"{name}.yaml"
        data = yaml.safe_load(path.read_text())
        data["steps"] = steps
        data["checkpoint"] = {"every": steps, "keep": 1}
        data["logging"] = {"every": max(1, steps // 2)}
        if "compression" in data:
            data["compression"]["steps"] = max(1, steps // 4)
        path.write_text(yaml.safe_dump(data))
    space = root / "searchspaces" / "demo.yaml"
    data = yaml.safe_load(space.read_text())
    data["study"]["n_trials"] = trials
    data["study"]["sampler"]["n_startup_trials"] = trials
    data["study"]["evaluator"].update(steps=proxy_steps, eval_every=proxy_steps, eval_batches=1)
    space.write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def _run_script(root: Path, synthetic: bool, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLANNER": f"{sys.executable} -m planner.cli",
           "DEMO_FLAGS": "--synthetic --words 4 --probe-steps 50" if synthetic else ""}  # fmt: skip
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` is this one
    return subprocess.run(["bash", str(root / "examples" / "quickstart.sh")], env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_quickstart_reduced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """examples/quickstart.sh's commands in this process (one import of torch, not one per command), reduced."""

    from planner.cli import main

    root = _reduced_copy(tmp_path, steps=4, trials=2, proxy_steps=2)
    monkeypatch.chdir(root)
    out = Path("out/demo")
    (out / "eval").mkdir(parents=True)
    flags = [] if HAVE_ESPEAK else ["--synthetic"]

    def step(*argv: str, save: str | None = None) -> None:
        capsys.readouterr()
        assert main(list(argv)) == 0, capsys.readouterr().err
        if save is not None:
            (out / "eval" / f"{save}.json").write_text(capsys.readouterr().out)

    step("data", "demo", str(out / "data"), *flags, "--words", "2", "--probe-steps", "20")
    step(
        "train",
        "recipes/demo/teacher-arch.yaml",
        "--recipe",
        "recipes/demo/teacher.yaml",
        "--out",
        str(out / "runs/teacher"),
    )
    step("search", "searchspaces/demo.yaml", "--storage", str(out / "search.journal"), "--export", str(out / "front"))
    front = json.loads((out / "front" / "pareto.json").read_text())
    best = min(front["points"], key=lambda p: p["objectives"]["distill_loss"])
    shutil.copy(out / "front" / best["architecture"], out / "student.yaml")
    step(
        "train", str(out / "student.yaml"), "--recipe", "recipes/demo/distill.yaml", "--out", str(out / "runs/distill")
    )
    compressed = out / "student-int4-2of4.yaml"
    compressed.write_text((out / "student.yaml").read_text() + Path("recipes/demo/int4-2of4.section").read_text())
    step("train", str(compressed), "--recipe", "recipes/demo/qat.yaml", "--out", str(out / "runs/qat"))
    step("evaluate", str(out / "runs/qat"), "--task", str(out / "data/task-held.yaml"), save="qat-held")
    step("export", str(out / "runs/qat"), "--out", str(out / "packed"))  # the run, packed with its arch.yaml
    step("evaluate", str(out / "packed"), "--task", str(out / "data/task-held.yaml"), save="packed-held")
    step("data", "report", str(out))
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["stage", "metric", "value", "chance", "seconds"]
    assert "packed model: the same probe results as the trained QAT model" in printed
    stages = {s for s, *_ in quickstart_rows(out)}
    assert {"data", "teacher", "search", "distill", "qat", "probe qat-held", "probe packed-held", "export"} <= stages
    probe = json.loads((out / "eval" / "qat-held.json").read_text())
    assert probe["chance"] == 0.5 and probe["n_test"] == 2 * 2 * 2  # 2 words, 2 held-out voices x 2 speeds
    # the packed model's probe equals the trained model's exactly: the same eval-mode outputs (load_packed
    # pins the stored scales), the same probe seed, the same float operations: ==
    packed = json.loads((out / "eval" / "packed-held.json").read_text())
    assert packed.pop("run") == "out/demo/packed" and probe.pop("run") == "out/demo/runs/qat"
    assert packed == probe


@pytest.mark.slow
def test_quickstart_script_reduced(tmp_path: Path) -> None:
    """The script itself (shell, one process per command) on synthetic tones with few steps."""
    root = _reduced_copy(tmp_path, steps=8, trials=2, proxy_steps=2)
    r = _run_script(root, synthetic=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()  # every command's output, the table last
    header = [i for i, line in enumerate(lines) if line.split() == ["stage", "metric", "value", "chance", "seconds"]]
    assert len(header) == 1 and lines[-2].startswith("total "), r.stdout
    assert "packed model: the same probe results as the trained QAT model" in r.stdout
    rows = quickstart_rows(root / "out" / "demo")
    assert {s for s, *_ in rows} >= {"data", "teacher", "search", "distill", "qat", "probe teacher-held",
                                     "probe qat-held", "probe packed-held", "export"}  # fmt: skip
    assert all(c == 0.25 for s, _, _, c, _ in rows if s.startswith("probe "))  # 4 balanced words: chance 1/4


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed (apt-get install -y espeak-ng)")
def test_quickstart_full(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "recipes" / "demo", tmp_path / "recipes" / "demo")
    for rel in ("examples/quickstart.sh", "searchspaces/demo.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    r = _run_script(tmp_path, synthetic=False, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {s: (v, c) for s, _, v, c, _ in quickstart_rows(tmp_path / "out" / "demo") if s.startswith("probe ")}
    # a probe twice the chance level on voices never trained on: far from a coin (40 held-out utterances)
    assert rows["probe teacher-held"][0] > 2 * rows["probe teacher-held"][1]
    assert rows["probe qat-held"][0] > 2 * rows["probe qat-held"][1]


def test_data_scan_writes_the_manifest_a_recipe_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from planner.cli import main
    from trainers.data import read_manifest

    c = build_demo_corpus(tmp_path / "d", synthetic=True, words=2)
    assert main(["data", "scan", str(c.root / "audio" / "held"), str(tmp_path / "held.tsv")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'held.tsv'}: 8 files under {c.root / 'audio' / 'held'}\n"
    scanned, built = read_manifest(tmp_path / "held.tsv"), read_manifest(c.root / "valid.tsv")
    assert scanned.root == built.root and set(scanned.utterances) == set(built.utterances)  # scan sorts by name
