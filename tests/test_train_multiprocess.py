"""Data-parallel training in two processes on the CPU (gloo), started as a user starts it: ``torchrun -m
planner.cli train`` for the torch engine, the deepspeed launcher with the ``planner`` console script for
DeepSpeed (ZeRO-2 and ZeRO-3).

What a job of two must do: write one run folder (run.json, metrics steps 1..N once each, checkpoints,
student.pt that loads into the plain model); give each process its own batch (the step-1 loss is the mean of
the two batches' losses, the step-1 weights are one AdamW step on the mean of their gradients); end with equal
replicas (BiT's in-forward ``alpha`` averaged, N:M masks agree); resume after SIGKILL with the uninterrupted
curve; refuse to resume with another number of processes, and refuse another run's folder once.

Every launch costs a few seconds of interpreter start-up and imports per process on this 2-core machine;
``CUDA_VISIBLE_DEVICES`` is emptied so the jobs run on the CPU (gloo) on any machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import planner
from planner.cli import main
from support import (
    DATA,
    MIXED_STUDENT,
    ROOT,
    launch,
    launch_env,
    launch_ok,
    make_corpus,
    recipe_text,
    save_tiny_teacher,
    ta_teacher_yaml,
    two_processes,
)
from trainers import latest_checkpoint, load_recipe
from trainers.engine import TorchEngine
from trainers.run import _seed_rank
from trainers.train import build_loss, build_stream, build_student

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny-student with dropout: rank 1's random stream differs from rank 0's, so resuming must restore both
DROPOUT_STUDENT = (DATA / "tiny-student.yaml").read_text().replace("    ffn: 64\n", "    ffn: 64\n    dropout: 0.1\n")
assert "dropout: 0.1" in DROPOUT_STUDENT


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A corpus, a tiny torchaudio teacher, the students and recipes, shared by the module."""
    root = tmp_path_factory.mktemp("multiprocess")
    make_corpus(root)
    save_tiny_teacher(root / "teacher.pt")
    (root / "dropout.yaml").write_text(DROPOUT_STUDENT)
    (root / "mixed.yaml").write_text(MIXED_STUDENT)
    teacher = ta_teacher_yaml(root / "teacher.pt")
    # layer 1 alone: layer 0's projection head gets no gradient (and must keep grad None, as in one process)
    (root / "average.yaml").write_text(recipe_text(teacher, root / "train.tsv", steps="2", checkpoint="{every: 1, keep: 2}",
                                                   loss="{layers: {1: 2}, masking: {prob: 0.5, span: 5}}"))  # fmt: skip
    (root / "torch.yaml").write_text(recipe_text(teacher, root / "train.tsv", steps="6"))
    zero = (
        recipe_text(teacher, root / "train.tsv", steps="4", compression="{schedule: few_shot, steps: 2}")
        + "engine: deepspeed\n"
    )
    (root / "zero2.yaml").write_text(zero + "deepspeed: {zero_stage: 2}\n")
    (root / "zero3.yaml").write_text(zero + "deepspeed: {zero_stage: 3}\n")
    return root


def _kill_after_first_checkpoint(cmd: list[str], out: Path, timeout: float = 240) -> int:
    """Starts the job, SIGKILLs the launcher and every process under it as soon as a checkpoint is complete,
    and returns that checkpoint's step.

    Killing the launcher's process group is not enough: torchrun starts its workers in sessions of their own,
    and they train on to the end when only the launcher dies.
    """
    import psutil

    proc = subprocess.Popen(cmd, cwd=ROOT, env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while latest_checkpoint(out) is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        os.killpg(proc.pid, signal.SIGKILL)
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        proc.wait()
        psutil.wait_procs(family, timeout=10)
    assert proc.returncode == -signal.SIGKILL, f"the job ended by itself (exit {proc.returncode})"
    ckpt = latest_checkpoint(out)
    assert ckpt is not None, f"no checkpoint in {out} within {timeout} s"
    return int(ckpt.name.split("-")[1])


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in _rows(run)]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _one_process_of_two(arch: Path, recipe_file: Path, rank: int) -> tuple[float, dict[str, torch.Tensor | None], int]:
    """What process ``rank`` of a job of two computes at step 1, computed here in one process: its loss, its
    gradients and its batch's size (the same builders, seeds, batch and masks as ``train``)."""
    recipe, graph = load_recipe(recipe_file), planner.load(arch)
    random.seed(recipe.seed)
    np.random.seed(recipe.seed % 2**32)
    torch.manual_seed(recipe.seed)
    student = build_student(graph, recipe)
    loss_obj, model = build_loss(graph, recipe, student)
    stream = build_stream(graph, recipe)
    if rank > 0:
        _seed_rank(recipe.seed, rank)
    loss_obj.shard = (rank, 2)
    batch = stream.take(rank, 2)
    model.train()
    res = loss_obj(model, batch, 0)
    res.total.backward()
    return float(res.total.detach()), {n: p.grad for n, p in model.named_parameters()}, batch.size


