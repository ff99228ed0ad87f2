"""File primitives every layer may use: the gate of every input file, bounded reads and atomic
writes.

Reading: every reader of a user's file passes :func:`check_input_file` (or opens it with
:func:`open_input`) before anything is opened. It refuses, with a one-line
:class:`MemlensError` naming what the file is (corpus, vocabulary, checkpoint, ...) and the
path: a missing path, a directory, anything that is not a regular file (a FIFO, a device such
as ``/dev/zero``, a socket; ``/proc`` and ``/sys`` pseudo files, which stat as regular files of
size 0), all by ``stat``, and a file larger than the **input limit**:

* text inputs (corpora, vocabularies, lexicons, word lists, manifests, JSON):
  :data:`TEXT_LIMIT` = 2 GiB (:func:`text_limit`);
* weights, checkpoints and arrays: the memory budget, i.e. the physical memory or
  ``MEMLENS_MAX_MEMORY`` (:func:`binary_limit`);
* ``MEMLENS_MAX_INPUT_BYTES`` (a number of bytes, e.g. ``8e9``), when set, replaces both.

:func:`read_bytes` / :func:`read_text` / :func:`read_json` never read more than the limit + 1
bytes; :func:`read_text` also refuses empty, binary (NUL bytes) and non-UTF-8 files.

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
from typing import Any, BinaryIO

from memlens.core.errors import MemlensError, WriteError
from memlens.core.limits import env_bytes, memory_budget
from memlens.core.signals import deferred_interrupts


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
LIMIT_ENV = "MEMLENS_MAX_INPUT_BYTES"
TEXT_LIMIT = 2 << 30        # default bound of a text input (corpus, vocabulary, lexicon, ...)
_KERNEL_DIRS = ("/proc", "/sys")  # pseudo files there stat as regular files of size 0


def _env_limit() -> int | None:
    """``MEMLENS_MAX_INPUT_BYTES`` as a number of bytes, None when unset or empty."""
    return env_bytes(LIMIT_ENV, "4e9")


def text_limit() -> int:
    """The size bound of a text input: ``MEMLENS_MAX_INPUT_BYTES`` or 2 GiB."""
    env = _env_limit()
    return TEXT_LIMIT if env is None else env


def binary_limit() -> int:
    """The size bound of weights, checkpoints and arrays: ``MEMLENS_MAX_INPUT_BYTES`` or the
    memory budget (:func:`memlens.core.limits.memory_budget`)."""
    env = _env_limit()
    return memory_budget() if env is None else env


def _kernel_devices() -> set[int]:
    devices = set()
    for d in _KERNEL_DIRS:
        try:
            devices.add(os.stat(d).st_dev)
        except OSError:
            pass
    return devices


def as_path(value: Any, name: str = "path", kind: str = "file path") -> Path:
    """``value`` as a :class:`~pathlib.Path`, checked before anything touches the file system.

    Parameters
    ----------
    value
        What the caller was given as a file path: a ``str`` or an ``os.PathLike``.
    name
        The parameter (or input) it was given as, for the message (``"path"``,
        ``"vocab"``, ``"corpus path"``).
    kind
        What is expected, for the message (``"file path"``, ``"directory path"``).

    Returns
    -------
    Path
        ``Path(value)``.

    Raises
    ------
    MemlensError
        One line naming ``name`` and what was expected: a value of another type (an int,
        a list, None, bytes: "path must be a file path (str or os.PathLike), got int"), an
        empty path, or a path with a NUL byte.
    """
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise MemlensError(f"{name} must be a {kind} (str or os.PathLike), got "
                           f"{type(value).__name__}")
    if not text:
        raise MemlensError(f"{name} is empty: give a {kind}")
    if "\x00" in text:
        raise MemlensError(f"{name} contains a NUL byte: {text[:80]!r}")
    return Path(text)


def _check_path_type(path: Any, what: str) -> Path:
    return as_path(path, f"{what} path")


def _refuse_special(p: Path, st: os.stat_result, what: str) -> None:
    """Refuse a stat that is not a regular file, or a kernel pseudo file (``/proc``, ``/sys``)."""
    if stat.S_ISDIR(st.st_mode):
        raise MemlensError(f"{what} path is a directory, not a file: {p}")
    if not stat.S_ISREG(st.st_mode):
        raise MemlensError(f"{what} path is not a regular file (a FIFO, device or socket): "
                           f"{p}")
    if st.st_dev in _kernel_devices() or str(p.resolve()).startswith(
            tuple(d + "/" for d in _KERNEL_DIRS)):
        raise MemlensError(f"{what} path is a kernel pseudo file (/proc or /sys), not a "
                           f"regular file: {p}")


def _limit_hint(limit: int) -> str:
    """Where the bound ``limit`` comes from, for the message."""
    if _env_limit() is not None or limit == TEXT_LIMIT:
        return f"set {LIMIT_ENV} to raise it"
    if limit == memory_budget():
        return f"the memory budget; set {LIMIT_ENV} or MEMLENS_MAX_MEMORY to raise it"
    return "the reader's own bound"


def _refuse_size(p: Path, size: int, what: str, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise MemlensError(f"{what} file {p} is {size} bytes, larger than the input limit "
                           f"of {limit} bytes ({_limit_hint(limit)})")


def check_input_file(path: str | os.PathLike, what: str = "input",
                     limit: int | None = None) -> os.stat_result:
    """The gate every reader passes before opening a user's file: refuse (one line naming
    ``what`` and the path) a path of the wrong type, a missing path, a directory, anything
    that is not a regular file (a FIFO, a device such as ``/dev/zero``, a socket, a ``/proc``
    or ``/sys`` pseudo file) and a file larger than ``limit`` bytes (:func:`text_limit` when
    None; pass :func:`binary_limit` for weights and arrays), all by ``stat``, before anything
    is opened. Returns the ``stat`` result."""
    p = _check_path_type(path, what)
    if limit is None:
        limit = text_limit()
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise MemlensError(f"{what} file not found: {p}") from None
    except NotADirectoryError:
        raise MemlensError(f"{what} file not found (a parent is not a directory): {p}") from None
    except (OSError, ValueError) as exc:  # permissions, a name too long, a NUL byte
        why = getattr(exc, "strerror", None) or str(exc)
        raise MemlensError(f"cannot read {what} file {p}: {why}") from None
    _refuse_special(p, st, what)
    _refuse_size(p, st.st_size, what, limit)
    return st


@contextmanager
def open_input(path: str | os.PathLike, what: str = "input",
               limit: int | None = None) -> Iterator[BinaryIO]:
    """Open a user's file for reading in binary after :func:`check_input_file`. The file is
    opened non-blocking and checked again with ``fstat`` (a FIFO swapped in after the
    ``stat`` never blocks the open and is refused)."""
    limit = text_limit() if limit is None else limit
    st = check_input_file(path, what, limit)
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise MemlensError(f"cannot read {what} file {p}: {exc.strerror or exc}") from None
    try:
        now = os.fstat(fd)
        _refuse_special(p, now, what)
        _refuse_size(p, max(now.st_size, st.st_size), what, limit)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def check_regular(path: str | os.PathLike, what: str = "input",
                  limit: int | None = None) -> None:
    """Refuse a path that is not a regular file (a FIFO, a device such as /dev/zero, a
    socket, a ``/proc`` file) or that is larger than ``limit`` bytes (:func:`binary_limit`
    when None): reading one could block forever or never end. A missing path or a directory
    is left to the caller's own message."""
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return
    if stat.S_ISDIR(st.st_mode):
        return
    p = Path(path)
    _refuse_special(p, st, what)
    _refuse_size(p, st.st_size, what, binary_limit() if limit is None else limit)


