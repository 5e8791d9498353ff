"""Durable file writes and confined paths: the ground floor every command writes through.

Everything the planner publishes (architecture files, checkpoints, metrics, manifests, exports, Pareto
folders) is written to a temporary sibling, fsynced, and renamed into place, so a kill or a full disk leaves
either the old file or the new one, never half of one. Folders are swapped whole: :func:`staged_dir` builds
the new folder beside the old one and exchanges the two in one ``renameat2(RENAME_EXCHANGE)`` call where the
kernel offers it (Linux >= 3.15), else in two renames that :func:`recover_dir` completes after a crash.

Paths read from inside a data file (a manifest row, an export manifest entry) go through :func:`confined`,
which refuses ``../`` escapes and absolute paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from planner.errors import FieldError, WriteError

__all__ = [
    "confined",
    "fsync_dir",
    "fsync_tree",
    "recover_dir",
    "staged_dir",
    "write_bytes_atomic",
    "write_text_atomic",
    "writing",
]

_RENAME_EXCHANGE = 2
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turns a full disk or a refused write under ``path`` into a :class:`WriteError` that says so."""
    try:
        yield
    except OSError as err:
        if err.errno in _DISK_FULL:
            raise WriteError(f"{path}: the disk is full ({os.strerror(err.errno)}); free space and rerun "
                             "(nothing already written was changed)") from err  # fmt: skip
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise WriteError(f"{path}: cannot write here ({os.strerror(err.errno)}); choose another folder") from err
        if err.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            raise WriteError(f"{path}: {os.strerror(err.errno).lower()} (a file is in the way of a folder, or a "
                             "folder of a file); choose another path") from err  # fmt: skip
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flushes a directory entry (a rename or a new file inside ``path``) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to ``path`` through a fsynced temporary file and a rename."""
    p = Path(path)
    with writing(p):
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), 0o666 & ~_umask())  # as open() would create it (mkstemp makes 0600)
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(p.parent)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Writes UTF-8 ``text`` to ``path`` through a fsynced temporary file and a rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """Flushes every file under ``root`` and every folder entry to disk (before the rename that publishes it)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two existing paths; False where the kernel or libc cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def _old_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def recover_dir(final: str | os.PathLike[str]) -> None:
    """Completes or rolls back a folder swap that a crash interrupted (the two-rename fallback only).

    Leftover staging folders (``.NAME.new-*``) are removed; if ``NAME`` is missing and ``.NAME.old`` exists,
    the old folder is put back.
    """
    final = Path(final)
    old = _old_name(final)
    if old.exists():
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)
    for stale in final.parent.glob(f".{final.name}.new-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Builds a folder that replaces ``final`` whole, or not at all.

    Yields an empty staging folder beside ``final``; when the block ends without an error its files are
    fsynced and the folder takes ``final``'s place (an existing ``final`` is swapped out atomically and
    removed). On an error, or a kill, ``final`` is left as it was.

    Example:
        >>> with staged_dir("pareto") as tmp:               # doctest: +SKIP
        ...     (tmp / "pareto.csv").write_text("...")
    """
    final = Path(final)
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        recover_dir(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.new-", dir=final.parent))
        tmp.chmod(0o777 & ~_umask())  # as mkdir would create it (mkdtemp makes 0700)
    try:
        yield tmp
        with writing(final):
            fsync_tree(tmp)
            if final.exists():
                if _exchange(tmp, final):
                    fsync_dir(final.parent)
                    shutil.rmtree(tmp)  # now holds the old folder
                    return
                old = _old_name(final)
                os.replace(final, old)
                os.replace(tmp, final)
                fsync_dir(final.parent)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
                fsync_dir(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def confined(root: str | os.PathLike[str], relative: str, where: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root``.

    Args:
        root: the folder the data file's paths are relative to.
        relative: a path read from the data file.
        where: the location to name in the error (``manifest.tsv: line 3``).

    Raises:
        FieldError: for an absolute path or one that leaves ``root`` (``..`` or a symlink out).
    """
    if os.path.isabs(relative):
        raise FieldError(where, f"{relative!r} is an absolute path; paths here are relative to {root}")
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise FieldError(where, f"{relative!r} leaves its folder {base} (no '..' escapes or links out)")
    return target