def test_torch_engine_two_processes_average_two_batches(work: Path) -> None:
    run = work / "average"
    out = launch_ok(
        two_processes("torchrun", str(work / "dropout.yaml"), "--recipe", str(work / "average.yaml"), "--out", str(run))
    )
    assert out.count("trained to step 2 (started at 0, 2 processes)") == 1, out[-3000:]  # rank 0 alone reports
    assert json.loads((run / "run.json").read_text())["type"] == "planner-train-run"
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2]
    loss0, grads0, size0 = _one_process_of_two(work / "dropout.yaml", work / "average.yaml", 0)
    loss1, grads1, size1 = _one_process_of_two(work / "dropout.yaml", work / "average.yaml", 1)
    assert loss0 != loss1  # two different batches (and masks, and dropout draws)
    # Exact: each process's forward is this one (same weights, batch, masks, random stream); the logged loss is
    # their float64 mean, and the step's batch is both batches.
    assert rows[0]["loss"] == (loss0 + loss1) / 2 and rows[0]["batch"] == size0 + size1
    # The step-1 weights are one AdamW step on the mean gradient, exactly: the engine sums the two gradients
    # (a sum of two is the same in either order) and halves the sum (exact in binary floating point).
    graph, recipe = planner.load(work / "dropout.yaml"), load_recipe(work / "average.yaml")
    torch.manual_seed(recipe.seed)
    engine = TorchEngine(build_student(graph, recipe), recipe)
    mean = {n: None if g is None else (g + grads1[n]) / 2 for n, g in grads0.items()}
    assert any(g is None for g in mean.values())  # the unused head: AdamW leaves it alone (no weight decay)
    params = dict(engine.module.named_parameters())
    # the gradient of sum(p * g) with respect to p is g itself, bit for bit
    engine.step(lambda m: sum((params[n] * g).sum() for n, g in mean.items() if g is not None))
    saved = torch.load(run / "checkpoints" / "step-00000001" / "engine.pt", weights_only=True)["model"]
    assert saved.keys() == engine.module.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in engine.module.state_dict().items())
    planner.materialize(graph).load_state_dict(torch.load(run / "student.pt", weights_only=True))


