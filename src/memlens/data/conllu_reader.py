"""CoNLL-U (Universal Dependencies) corpora: token stream with UPOS and XPOS per token.

The stream holds the syntactic words (integer IDs) of each sentence followed by ``<eos>``;
multiword-token lines (``3-4``) and empty nodes (``8.1``) are skipped, so tags stay aligned
with the words a tagger sees. ``<eos>`` carries no tag (``None``). Parsing is done by the
maintained ``conllu`` package after a line-by-line format check that reports file and line.
"""

from __future__ import annotations

import os
import re

import conllu

from memlens.core.errors import MemlensError
from memlens.data.files import read_text
from memlens.data.vocab import EOS

_ID = re.compile(r"^(\d+|\d+-\d+|\d+\.\d+)$")


def _check_lines(text: str, path: str | os.PathLike) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise MemlensError(f"{path}:{number}: malformed CoNLL-U line: expected 10 "
                               f"tab-separated columns, found {len(cols)}")
        if not _ID.match(cols[0]):
            raise MemlensError(f"{path}:{number}: malformed CoNLL-U line: bad token ID "
                               f"{cols[0]!r}")
        if not cols[1]:
            raise MemlensError(f"{path}:{number}: malformed CoNLL-U line: empty FORM")


def read_conllu(path: str | os.PathLike) -> tuple[list[str], dict[str, list[str | None]]]:
    """Return (tokens, {"upos": [...], "xpos": [...]}) aligned one tag per token."""
    text = read_text(path, "CoNLL-U")
    _check_lines(text, path)
    tokens: list[str] = []
    upos: list[str | None] = []
    xpos: list[str | None] = []
    try:
        sentences = conllu.parse(text)
    except Exception as exc:  # the conllu package raises several types
        raise MemlensError(f"{path}: cannot parse CoNLL-U: {exc}") from None
    for sentence in sentences:
        words = [t for t in sentence if isinstance(t["id"], int)]
        if not words:
            continue
        for t in words:
            tokens.append(t["form"])
            upos.append(t["upos"] if t["upos"] not in (None, "_") else None)
            xpos.append(t["xpos"] if t["xpos"] not in (None, "_") else None)
        tokens.append(EOS)
        upos.append(None)
        xpos.append(None)
    if not tokens:
        raise MemlensError(f"CoNLL-U file has no tokens: {path}")
    return tokens, {"upos": upos, "xpos": xpos}


def to_char_stream(tokens: list[str], tags: dict[str, list[str | None]]
                   ) -> tuple[list[str], dict[str, list[str | None]]]:
    """Character units from a word stream: words joined by spaces, ``<eos>`` kept.

    Each character carries the tags of its word; spaces and ``<eos>`` carry ``None``.
    """
    chars: list[str] = []
    out: dict[str, list[str | None]] = {k: [] for k in tags}
    prev_was_word = False
    for i, tok in enumerate(tokens):
        if tok == EOS:
            chars.append(EOS)
            for k in out:
                out[k].append(None)
            prev_was_word = False
            continue
        if prev_was_word:
            chars.append(" ")
            for k in out:
                out[k].append(None)
        chars.extend(tok)
        for k in out:
            out[k].extend([tags[k][i]] * len(tok))
        prev_was_word = True
    return chars, out
