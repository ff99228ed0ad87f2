"""Reading user text files with clear errors for missing, empty, binary or non-UTF-8 input."""

from __future__ import annotations

import os
from pathlib import Path

from memlens.errors import MemlensError


def read_text(path: str | os.PathLike, what: str = "corpus") -> str:
    """Return the UTF-8 text of ``path``, refusing missing, empty, binary and non-UTF-8 files."""
    p = Path(path)
    if not p.exists():
        raise MemlensError(f"{what} file not found: {p}")
    if p.is_dir():
        raise MemlensError(f"{what} path is a directory, not a file: {p}")
    try:
        data = p.read_bytes()
    except OSError as exc:  # unreadable (permissions), a special file, an I/O error
        raise MemlensError(f"cannot read {what} file {p}: {exc.strerror or exc}") from None
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