def test_torch_engine_sigkill_and_resume_and_other_world_sizes(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    arch, recipe = str(work / "dropout.yaml"), str(work / "torch.yaml")
    reference, killed = work / "torch-reference", work / "torch-killed"
    launch_ok(two_processes("torchrun", arch, "--recipe", recipe, "--out", str(reference)))
    step = _kill_after_first_checkpoint(two_processes("torchrun", arch, recipe, str(killed), "0.4", job=True), killed)
    assert step < 6
    out = launch_ok(two_processes("torchrun", arch, "--recipe", recipe, "--out", str(killed)))
    assert f"started at {step}, 2 processes" in out
    # Exact: both processes restore the weights, optimizer, data position and their own random states
    # (dropout draws differ between them), and the same float ops run in the same order.
    assert [r["step"] for r in _rows(killed)] == list(range(1, 7))
    assert _losses(killed) == _losses(reference)
    # One process cannot continue a run two processes wrote; nothing in the folder changes.
    before = _digest(killed)
    monkeypatch.setenv("LOCAL_RANK", "0")
    code = main(["--local_rank=0", "train", arch, "--recipe", recipe, "--out", str(killed)])  # the launcher's form
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err, err
    assert f"{killed}: step-00000006 was written by a job of 2 process(es) and this job has 1" in err, err
    assert _digest(killed) == before
    # A job of two refuses a folder holding another run: every process stops, the message is printed once.
    other = work / "other.yaml"
    other.write_text((work / "torch.yaml").read_text().replace("steps: 6", "steps: 7"))
    before = _digest(reference)
    result = launch(two_processes("torchrun", arch, "--recipe", str(other), "--out", str(reference)))
    assert result.returncode != 0 and result.stdout.count("with a different recipe") == 1, result.stdout[-3000:]
    assert _digest(reference) == before


def _mixed_step1_loss(work: Path, recipe: str) -> float:
    return sum(_one_process_of_two(work / "mixed.yaml", work / recipe, rank)[0] for rank in (0, 1)) / 2


@pytest.fixture(scope="module")
def zero2_reference(work: Path) -> Path:
    """An uninterrupted ZeRO-2 job of two on the compressed student (int4 + 2:4 with few-shot masks, int8 and
    BiT W1A1 inputs, BiT weights), with each process's final model in rank-R.pt."""
    pytest.importorskip("deepspeed")
    run = work / "zero2-reference"
    launch_ok(two_processes("deepspeed", str(work / "mixed.yaml"), str(work / "zero2.yaml"), str(run), "0", job=True))
    return run


def test_deepspeed_zero2_two_processes_agree_and_resume(work: Path, zero2_reference: Path) -> None:
    arch, recipe = str(work / "mixed.yaml"), str(work / "zero2.yaml")
    reference, killed = zero2_reference, work / "zero2-killed"
    assert [r["step"] for r in _rows(reference)] == [1, 2, 3, 4]
    # Exact, as for the torch engine: each process's forward at step 1 is the plain model's (fp32 ZeRO-2).
    assert _losses(reference)[0] == _mixed_step1_loss(work, "zero2.yaml")
    ranks = [torch.load(reference / f"rank-{r}.pt", weights_only=True) for r in (0, 1)]
    student = torch.load(reference / "student.pt", weights_only=True)
    params = {n for n, _ in planner.materialize(planner.load(arch)).named_parameters()}
    masks = [k for k in student if k.endswith(("sparsifier.mask", "sparsifier.ready"))]
    alphas = [k for k in student if k.endswith(".alpha")]
    assert masks and alphas
    # Equal replicas: every parameter (BiT's alpha, set from each process's first batch, averaged) and the N:M
    # masks (computed from equal weights). Quantizer observers follow each process's batch until rank 0's are
    # broadcast at the next step, so they are not compared.
    for k in sorted(params | set(masks)):
        assert torch.equal(ranks[0][k].reshape(student[k].shape), ranks[1][k].reshape(student[k].shape)), k
    planner.materialize(planner.load(arch)).load_state_dict(student)
    step = _kill_after_first_checkpoint(two_processes("deepspeed", arch, recipe, str(killed), "0.5", job=True), killed)
    assert step < 4
    out = launch_ok(two_processes("deepspeed", arch, "--recipe", recipe, "--out", str(killed)))  # the README's command
    assert f"started at {step}, 2 processes" in out
    # Exact: DeepSpeed restores each process's optimizer partition, the fp32 master weights and the buffers.
    assert _losses(killed) == _losses(reference)
    resumed = torch.load(killed / "student.pt", weights_only=True)
    assert all(torch.equal(resumed[k], v) for k, v in student.items())


def test_deepspeed_zero3_two_processes(work: Path, zero2_reference: Path) -> None:
    reference, run = zero2_reference, work / "zero3"
    launch_ok(
        two_processes("deepspeed", str(work / "mixed.yaml"), "--recipe", str(work / "zero3.yaml"), "--out", str(run))
    )
    losses = _losses(run)
    assert losses[0] == _mixed_step1_loss(work, "zero3.yaml")
    # ZeRO-3 gathers each module's weights and reduces gradients its own way: ulp-level apart from ZeRO-2
    # (measured 9e-8 relative; the same in one process, tests/test_deepspeed_zero.py). BiT's alpha, a
    # 1-element parameter split over two processes, reaches its master copy in the process that holds it.
    assert losses == pytest.approx(_losses(reference), rel=1e-5, abs=0)
    planner.materialize(planner.load(work / "mixed.yaml")).load_state_dict(
        torch.load(run / "student.pt", weights_only=True)
    )
