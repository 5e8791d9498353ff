"""Hostile and careless recipe engines across the two recipe formats: each refused, naming the file and field.

Format 2 has one ``engine: {kind, ...its own fields}`` mapping; format 1 (a file without ``format:``) has the
engine's name and a ``deepspeed:`` section. Mixing the two layouts, an unknown engine kind or format, and a
field of another engine kind are refused by ``planner validate`` and ``planner recipe`` with the allowed kinds
or fields, and nothing in the folder changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostile.support import refused, snapshot

HEAD = "teacher: {kind: torchaudio_hubert, checkpoint: t.pt}\ndata: {train: [a.tsv]}\nsteps: 10\n"

# (id, the recipe's engine lines (HEAD follows), what the message must name after "FILE: ")
CASES = [
    # the two layouts mixed
    pytest.param("format: 2\nengine: {kind: deepspeed}\ndeepspeed: {zero_stage: 2}\n",
                 ["deepspeed: ", "not a section of recipe format 2", "engine: {kind: deepspeed, zero_stage: 2"],
                 id="format-2-with-deepspeed-section"),
    pytest.param("format: 2\ndeepspeed: {zero_stage: 0, precision: fp32}\n", ["deepspeed: ", "format 2"],
                 id="format-2-deepspeed-section-at-defaults"),
    pytest.param("engine: {kind: deepspeed, zero_stage: 2}\n",
                 ["engine: ", "format-2 layout", "set format: 2", "(deepspeed, torch)"], id="format-1-engine-mapping"),
    pytest.param("format: 1\nengine: {kind: torch}\n", ["engine: ", "format-2 layout"], id="explicit-format-1-mapping"),
    pytest.param("deepspeed: {zero_stage: 1}\n", ["deepspeed: ", "only allowed with engine: deepspeed"],
                 id="format-1-section-with-default-torch"),
    # unknown kinds and formats
    pytest.param("format: 2\nengine: {kind: fsdp}\n", ["engine.kind: ", "'fsdp'", "allowed: deepspeed, torch"],
                 id="unknown-engine-kind"),
    pytest.param("format: 2\nengine: Torch\n", ["engine.kind: ", "allowed: deepspeed, torch"], id="engine-kind-case"),
    pytest.param("format: 2\nengine: {zero_stage: 2}\n", ["engine.kind: ", "required", "allowed kinds: deepspeed, torch"],
                 id="engine-without-kind"),
    pytest.param("format: 2\nengine: null\n", ["engine: ", "allowed kinds: deepspeed, torch"], id="null-engine"),
    pytest.param("engine: fsdp\n", ["engine: ", "not an engine of recipe format 1", "allowed: deepspeed, torch"],
                 id="unknown-format-1-engine"),
    pytest.param("engine: [torch]\n", ["engine: ", "allowed: deepspeed, torch"], id="format-1-engine-list"),
    pytest.param("format: 3\n", ["format: ", "3 is not a recipe format", "(1, 2;"], id="unknown-format"),
    pytest.param("format: '2'\n", ["format: ", "'2' is not a recipe format"], id="format-as-string"),
    pytest.param("format: true\n", ["format: ", "True is not a recipe format"], id="format-as-boolean"),
    pytest.param("format: 2.0\n", ["format: ", "2.0 is not a recipe format"], id="format-as-float"),
    # deepspeed fields on torch, and the deepspeed kind's own fields
    pytest.param("format: 2\nengine: {kind: torch, zero_stage: 2}\n",
                 ["engine.zero_stage: ", "only allowed with kind: deepspeed", "kind torch (its fields: none)"],
                 id="zero-stage-on-torch"),
    pytest.param("format: 2\nengine: {kind: torch, precision: bf16}\n",
                 ["engine.precision: ", "only allowed with kind: deepspeed"], id="precision-on-torch"),
    pytest.param("format: 2\nengine: {kind: deepspeed, stage: 2}\n",
                 ["engine.stage: ", "not a field of training engine kind 'deepspeed' (its fields: precision, zero_stage)"],
                 id="unknown-deepspeed-field"),
    pytest.param("format: 2\nengine: {kind: deepspeed, zero_stage: 4}\n", ["engine.zero_stage: ", "0, 1, 2, 3"],
                 id="zero-stage-4"),
    pytest.param("format: 2\nengine: {kind: deepspeed, zero_stage: .nan}\n", ["engine.zero_stage: ", "0, 1, 2, 3"],
                 id="zero-stage-nan"),
    pytest.param("format: 2\nengine: {kind: deepspeed, zero_stage: true}\n", ["engine.zero_stage: ", "0, 1, 2, 3"],
                 id="zero-stage-boolean"),
    pytest.param("format: 2\nengine: {kind: deepspeed, precision: fp8}\n", ["engine.precision: ", "'fp32', 'bf16', 'fp16'"],
                 id="unknown-precision"),
    pytest.param("engine: deepspeed\ndeepspeed: {zero_stage: 5}\n", ["deepspeed.zero_stage: ", "0, 1, 2, 3"],
                 id="format-1-zero-stage-5"),
    pytest.param("engine: deepspeed\ndeepspeed: {offload: true}\n", ["deepspeed.offload: ", "allowed: precision, zero_stage"],
                 id="format-1-unknown-deepspeed-field"),
    pytest.param("engine: deepspeed\ndeepspeed: 2\n", ["deepspeed: ", "expected a mapping"], id="format-1-section-not-mapping"),
]  # fmt: skip


def _write(folder: Path, engine: str) -> Path:
    for name in ("t.pt", "a.tsv"):
        (folder / name).touch()
    path = folder / "r.yaml"
    path.write_text(engine + HEAD, encoding="utf-8")
    return path


@pytest.mark.parametrize(("engine", "names"), CASES)
@pytest.mark.parametrize("command", ["validate", "recipe"])
def test_engine_mistake_is_refused(tmp_path: Path, cli, engine: str, names: list[str], command: str) -> None:
    recipe = _write(tmp_path, engine)
    before = snapshot(tmp_path)
    result = cli([command, recipe])
    refused(result, names=[f"{recipe}: {names[0]}", *names[1:]], code=2)
    assert result.out == ""
    assert snapshot(tmp_path) == before


def test_engine_mistakes_are_reported_with_the_others(tmp_path: Path, cli) -> None:
    recipe = _write(tmp_path, "format: 2\nengine: {kind: torch, zero_stage: 1}\ndeepspeed: {zero_stage: 1}\n"
                              "optimizer: {lr: .nan}\n")  # fmt: skip
    result = cli(["validate", recipe])
    expected = ["engine.zero_stage", "deepspeed", "optimizer.lr"]
    refused(result, names=[f"{recipe}: {field}: " for field in expected], code=2)
    assert len(result.err.strip().splitlines()) == len(expected), result.err  # one line each, nothing else
