"""Shared test helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Runs a module's tests on one torch thread.

    The tensors in model tests are tiny: with several threads, synchronisation costs more than the work (50x
    on a busy 2-core machine), and one thread also makes the float summation order repeatable.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def kill_after_first_checkpoint(arch: Path | str, recipe: Path | str, out: Path, *, sleep: float = 0.4,
                                timeout: float = 120.0) -> int:  # fmt: skip
    """Starts ``trainers.train(arch, recipe, out)`` in a fresh process, SIGKILLs it as soon as a checkpoint is
    complete, and returns that checkpoint's step.

    Each step sleeps ``sleep`` seconds, so the kill lands a few steps in, mid-run. The child gets a
    ``MASTER_PORT`` of its own (this process's DeepSpeed group may hold the one set here) and this process's
    torch thread count: the resumed half of the run is computed here, and a CPU reduction split over another
    number of threads sums in another order, which the exact comparisons after a resume would see.
    """
    from trainers import latest_checkpoint

    script = (
        "import time, planner, trainers\n"
        f"trainers.train(planner.load({str(arch)!r}), trainers.load_recipe({str(recipe)!r}), {str(out)!r},\n"
        f"               on_step=lambda step, m: time.sleep({sleep}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MASTER_PORT"} | {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while latest_checkpoint(out) is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the training process ended by itself (exit {proc.returncode})"
    ckpt = latest_checkpoint(out)
    assert ckpt is not None, f"no checkpoint in {out} within {timeout} s"
    return int(ckpt.name.split("-")[1])
