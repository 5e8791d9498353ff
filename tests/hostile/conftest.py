"""The hostile-input corpus: shared checks for every case in ``tests/hostile/``.

Each case runs one ``planner`` command on a bad input and asserts, through :func:`hostile.support.refused`:

* the exit code is non-zero (and the one the case expects),
* nothing on stdout or stderr looks like a Python traceback,
* the message names the file and the field (substrings the case gives),
* files that existed before (studies, run folders, exports) are unchanged byte for byte (:func:`hostile.support.snapshot`).

Cases live in ``test_<area>.py`` files beside this one (architectures, spaces, studies, recipes, tasks,
manifests, run folders, exports, CLI arguments); ``test_corpus_size.py`` counts them.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence

import pytest

from hostile.support import GUARD_S, Result
from planner.cli import main


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Runs ``planner ARGV`` in this process and returns a :class:`Result`."""

    def run(argv: Sequence[str]) -> Result:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors exit 2 through SystemExit
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(int(code), out, err)

    return run


@pytest.fixture
def hang_guard() -> Iterator[None]:
    """Fails a case that runs past :data:`hostile.support.GUARD_S` seconds (SIGALRM; a no-op where there is none).

    Not autouse: the modules of cases that must be refused quickly take it with
    ``pytestmark = pytest.mark.usefixtures("hang_guard")`` (the run-folder cases train, and take longer).
    """
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {GUARD_S} s: the refusal did not come quickly")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(GUARD_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
