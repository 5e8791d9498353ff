"""Fixtures shared by several test modules (their plain helpers are in ``support.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from support import ROOT, make_corpus, save_tiny_teacher


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


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Six tiny utterances under ``tmp_path/audio`` and their manifest (returned): :func:`support.make_corpus`."""
    return make_corpus(tmp_path)


@pytest.fixture
def ta_teacher_file(tmp_path: Path) -> Path:
    """The tiny torchaudio HuBERT saved at ``tmp_path/teacher.pt`` (returned): :func:`support.save_tiny_teacher`."""
    return save_tiny_teacher(tmp_path / "teacher.pt")
