"""File primitives every layer may use: bounded reads of user files and atomic writes.

Reading (:func:`read_bytes`, :func:`read_text`): a user's file is refused with a one-line
:class:`MemlensError` when it is missing, a directory, unreadable, larger than a given bound,
empty, binary (NUL bytes) or not UTF-8; nothing larger than the bound is read into memory.

Writing (:func:`atomic_path`, :func:`write_atomic`): a file is written under a temporary name
beside its target, flushed to disk, given the mode a plain ``open`` would give it
(0o666 & ~umask) and renamed onto the target, so the target is either complete or untouched.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memlens.core.errors import MemlensError


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it; restored at once (import time)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def public_mode(tmp: Path, mode: int) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give ``tmp`` the mode a plain ``open`` or
    ``mkdir`` would: ``mode & ~umask``."""
    os.chmod(tmp, mode & ~UMASK)


# -- reading -------------------------------------------------------------------------------------
def check_regular(path: str | os.PathLike, what: str = "input") -> None:
    """Refuse a path that is not a regular file (a FIFO, a device such as /dev/zero, a
    socket): reading one could block forever or never end. A missing path or a directory is
    left to the caller's own message."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise MemlensError(f"{what} path is not a regular file (a FIFO, device or socket): "
                           f"{path}")


def read_bytes(path: str | os.PathLike, what: str = "input",
               max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path``, refusing a missing path, a directory, an
    unreadable file and (with ``max_bytes``) a file larger than ``max_bytes`` bytes, each with
    a one-line :class:`MemlensError` that names ``what``."""
    p = Path(path)
    if not p.exists():
        raise MemlensError(f"{what} file not found: {p}")
    if p.is_dir():
        raise MemlensError(f"{what} path is a directory, not a file: {p}")
    check_regular(p, what)
    try:
        if max_bytes is None:
            data = p.read_bytes()
        else:
            if p.stat().st_size > max_bytes:
                raise MemlensError(f"{what} file {p} is larger than {max_bytes} bytes")
            with open(p, "rb") as fh:
                data = fh.read(max_bytes + 1)
    except OSError as exc:  # unreadable (permissions), a special file, an I/O error
        raise MemlensError(f"cannot read {what} file {p}: {exc.strerror or exc}") from None
    if max_bytes is not None and len(data) > max_bytes:  # grew, or a special file
        raise MemlensError(f"{what} file {p} is larger than {max_bytes} bytes")
    return data


def read_text(path: str | os.PathLike, what: str = "corpus",
              max_bytes: int | None = None) -> str:
    """Return the UTF-8 text of ``path`` (a leading BOM removed), refusing missing, empty,
    binary (NUL in the first 64 KiB) and non-UTF-8 files (the error names the line)."""
    p = Path(path)
    data = read_bytes(p, what, max_bytes)
    if not data.strip():
        raise MemlensError(f"{what} file is empty: {p}")
    if b"\x00" in data[:65536]:
        raise MemlensError(f"{what} file looks binary (contains NUL bytes): {p}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MemlensError(f"{what} file is not valid UTF-8 (line {line}): {p}") from None
    return text.lstrip("\ufeff")


# -- writing -------------------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto
    ``path``. On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        public_mode(tmp_path, 0o666)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


__all__ = ["UMASK", "atomic_path", "public_mode", "read_bytes", "read_text", "write_atomic"]
