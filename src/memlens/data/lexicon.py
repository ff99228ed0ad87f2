"""The reference's lexicon format: ``word<TAB>tag1 tag2 ...`` (each word's possible POS tags).

Tags may be separated by spaces, tabs or commas. A word counts for every class among its tags.
"""

from __future__ import annotations

import os

from memlens.data.files import read_text
from memlens.errors import MemlensError


def read_lexicon(path: str | os.PathLike) -> dict[str, list[str]]:
    """Return {word: [tags]} from a word -> possible-tags file."""
    lexicon: dict[str, list[str]] = {}
    for number, line in enumerate(read_text(path, "lexicon").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) < 2:
            raise MemlensError(f"{path}:{number}: malformed lexicon line: expected a word "
                               "followed by at least one tag")
        word, tags = parts[0], parts[1:]
        known = lexicon.setdefault(word, [])
        known.extend(t for t in tags if t not in known)
    if not lexicon:
        raise MemlensError(f"lexicon file has no entries: {path}")
    return lexicon


def read_groups(path: str | os.PathLike) -> dict[str, list[str]]:
    """Tag groups: ``group<TAB>tag tag ...`` or ``group: tag tag`` per line -> {group: tags}."""
    groups: dict[str, list[str]] = {}
    for number, line in enumerate(read_text(path, "tag-group").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.replace(":", " ").replace(",", " ").replace("=", " ").split()
        if len(parts) < 2:
            raise MemlensError(f"{path}:{number}: malformed group line: expected a group name "
                               "followed by at least one tag")
        groups.setdefault(parts[0], []).extend(parts[1:])
    if not groups:
        raise MemlensError(f"tag-group file has no groups: {path}")
    return groups


def read_word_list(path: str | os.PathLike) -> list[str]:
    """One word per line (or whitespace separated)."""
    words = read_text(path, "word-list").split()
    if not words:
        raise MemlensError(f"word-list file has no words: {path}")
    return words
