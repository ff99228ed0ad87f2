"""One entry point for corpora: a token stream plus per-token annotations."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from memlens.core.errors import MemlensError
from memlens.data.conllu_reader import read_conllu, to_char_stream
from memlens.data.text import UNITS, read_text_corpus

FORMATS = ("text", "conllu")


@dataclass
class Corpus:
    """``tokens``: the symbol stream; ``tags``: {"upos"/"xpos": one tag or None per token}."""

    tokens: list[str]
    tags: dict[str, list[str | None]] = field(default_factory=dict)
    path: str = ""
    unit: str = "word"
    format: str = "text"

    def __len__(self) -> int:
        return len(self.tokens)


def load_corpus(path: str | os.PathLike, format: str = "text", unit: str = "word") -> Corpus:
    """Read a running-text or CoNLL-U file as word or character units."""
    if format not in FORMATS:
        raise MemlensError(f"unknown corpus format {format!r}: choose text or conllu")
    if unit not in UNITS:
        raise MemlensError(f"unknown unit {unit!r}: choose word or char")
    if format == "text":
        return Corpus(read_text_corpus(path, unit), {}, str(path), unit, format)
    tokens, tags = read_conllu(path)
    if unit == "char":
        tokens, tags = to_char_stream(tokens, tags)
    return Corpus(tokens, tags, str(path), unit, format)
