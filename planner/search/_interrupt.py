"""Where a Ctrl-C (or a worker's SIGTERM) may land in a running study.

A signal handler that raises ``KeyboardInterrupt`` raises it in whatever Python code runs at that moment. Two
places are unsafe for that:

- **a storage write** (SQLAlchemy, the journal): an exception between a lock's acquire and its ``try`` leaves
  the lock held, and the FAIL write that follows waits on it forever;
- **a finalizer or weakref callback** (the garbage collector runs them anywhere): Python prints "Exception
  ignored in ..." with a traceback and carries on, so the interrupt is lost.

So the handler raises only while the evaluator computes (:func:`evaluating`), never inside a storage write the
evaluator asks for (:func:`storage_write`: the interrupt is raised when the write is done), and an interrupt
swallowed by a finalizer is delivered again within milliseconds (:func:`deliver_lost`). Anywhere else the study is asked to
stop and the trial in hand finishes first.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

__all__ = ["INTERRUPTED", "STATE", "InterruptGuard", "evaluating", "exit_interrupted", "storage_write"]


class _State:
    """One process's interrupt state (signal handlers run in the main thread, where trials run)."""

    def __init__(self) -> None:
        self.interrupted = False  # a signal arrived; the study stops
        self.raising = False  # the evaluator computes: a signal raises KeyboardInterrupt here and now
        self.lost = False  # a raise was swallowed by a finalizer: it is delivered again until one is taken
        self.hooked = False  # the unraisable hook runs: a delivery now would be swallowed too

    def reset(self) -> None:
        self.interrupted = self.raising = self.lost = self.hooked = False


STATE = _State()


@contextmanager
def evaluating() -> Iterator[None]:
    """The evaluator's own computation: an interrupt raises KeyboardInterrupt inside it at once."""
    if STATE.interrupted:  # stopped before it began: nothing is evaluated
        raise KeyboardInterrupt
    before, STATE.raising = STATE.raising, True
    try:
        yield
    finally:
        STATE.raising = before


@contextmanager
def storage_write() -> Iterator[None]:
    """A storage write inside the evaluation (a report, a pruning check): an interrupt that arrives during it
    is raised once it is done, never in the middle of it."""
    before, STATE.raising = STATE.raising, False
    try:
        yield
    finally:
        STATE.raising = before
    if before and STATE.interrupted:
        raise KeyboardInterrupt


def deliver_lost(unraisable: object) -> bool:
    """For ``sys.unraisablehook``: True when ``unraisable`` is a KeyboardInterrupt of ours that a finalizer
    swallowed (it is then delivered again, as a SIGINT to the main thread, until a handler takes it: see
    :func:`take_lost`); False for anything else."""
    if not (isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt) and STATE.interrupted):
        return False
    if not STATE.lost:
        STATE.lost = True
        threading.Thread(target=_deliver_again, name="planner-interrupt", daemon=True).start()
    return True


def take_lost() -> bool | None:
    """For a signal handler: True when this delivery is a lost interrupt's (the handler raises again), None when
    it runs inside the unraisable hook itself (it must return at once: the next delivery comes), else False."""
    if STATE.hooked:
        return None
    lost, STATE.lost = STATE.lost, False
    return lost


def _deliver_again() -> None:
    # from another thread, so the handler runs in the main thread once the hook has returned
    while STATE.lost:
        _thread.interrupt_main(signal.SIGINT)
        time.sleep(_AGAIN_S)


_AGAIN_S = 0.01  # between deliveries of a lost interrupt; each one is taken at the main thread's next bytecode


class InterruptGuard:
    """Around ``study.optimize``: takes Ctrl-C (and, in a spawned worker, the SIGTERM its parent stops it with)
    so that it lands where Optuna can record it. While the evaluator computes it raises KeyboardInterrupt at
    once (Optuna marks the trial FAIL); anywhere else (while the sampler draws, while a result is stored) it
    only asks the study to stop, and the trial in hand is finished before :meth:`check` raises. An interrupt a
    finalizer swallows is delivered again. No trial is left RUNNING.
    """

    def __init__(self, study: Any, signals: tuple[int, ...]) -> None:
        self.study = study
        self.signals = signals
        self.previous: dict[int, Any] = {}
        self.hook: Any = None

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self.previous = {s: signal.signal(s, self._handle) for s in self.signals}
            self.hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler if not STATE.interrupted else signal.SIG_IGN)  # a second one: clean-up runs
        if self.hook is not None:
            sys.unraisablehook = self.hook
        STATE.reset()

    def _handle(self, signum: int, frame: Any) -> None:
        again = take_lost()
        if again is None or (STATE.interrupted and not again):
            return  # one is enough; the clean-up is under way
        STATE.interrupted = True
        if STATE.raising:
            raise KeyboardInterrupt
        with suppress(RuntimeError):  # optimize has not started yet: the first trial's evaluation raises
            self.study.stop()

    def _unraisable(self, unraisable: Any) -> None:
        STATE.hooked = True
        try:
            taken = deliver_lost(unraisable)
        finally:
            STATE.hooked = False
        if not taken:
            self.hook(unraisable)

    def check(self) -> None:
        if STATE.interrupted:
            raise KeyboardInterrupt


INTERRUPTED = 130  # a worker's exit code after Ctrl-C or its parent's SIGTERM (the shell's 128 + SIGINT)


def exit_interrupted(signum: int, frame: Any) -> None:
    """A spawned worker's handler of Ctrl-C and SIGTERM outside its :class:`InterruptGuard` (while it starts,
    once its share is done): none of its trials is running, so it exits at once with :data:`INTERRUPTED`. There
    is nothing to clean: a SQLite write it was in is rolled back, a journal record it tore is found by the next
    open."""
    sys.stderr.flush()
    os._exit(INTERRUPTED)
