"""Running text (PTB / WikiText style, one sentence or paragraph per line) as word or char units.

Word units: whitespace tokens of each non-blank line, then ``<eos>``.
Character units: the characters of each non-blank line (runs of whitespace collapsed to one
space, ends stripped), then ``<eos>``; the same text gives both unit streams.
"""

from __future__ import annotations

import os

from memlens.core.errors import MemlensError
from memlens.data.files import read_text
from memlens.data.vocab import EOS

UNITS = ("word", "char")


def tokenize_lines(lines: list[str], unit: str = "word") -> list[str]:
    """Split lines into a token stream with ``<eos>`` after every non-blank line."""
    if unit not in UNITS:
        raise MemlensError(f"unknown unit {unit!r}: choose word or char")
    tokens: list[str] = []
    for line in lines:
        words = line.split()
        if not words:
            continue
        tokens.extend(words if unit == "word" else " ".join(words))
        tokens.append(EOS)
    return tokens


def read_text_corpus(path: str | os.PathLike, unit: str = "word") -> list[str]:
    """Tokens of a running-text file (see module docstring)."""
    tokens = tokenize_lines(read_text(path).splitlines(), unit)
    if not tokens:
        raise MemlensError(f"corpus file has no tokens: {path}")
    return tokens
