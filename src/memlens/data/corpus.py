"""One entry point for corpora: a token stream plus per-token annotations."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from memlens.core.errors import MemlensError
from memlens.core.files import as_path
from memlens.data.conllu_reader import read_conllu, to_char_stream
from memlens.data.text import UNITS, read_text_corpus

FORMATS = ("text", "conllu")


@dataclass
class Corpus:
    """A token stream plus per-token annotations, as :func:`load_corpus` reads it.

    ``len(corpus)`` is the number of tokens. Analyses accept a corpus wherever they accept a
    stream of symbols; its tags can serve as the classes of the positions.

    Parameters
    ----------
    tokens : list of str
        The symbol stream: words or characters, ``<eos>`` after every sentence or line.
    tags : dict of str to list of (str or None), optional
        Annotations, one entry per token: ``{"upos": [...], "xpos": [...]}`` for a CoNLL-U
        file (None where the file has ``_``, and for ``<eos>`` and spaces); empty for text.
    path : str, optional
        The file the corpus was read from ("" when built in memory).
    unit : str, optional
        "word" (default) or "char".
    format : str, optional
        "text" (default) or "conllu".
    """

    tokens: list[str]
    tags: dict[str, list[str | None]] = field(default_factory=dict)
    path: str = ""
    unit: str = "word"
    format: str = "text"

    def __len__(self) -> int:
        return len(self.tokens)


def load_corpus(path: str | os.PathLike, format: str = "text", unit: str = "word") -> Corpus:
    """Read a running-text or CoNLL-U file as word or character units.

    Text (PTB / WikiText style): the whitespace tokens of each non-blank line, then
    ``<eos>``; as characters, the characters of each non-blank line (runs of whitespace
    collapsed to one space), then ``<eos>``. CoNLL-U: the FORM of every word (multi-word
    and empty tokens skipped), ``<eos>`` after each sentence, with the UPOS and XPOS tags; as
    characters, the words joined by spaces, each character carrying its word's tags.

    Parameters
    ----------
    path : str or os.PathLike
        The corpus file (UTF-8).
    format : str, optional
        "text" (default) or "conllu".
    unit : str, optional
        "word" (default) or "char".

    Returns
    -------
    Corpus
        The tokens, their tags (CoNLL-U only), and the path, unit and format.

    Raises
    ------
    MemlensError
        When the format or unit is unknown, the file is missing, unreadable, too large,
        malformed (CoNLL-U) or has no tokens.
    """
    as_path(path, "path")
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
