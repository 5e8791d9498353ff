"""Shared test helpers."""

from __future__ import annotations

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