def read_bytes(path: str | os.PathLike, what: str = "input",
               max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (through :func:`check_input_file`, bound
    ``max_bytes`` or :func:`text_limit`), refusing a missing path, a directory, a special
    file, an unreadable file and a file larger than the bound, each with a one-line
    :class:`MemlensError` that names ``what``. At most bound + 1 bytes are ever read."""
    limit = text_limit() if max_bytes is None else max_bytes
    with open_input(path, what, limit) as fh:
        try:
            # in blocks: fh.read(limit + 1) would allocate limit + 1 bytes up front (the
            # memory budget for weights), whatever the file's size
            chunks, total = [], 0
            while total <= limit:
                block = fh.read(min(1 << 24, limit + 1 - total))
                if not block:
                    break
                chunks.append(block)
                total += len(block)
            data = b"".join(chunks)
        except OSError as exc:  # an I/O error
            raise MemlensError(f"cannot read {what} file {path}: {exc.strerror or exc}"
                               ) from None
    if len(data) > limit:  # the file grew while it was read
        raise MemlensError(f"{what} file {path} is larger than the input limit of {limit} "
                           f"bytes ({_limit_hint(limit)})")
    return data


def read_text(path: str | os.PathLike, what: str = "corpus",
              max_bytes: int | None = None) -> str:
    """Return the UTF-8 text of ``path`` (a leading BOM removed), refusing missing, empty,
    binary (NUL in the first 64 KiB) and non-UTF-8 files (the error names the line)."""
    p = Path(path) if isinstance(path, (str, os.PathLike)) else path
    data = read_bytes(path, what, max_bytes)
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


def read_json(path: str | os.PathLike, what: str = "JSON", max_bytes: int | None = None
              ) -> Any:
    """The JSON document of ``path`` (through :func:`read_text`; a malformed or too deeply
    nested document is a one-line error naming ``what``)."""
    import json

    text = read_text(path, what, max_bytes)
    try:
        return json.loads(text)
    except ValueError as exc:  # malformed, or an integer of more than 4300 digits
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "malformed"
        raise MemlensError(f"malformed {what} {path}: {why}") from None
    except RecursionError:
        raise MemlensError(f"malformed {what} {path}: nested too deeply") from None


# -- writing -------------------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto
    ``path``. On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = as_path(path, "output path")
    if path.is_dir() and not path.is_symlink():
        raise MemlensError(f"cannot write {path}: it is a directory, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred_interrupts():  # a save that has begun finishes (issue 21)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            public_mode(tmp_path, 0o666)
            os.replace(tmp_path, path)
        except BaseException as exc:
            tmp_path.unlink(missing_ok=True)
            failure = WriteError.from_exception(exc, path)  # disk full, file too large
            if failure is not None:
                raise failure from None
            raise


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


__all__ = ["LIMIT_ENV", "TEXT_LIMIT", "UMASK", "as_path", "atomic_path", "binary_limit",
           "check_input_file", "check_regular", "open_input", "public_mode", "read_bytes",
           "read_json", "read_text", "text_limit", "write_atomic"]
