"""Training progress on the terminal: a tqdm bar on a terminal, plain lines anywhere else.

On a terminal (``log.isatty()``) the bar advances every step and shows the last logged loss, learning rate
and examples/s; a log file or a CI log gets one line per logged step instead (a bar's carriage returns
would fill it with partial lines). ``metrics.jsonl`` is written either way, by :mod:`trainers.train`.
"""

from __future__ import annotations

from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    """Reports steps ``initial + 1 .. total`` to ``log`` (None: silent).

    Args:
        log: the stream (``sys.stderr`` for ``planner train``), or None.
        total: the last step.
        initial: the step the run starts from (a resumed run's bar starts there).
        note: a line printed before the bar (what is being resumed).
    """

    def __init__(self, log: TextIO | None, total: int, initial: int, note: str | None = None) -> None:
        self.log, self.total = log, total
        self.bar = None
        if log is not None and note is not None:
            print(note, file=log, flush=True)
        if log is not None and _is_terminal(log):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, file=log, unit="step", dynamic_ncols=True,
                            desc="train", smoothing=0.1)  # fmt: skip

    def step(self, row: dict[str, Any] | None) -> None:
        """One optimizer step done; ``row``: the metrics row if this step was logged."""
        if self.bar is not None:
            if row is not None:
                held = {"valid": f"{row['valid_loss']:.4f}"} if "valid_loss" in row else {}
                self.bar.set_postfix(loss=f"{row['loss']:.4f}", **held, lr=f"{row['lr']:.2e}",
                                     ex_s=f"{row['examples_per_s']:.1f}", refresh=False)  # fmt: skip
            self.bar.update(1)
        elif self.log is not None and row is not None:
            held = f"  valid {row['valid_loss']:.4f}" if "valid_loss" in row else ""
            print(f"step {row['step']}/{self.total}  loss {row['loss']:.4f}{held}  lr {row['lr']:.2e}  "
                  f"{row['examples_per_s']:.1f} examples/s", file=self.log, flush=True)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_terminal(log: TextIO) -> bool:
    isatty = getattr(log, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (ValueError, OSError):  # a closed or detached stream
        return False
