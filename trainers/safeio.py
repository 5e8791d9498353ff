"""Reading and writing the torch files of run folders as data, never as code.

Every ``torch.load`` here runs with ``weights_only=True``: tensors, plain containers and numbers, and only the
few classes named in an allowlist. A pickle that would import or call anything else (a planted
``__reduce__``) is refused before any of its code runs, with a :class:`CheckpointError` naming the file.

DeepSpeed reads its own checkpoint files inside ``engine.load_checkpoint`` and ``zero_to_fp32`` with
``weights_only=False``; :func:`weights_only_loads` forces those reads to ``weights_only=True`` too, through
torch's documented ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` switch, with :data:`DEEPSPEED_GLOBALS` allowlisted.

Writes go through :func:`save_torch`: serialised in memory, then :func:`planner.files.write_bytes_atomic`
(fsynced, renamed into place), so a kill or a full disk never leaves half a file under the final name, and a
full disk is a :class:`~planner.errors.WriteError` rather than torch's ``RuntimeError``.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from planner.errors import PlannerError
from planner.files import write_bytes_atomic

__all__ = ["CheckpointError", "DEEPSPEED_GLOBALS", "NUMPY_GLOBALS", "read_torch", "save_torch", "weights_only_loads"]


class CheckpointError(PlannerError):
    """A checkpoint or state file cannot be read as plain data (damaged, truncated, or holding code)."""

    exit_code = 4


def _numpy_globals() -> list[Any]:
    """What a pickled numpy RNG state needs (format 1-2 ``trainer.pt``): the array, its dtype and numpy's
    array reconstructor. ``_reconstruct`` builds only the allowlisted ``ndarray``; an object array's items
    are unpickled by the same restricted unpickler."""
    import numpy as np

    reconstruct = np.ndarray.__reduce__(np.zeros(1, np.uint32))[0]  # numpy.core / numpy._core by version
    return [np.ndarray, np.dtype, reconstruct, type(np.dtype(np.uint32))]


def _deepspeed_globals() -> list[Any]:
    """The classes DeepSpeed 0.19 pickles into its optimizer states, all plain records.

    ``ZeroStageEnum`` (an ``int`` enum), ``fragment_address`` (a dataclass of two ints) and the loss scalers
    (attributes only: scale, window, counters; no ``__setstate__`` or ``__reduce__`` of their own).
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]


NUMPY_GLOBALS = "numpy"  # allow= names, resolved lazily (importing DeepSpeed is slow)
DEEPSPEED_GLOBALS = "deepspeed"
_ALLOW = {NUMPY_GLOBALS: _numpy_globals, DEEPSPEED_GLOBALS: _deepspeed_globals}


def _allowed(allow: Sequence[str]) -> list[Any]:
    return [g for name in allow for g in _ALLOW[name]()]


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    for line in text.splitlines():  # torch's weights-only message: the line naming the refused global
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.strip().split(" was not an allowed")[0]
    return text.splitlines()[0][:200] if text else type(err).__name__


def read_torch(path: str | os.PathLike[str], *, what: str, map_location: Any = "cpu",
               allow: Sequence[str] = ()) -> Any:  # fmt: skip
    """``torch.load(path, weights_only=True)``, with errors that name the file.

    Args:
        path: the file.
        what: what the file is, for the message (``"a checkpoint's engine state"``).
        map_location: as for ``torch.load``.
        allow: names of allowlists (:data:`NUMPY_GLOBALS`, :data:`DEEPSPEED_GLOBALS`) of classes the file may
            hold besides tensors and plain types.

    Raises:
        CheckpointError: the file is missing, damaged, or holds anything outside the allowlist (its code is
            never run).

    Example:
        >>> state = read_torch("runs/a1/student.pt", what="a student state dict")  # doctest: +SKIP
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_allowed(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing ({what})") from None
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, KeyError, AttributeError,
            zipfile.BadZipFile) as err:  # fmt: skip
        raise CheckpointError(f"{path}: cannot be read as {what} with weights_only=True ({_reason(err)}); the file is "
                              "damaged or holds more than tensors and plain values (nothing in it was run); "
                              "replace or remove it") from None  # fmt: skip


def save_torch(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` through a fsynced temporary file and a rename (a full disk: a WriteError)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


@contextlib.contextmanager
def weights_only_loads(allow: Sequence[str] = (DEEPSPEED_GLOBALS,)) -> Iterator[None]:
    """Within the block, every ``torch.load`` (DeepSpeed's own included) reads with ``weights_only=True``,
    the ``allow`` lists allowlisted; a refused file raises ``pickle.UnpicklingError`` from the reader."""
    # the opposite switch, if a user set it, would make torch refuse every load (both set is an error)
    names = {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": None}
    before = {name: os.environ.get(name) for name in names}
    for name, value in names.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        with torch.serialization.safe_globals(_allowed(allow)):
            yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
