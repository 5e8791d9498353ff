"""A job that is not one graph, through the run machinery ``trainers.run.run_job``: two tiny linear students
trained on the same batches (the shape of a supernet run: several sub-networks, one loss, one folder).

What the job layer promises any kind of run: the claim (its own files, recipe.yaml, run.json), the checks
before it, an exact resume after a stop half-way, held-out evaluation and ``best/``, and refusing a folder
that holds a run of another identity, naming the folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import planner
from planner.errors import ConfigError, FieldError
from support import DATA, recipe_text, ta_teacher_yaml
from trainers import BatchStream, RunConflictError, load_recipe, train
from trainers.data import Batch
from trainers.losses import LossResult
from trainers.recipe import Recipe
from trainers.run import Built, RunIdentity, run_job
from trainers.safeio import save_torch

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 6  # checkpoints at 2, 4, 6 (keep 2): a stop at step 3 resumes from step 2
WIDTH = 16  # samples per frame: the students map one frame of audio to the next


class _Stop(Exception):
    """Raised from ``on_step`` to stop a run half-way, as a crash would (the lock goes with the process's fd)."""


class _PairLoss:
    """Both students predict the next frame of audio from the current one, with input noise drawn from the
    global torch generator (so an exact resume needs the RNG states back); implements both optional hooks of
    :class:`trainers.run.JobLoss`."""

    def __init__(self) -> None:
        self.held: int | None = None
        self.placed: list[tuple[torch.device, tuple[int, int]]] = []

    @contextlib.contextmanager
    def held_out(self, index: int) -> Iterator[None]:
        self.held = index
        try:
            yield
        finally:
            self.held = None

    def place(self, device: torch.device, shard: tuple[int, int]) -> None:
        self.placed.append((device, shard))

    def __call__(self, module: nn.Module, batch: Batch, step: int) -> LossResult:
        wav = batch.waveforms
        frames = wav[:, : wav.shape[1] // WIDTH * WIDTH].reshape(wav.shape[0], -1, WIDTH)
        x, y = frames[:, :-1], frames[:, 1:]
        if self.held is None:
            noise = 0.05 * torch.randn(x.shape)
        else:  # the same noise at every evaluation of held-out batch i
            noise = 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(self.held))
        a, b = (F.mse_loss(module[k](x + noise), y) for k in ("a", "b"))
        return LossResult(a + b, per_layer={0: float(a.detach()), 1: float(b.detach())})


def _identity(kind: str = "test-pair-run", fingerprint: str = "pair-1") -> RunIdentity:
    return RunIdentity(kind=kind, name="pair", fingerprint=fingerprint,
                       claim_files={"pair.txt": f"a, b: Linear({WIDTH}, {WIDTH})\n"}, subject="pair",
                       command="the pair trainer", weights="pair.pt")  # fmt: skip


def _build(recipe: Recipe, manifest: Path, losses: list[_PairLoss]) -> Built:
    """The job: two students (one with dropout, whose draws a resume must reproduce), their loss, the data."""
    model = nn.ModuleDict({"a": nn.Sequential(nn.Dropout(0.2), nn.Linear(WIDTH, WIDTH)), "b": nn.Linear(WIDTH, WIDTH)})
    loss = _PairLoss()
    losses.append(loss)
    data = recipe.data
    stream = BatchStream([str(manifest)], batch_seconds=data.batch_seconds, max_seconds=data.max_seconds,
                         min_seconds=data.min_seconds, seed=recipe.seed)  # fmt: skip
    held = BatchStream([str(manifest)], batch_seconds=data.batch_seconds, max_seconds=data.max_seconds,
                       min_seconds=data.min_seconds, seed=recipe.seed + 1)  # fmt: skip
    return Built(student=model, loss=loss, model=model, stream=stream, valid=[next(held), next(held)],
                 write_weights=lambda folder: save_torch(model.state_dict(), folder / "pair.pt"))  # fmt: skip


def _curve(run: Path) -> list[dict]:
    """metrics.jsonl without the throughput (a wall-clock measure, the one field a resume cannot repeat)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "examples_per_s"} for row in rows]


@pytest.fixture
def recipe(tmp_path: Path, corpus: Path, ta_teacher_file: Path) -> Recipe:
    """A 6-step recipe file: its optimizer, schedule, logging, checkpoints and seed drive the job (its teacher
    and loss sections are a train run's and go unused here, but their files are checked before the claim)."""
    path = tmp_path / "pair-recipe.yaml"
    path.write_text(recipe_text(ta_teacher_yaml(ta_teacher_file), corpus, steps=str(STEPS),
                                checkpoint="{every: 2, keep: 2}", optimizer="{lr: 1.0e-2}"))  # fmt: skip
    return load_recipe(path)


def test_a_two_student_job_claims_resumes_exactly_and_keeps_its_folder(tmp_path: Path, corpus: Path,
                                                                      recipe: Recipe) -> None:  # fmt: skip
    losses: list[_PairLoss] = []
    ref = tmp_path / "ref"
    done = run_job(ref, _identity(), recipe, lambda: _build(recipe, corpus, losses), log=None)
    assert done.step == STEPS and done.resumed_from == 0
    assert json.loads((ref / "run.json").read_text()) == {
        "type": "test-pair-run", "format": 1, "arch": "pair", "arch_fingerprint": "pair-1",
        "recipe_fingerprint": recipe.fingerprint()}  # fmt: skip
    assert (ref / "pair.txt").read_text() == f"a, b: Linear({WIDTH}, {WIDTH})\n" and (ref / "recipe.yaml").is_file()
    assert sorted(p.name for p in (ref / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
    assert losses[0].placed == [(torch.device("cpu"), (0, 1))]
    curve = _curve(ref)
    assert [r["step"] for r in curve] == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["valid_loss"]) for r in curve)  # NaN fails
    assert curve[-1]["loss"] < curve[0]["loss"]  # it trains: lr 1e-2 on a linear map of audio frames
    best = json.loads((ref / "best" / "best.json").read_text())
    assert best["valid_loss"] == min(r["valid_loss"] for r in curve)
    final = torch.load(ref / "pair.pt", weights_only=True)
    assert set(final) == {"a.1.weight", "a.1.bias", "b.weight", "b.bias"}

    out = tmp_path / "run"

    def stop(step: int, metrics: dict) -> None:
        if step == 3:  # after the checkpoint of step 2 and the metrics row of step 3
            raise _Stop

    with pytest.raises(_Stop):
        run_job(out, _identity(), recipe, lambda: _build(recipe, corpus, losses), log=None, on_step=stop)
    again = run_job(out, _identity(), recipe, lambda: _build(recipe, corpus, losses), log=None)
    assert again.resumed_from == 2 and again.step == STEPS
    # Exact (==): the same float ops in the same order on the CPU, from step 2's weights, optimizer, scheduler,
    # RNG states (the dropout and noise draws) and data position; the held-out losses and best/ with them.
    assert _curve(out) == curve
    resumed = torch.load(out / "pair.pt", weights_only=True)
    assert all(torch.equal(resumed[k], final[k]) for k in final)
    assert json.loads((out / "best" / "best.json").read_text()) == best
    best_ref, best_out = (torch.load(r / "best" / "pair.pt", weights_only=True) for r in (ref, out))
    assert all(torch.equal(best_out[k], best_ref[k]) for k in best_ref)

    # A second identity on the folder is refused before anything is built, naming the folder; the run stays.
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    built = len(losses)
    here = re.escape(str(out))
    with pytest.raises(RunConflictError, match=f"{here}: holds a run of pair 'pair' with a different pair "):
        run_job(out, _identity(fingerprint="pair-2"), recipe, lambda: _build(recipe, corpus, losses), log=None)
    other = f"{here}: holds a 'test-pair-run' run \\(of 'pair'\\), not a "
    with pytest.raises(RunConflictError, match=other + "'other-run' one"):
        run_job(out, _identity(kind="other-run"), recipe, lambda: _build(recipe, corpus, losses), log=None)
    with pytest.raises(RunConflictError, match=other + "'planner-train-run' one"):
        train(planner.load(DATA / "tiny-student.yaml"), recipe, out, log=None)
    assert len(losses) == built and {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_job_build_error_names_the_recipe_and_leaves_no_folder(tmp_path: Path, recipe: Recipe) -> None:
    def build() -> Built:
        raise ConfigError([FieldError("data.train", "the pair job needs audio of at least 2 frames")])

    with pytest.raises(ConfigError, match=r"pair-recipe\.yaml: data\.train: the pair job needs"):
        run_job(tmp_path / "run", _identity(), recipe, build, log=None)
    assert not (tmp_path / "run").exists()  # checked before the claim: nothing to clean up


def test_claim_files_may_not_take_the_run_folders_own_names() -> None:
    for name in ("recipe.yaml", "run.json", ".lock", "best", "sub/x.yaml"):
        with pytest.raises(ValueError, match="claim_files"):
            RunIdentity("k", "n", "f", {name: ""}, "pair", "the pair trainer", "pair.pt")
