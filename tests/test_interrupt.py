"""Where a Ctrl-C lands in a running study (planner.search._interrupt): in the evaluator's computation at once,
never inside a storage write, and never lost to a finalizer. In this process, under the search's own guard."""

from __future__ import annotations

import os
import signal
import time
import weakref
from collections.abc import Iterator
from contextlib import suppress

import pytest

from planner.search._interrupt import STATE, InterruptGuard, evaluating
from planner.search._optuna import _TrialContext

SPIN = 200_000  # bytecodes enough for the handler to run (it runs at the next one after the signal)


class _Study:
    def __init__(self) -> None:
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1


@pytest.fixture
def guard() -> Iterator[InterruptGuard]:
    g = InterruptGuard(_Study(), (signal.SIGINT,))
    previous = signal.getsignal(signal.SIGINT)
    try:
        with suppress(KeyboardInterrupt), g:  # a test that ends interrupted
            yield g
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not STATE.interrupted and not STATE.lost  # the guard leaves no state behind


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def _spin() -> int:
    n = 0
    for _ in range(SPIN):
        n += 1
    return n


def test_while_the_evaluator_computes_a_ctrl_c_raises_at_once(guard: InterruptGuard) -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with evaluating():
            _ctrl_c()
            _spin()
            reached.append("after")
    assert reached == [] and guard.study.stopped == 0


def test_outside_the_evaluation_it_only_stops_the_study(guard: InterruptGuard) -> None:
    _ctrl_c()
    assert _spin() == SPIN  # not interrupted
    assert guard.study.stopped == 1
    with pytest.raises(KeyboardInterrupt):
        guard.check()
    with pytest.raises(KeyboardInterrupt):  # a trial drawn meanwhile is not evaluated
        with evaluating():
            pytest.fail("evaluated after the interrupt")


def test_a_storage_write_in_the_evaluation_finishes_before_the_interrupt_is_raised(guard: InterruptGuard) -> None:
    class Trial:  # what _TrialContext writes through: each write takes the signal in its middle
        def __init__(self) -> None:
            self.writes: list[str] = []

        def report(self, value: float, step: int) -> None:
            _ctrl_c()
            _spin()
            self.writes.append("report done")

        def set_user_attr(self, key: str, value: object) -> None:
            self.report(0.0, 0)

        def should_prune(self) -> bool:
            self.report(0.0, 0)
            return False

    for multi, call in [(False, "report"), (True, "report"), (False, "should_prune")]:
        trial = Trial()
        ctx = _TrialContext(trial, multi)
        with pytest.raises(KeyboardInterrupt):
            with evaluating():
                ctx.report(1.0, 3) if call == "report" else ctx.should_prune()
                pytest.fail("the evaluation went on after the write")
        assert trial.writes == ["report done"], (multi, call)
        STATE.reset()


def test_an_interrupt_a_finalizer_swallows_is_raised_again(guard: InterruptGuard, capfd) -> None:
    class Garbage:
        pass

    def finalizer(_: object) -> None:
        _ctrl_c()
        _spin()  # the handler raises here, where Python drops the exception

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with evaluating():
            item = Garbage()
            ref = weakref.ref(item, finalizer)
            del item
            assert ref() is None
            while time.monotonic() - t0 < 5:  # delivered again within milliseconds
                _spin()
            pytest.fail("the swallowed interrupt was not delivered again")
    assert "Exception ignored" not in capfd.readouterr().err


def test_an_unraisable_error_that_is_not_ours_still_reaches_the_hook(guard: InterruptGuard) -> None:
    import sys

    seen = []
    guard.hook = seen.append  # what the guard found installed
    sys.unraisablehook(type("U", (), {"exc_value": ValueError("x")})())
    assert len(seen) == 1 and not STATE.lost


def test_a_worker_outside_its_study_exits_130_at_once_and_silently(tmp_path) -> None:
    import subprocess
    import sys

    code = (
        "import os, signal, time\n"
        "from planner.search._interrupt import exit_interrupted\n"
        "signal.signal(signal.SIGTERM, exit_interrupted)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(30)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "")


def _die_of(sig: int) -> None:
    if sig != signal.SIGKILL:
        signal.signal(sig, signal.SIG_DFL)  # as in a worker Python still starts
    os.kill(os.getpid(), sig)
    time.sleep(30)


@pytest.mark.parametrize(
    ("sig", "interrupted"), [(signal.SIGTERM, True), (signal.SIGINT, True), (signal.SIGKILL, False)]
)
def test_one_worker_dead_of_an_interrupt_ends_the_wait_for_all(sig: int, interrupted: bool) -> None:
    """A worker still starting dies of the signal itself (-15, -2): an interrupt, as its exit 130 is; SIGKILL
    (the out-of-memory killer) is a failed worker, and the wait goes on for the others."""
    import multiprocessing as mp

    from planner.search._run import _join, _stop

    ctx = mp.get_context("fork")  # the targets need not be importable by a fresh interpreter
    dying = ctx.Process(target=_die_of, args=(int(sig),))
    other = ctx.Process(target=time.sleep, args=(2.0 if not interrupted else 30.0,))
    procs = [other, dying]  # the one still running first: the wait must not be in order
    for p in procs:
        p.start()
    t0 = time.monotonic()
    try:
        if interrupted:
            with pytest.raises(KeyboardInterrupt):
                _join(procs)
            assert time.monotonic() - t0 < 20 and other.is_alive()  # at once, not after the other's 30 s
        else:
            _join(procs)
            assert dying.exitcode == -signal.SIGKILL and other.exitcode == 0
    finally:
        _stop(procs)
