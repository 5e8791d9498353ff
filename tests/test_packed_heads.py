"""The packed export of a task run carries its head (a classifier, a CTC alphabet): ``load_packed`` gives it
back, ``planner evaluate PACKED --wav`` and ``examples/run_packed.py`` decode WAV files with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import planner
from planner.cli import main
from planner.compress import CompressionError, TaskHead, export
from support import DATA, ROOT, recipe_text
from trainers import loads_recipe, train
from trainers.ctc import greedy_decode
from trainers.data import collate, read_audio
from trainers.evaluate import load_run_model, run_task_head

CTC = DATA / "tiny-student-ctc-int8.yaml"
# a features-input student (filterbanks, 4x subsampling), int8 weights: the example computes its fbank
FEATURES = """\
format: 1
name: fbank-student
input: {kind: features, n_mels: 16}
width: 32
frontend: [{kind: conv2d_subsampling, channels: [8, 4]}]
layers: [{kind: transformer, repeat: 2, heads: 2, ffn: 64}]
compression:
  - {layers: all, modules: [attention, ffn], weight: int8}
"""


def _task_run(tmp_path: Path, corpus: Path, arch: Path, loss: str, label) -> Path:  # noqa: ANN001
    lines = corpus.read_text().splitlines()
    labels = corpus.with_name("labels.tsv")
    labels.write_text("".join(f"{line.split(chr(9))[0]}\t{label(i)}\n" for i, line in enumerate(lines[1:])))
    body = recipe_text("x", corpus, steps="2").replace("teacher: x\n", "")
    body = body.replace("loss: {layers: {0: 1, 1: 2}, masking: {prob: 0.5, span: 5}}", f"loss: {loss}")
    body = body.replace("min_seconds: 0.1}", f"min_seconds: 0.1, labels: {labels}, valid: {corpus}}}")
    train(planner.load(arch), loads_recipe(body, base_dir=str(tmp_path)), tmp_path / "run", log=None)
    return tmp_path / "run"


def _wavs(corpus: Path) -> list[str]:
    root, *rows = corpus.read_text().splitlines()
    return [f"{root}/{row.split(chr(9))[0]}" for row in rows[:3]]


def test_classifier_packed_with_the_run_and_decoded(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fbank.yaml").write_text(FEATURES)
    run = _task_run(tmp_path, corpus, tmp_path / "fbank.yaml", "{kind: classification}", lambda i: "ab"[i % 2])
    assert main(["export", str(run), "--out", str(tmp_path / "packed")]) == 0
    assert "classification head" in capsys.readouterr().out
    packed = planner.load_packed(tmp_path / "packed")
    assert packed.task_head.kind == "classification" and packed.task_head.classes == ["a", "b"]

    graph, trained = load_run_model(run)
    head = run_task_head(run)
    wavs = _wavs(corpus)
    with torch.no_grad():
        for path in wavs:
            x, xl = collate([read_audio(path)], [path], graph.spec.input).model_input
            # exact: packed weights reload bitwise, the classifier is stored in float32 as trained
            assert torch.equal(packed.task_head.logits(packed(x, xl)), head.logits(trained(x, xl)))
    expected = [head.decode(trained(*collate([read_audio(p)], [p], graph.spec.input).model_input))[0] for p in wavs]

    assert main(["evaluate", str(tmp_path / "packed"), "--wav", *wavs]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in rows] == expected and {r["kind"] for r in rows} == {"classification"}
    # the example, in a fresh process with the worktree's code: the same classes
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "run_packed.py"), str(tmp_path / "packed"), *wavs],
                          cwd=ROOT, capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT),
                          "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert [line.split("\t") for line in done.stdout.splitlines()] == [[p, c] for p, c in zip(wavs, expected)]

    # the linear probe scores the packed model as it scores the run (the same features, bit for bit)
    root = corpus.read_text().splitlines()[0]
    rows = [f"{root}/{line}" for line in (corpus.with_name("labels.tsv")).read_text().splitlines()]
    (tmp_path / "tr.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "te.tsv").write_text("\n".join(rows[:4]) + "\n")
    (tmp_path / "task.yaml").write_text("train: tr.tsv\ntest: te.tsv\nsteps: 20\nfeatures: last\n")
    from trainers import evaluate

    on_run, on_packed = evaluate(run, tmp_path / "task.yaml"), evaluate(tmp_path / "packed", tmp_path / "task.yaml")
    assert on_packed["accuracy"] == on_run["accuracy"] and on_packed["layer_weights"] == on_run["layer_weights"]

    # the held-out best (data.valid) exports the same way, with its own classifier; a re-export keeps the head
    assert main(["export", str(run / "best"), "--out", str(tmp_path / "best")]) == 0
    assert planner.load_packed(tmp_path / "best").task_head.classes == ["a", "b"]
    manifest = export(packed, packed.graph, tmp_path / "again")
    assert manifest["task"]["kind"] == "classification" and manifest["payload_bytes"]["task"] == (2 * 32 + 2) * 4
    again = planner.load_packed(tmp_path / "again").task_head.classifier
    assert torch.equal(again.weight, packed.task_head.classifier.weight)


def test_ctc_head_packed_and_decoded(tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _task_run(tmp_path, corpus, CTC, "{kind: ctc}", lambda i: ["seven", "one two", "zero"][i % 3])
    assert main(["export", str(run), "--out", str(tmp_path / "packed")]) == 0
    assert "ctc head (0 bytes)" in capsys.readouterr().out  # the head is the architecture's: in its weights
    packed = planner.load_packed(tmp_path / "packed")
    recipe_alphabet = json.loads((run / "task.json").read_text())["alphabet"]
    assert packed.task_head.kind == "ctc" and packed.task_head.alphabet == recipe_alphabet
    wavs = _wavs(corpus)
    assert main(["evaluate", str(tmp_path / "packed"), "--wav", *wavs]) == 0
    rows = json.loads(capsys.readouterr().out)
    with torch.no_grad():
        for row, path in zip(rows, wavs):
            out = packed(read_audio(path)[None], None)
            assert row["transcript"] == greedy_decode(out.logits, out.lengths, recipe_alphabet)[0]
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "run_packed.py"), str(tmp_path / "packed"), *wavs],
                          cwd=ROOT, capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT),
                          "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert [line.split("\t", 1)[1] for line in done.stdout.splitlines()] == [r["transcript"] for r in rows]
    # an alphabet for another vocabulary does not fit the architecture's ctc head
    with pytest.raises(CompressionError, match="2 characters \\+ blank"):
        export(packed, packed.graph, tmp_path / "bad", task=TaskHead("ctc", alphabet="ab"))


def test_no_head_to_decode_is_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(CTC), "--out", str(tmp_path / "plain")]) == 0
    assert planner.load_packed(tmp_path / "plain").task_head is None
    wav = tmp_path / "x.wav"
    import soundfile as sf

    sf.write(wav, torch.zeros(4000).numpy(), 16000)
    assert main(["evaluate", str(tmp_path / "plain"), "--wav", str(wav)]) == 1
    err = capsys.readouterr().err
    assert "holds no task head" in err and "--task" in err and "Traceback" not in err
    # with a head (export's task argument: the 28 default characters + blank fit the head's vocab 29), a file
    # that is not audio is a message naming it
    from trainers.recipe import DEFAULT_ALPHABET

    graph = planner.load(CTC)
    export(planner.materialize(graph), graph, tmp_path / "head", task=TaskHead("ctc", alphabet=DEFAULT_ALPHABET))
    assert main(["evaluate", str(tmp_path / "head"), "--wav", str(tmp_path / "missing.wav")]) != 0
    err = capsys.readouterr().err
    assert "missing.wav: cannot read audio" in err and "Traceback" not in err
