"""trainers.safeio: torch files read as data, DeepSpeed's own reads forced to weights_only=True."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from hostile._runs import plant
from trainers.safeio import NUMPY_GLOBALS, CheckpointError, read_torch, save_torch, weights_only_loads


def test_forced_weights_only_refuses_a_load_that_asks_for_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # a user's opposite switch is set aside inside
    marker = tmp_path / "owned"
    path = plant(tmp_path / "x.pt", marker)
    with weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=False)  # as DeepSpeed's checkpoint engine calls it
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1" and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_read_torch_names_the_file_and_allows_only_what_it_is_told(tmp_path: Path) -> None:
    path = tmp_path / "rng.pt"
    save_torch({"numpy": np.random.get_state()}, path)
    with pytest.raises(CheckpointError, match=r"rng.pt: cannot be read as a state .*numpy"):
        read_torch(path, what="a state")
    state = read_torch(path, what="a state", allow=(NUMPY_GLOBALS,))
    assert np.array_equal(state["numpy"][1], np.random.get_state()[1])
    with pytest.raises(CheckpointError, match="missing"):
        read_torch(tmp_path / "none.pt", what="a state")
