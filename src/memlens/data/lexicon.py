"""Word -> possible-tags lexicons, tag groups and word lists.

Lexicon lines (each word's possible POS tags) come in two formats, mixed freely:

* plain: ``word<TAB>tag1 tag2 ...`` (tags separated by spaces, tabs or commas);
* the original state-gradients format (``ptb_words+pos.txt`` of Verwimp et al., read by
  ``read_pos_tags`` in their ``aux_scripts/utils.py``): the word, whitespace, then a Python
  list of quoted tags, e.g. ``run ['NN', 'VB', 'VBN|JJ']``. A ``|`` inside a tag lists several
  tags (``VBN|JJ`` = VBN and JJ), as in the original. A line ``word not in list`` (or
  ``word []``) gives the word no tag, as in the original. Quoted tags are read as Python string
  literals, so ``["''"]`` is the closing-quote tag ``''`` (the original's character stripping
  kept its double quotes).

A word counts for every class among its tags. Repeated words merge their tags (first-seen
order, no duplicates).

A lexicon can also be built from a tagged corpus (:func:`lexicon_from_conllu`): each word of a
CoNLL-U file maps to the set of tags (UPOS or XPOS) it is seen with, in first-seen order, the
same ``{word: [tags]}`` that :func:`read_lexicon` returns, so the same rule applies (a word
counts for every tag it was seen with). :func:`load_lexicon` reads either kind of file.
"""

from __future__ import annotations

import ast
import os

from memlens.core.errors import MemlensError
from memlens.data.files import read_text

NOT_IN_LIST = "not in list"


def _split_bars(items: list[str]) -> list[str]:
    """``VBN|JJ`` -> VBN, JJ (the original's multi-tag notation); empty items dropped."""
    return [t for item in items for t in item.split("|") if t]


def _bracketed_tags(text: str) -> list[str]:
    """Tags of an original-format list such as ``['NN', 'VBN|JJ']``.

    Read as a Python literal; when that fails (an unquoted or truncated list) each
    whitespace-separated item is stripped of ``[``, ``,``, ``]`` and quotes, like the original.
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return _split_bars(list(value))
    return _split_bars([item.lstrip("[").rstrip(",").rstrip("]").strip("'\"")
                        for item in text.split()])


def parse_lexicon_line(line: str) -> tuple[str, list[str]] | None:
    """(word, tags) of one lexicon line in either format (module docstring).

    Returns None for a blank or ``#`` comment line; ``(word, [])`` for a word without tags
    (``not in list``, ``[]``); raises ValueError for a word with nothing after it.
    """
    parts = line.strip().split(None, 1)
    if not parts or line.startswith("#"):
        return None
    if len(parts) < 2:
        raise ValueError("expected a word followed by at least one tag")
    word, rest = parts[0], parts[1].strip()
    if " ".join(rest.split()) == NOT_IN_LIST:
        return word, []
    if rest.startswith("["):
        return word, _bracketed_tags(rest)
    return word, _split_bars(rest.replace(",", " ").split())


def read_lexicon(path: str | os.PathLike) -> dict[str, list[str]]:
    """Return {word: [tags]} from a word -> possible-tags file (either format; words listed
    without a tag map to [])."""
    lexicon: dict = {}  # word -> {tag: None}: the tags in first-seen order, linear time
    for number, line in enumerate(read_text(path, "lexicon").splitlines(), start=1):
        try:
            entry = parse_lexicon_line(line)
        except ValueError as exc:
            raise MemlensError(f"{path}:{number}: malformed lexicon line: {exc}") from None
        if entry is None:
            continue
        word, tags = entry
        lexicon.setdefault(word, {}).update(dict.fromkeys(tags))  # ordered, no repeats
    lexicon = {word: list(tags) for word, tags in lexicon.items()}
    if not lexicon:
        raise MemlensError(f"lexicon file has no entries: {path}")
    return lexicon


TAGSETS = ("xpos", "upos")  # the tag columns of a CoNLL-U lexicon (xpos: PTB tags, as the paper)


def is_conllu(path: str | os.PathLike) -> bool:
    """True when ``path`` names a CoNLL-U file: its name ends in ``.conllu``, or its first
    line that is neither blank nor a ``#`` comment has the 10 tab-separated columns of a
    CoNLL-U token line with a numeric ID (so a renamed treebank is not read as a lexicon)."""
    if str(path).endswith(".conllu"):
        return True
    for line in read_text(path, "lexicon").splitlines():
        if line.strip() and not line.startswith("#"):
            cols = line.split("\t")
            return len(cols) == 10 and cols[0].split("-")[0].split(".")[0].isdigit()
    return False


def lexicon_from_conllu(path: str | os.PathLike, tagset: str = "xpos", lowercase: bool = False
                        ) -> dict[str, list[str]]:
    """The lexicon of a tagged corpus: each word and the tags it is seen with.

    The structure :func:`read_lexicon` returns, so the original's rule applies unchanged: a
    word counts for every class among its tags (e.g. a word seen as NN and as VB is in both).
    Words of the treebank (multiword-token lines and empty nodes skipped, as
    :func:`memlens.data.conllu_reader.read_conllu`); a word only ever tagged ``_`` maps to []
    (as ``word not in list``).

    Parameters
    ----------
    path : str or os.PathLike
        A CoNLL-U file (e.g. UD English EWT train).
    tagset : {"xpos", "upos"}
        The tag column: XPOS (PTB tags, as the paper's lexicon) or UPOS.
    lowercase : bool
        Key the words in lower case (for a lower-cased corpus such as Mikolov's PTB), merging
        the tags of their spellings.

    Returns
    -------
    dict of str to list of str
        {word (FORM): [tags]}, tags in first-seen order, no repeats.
    """
    from memlens.data.conllu_reader import read_conllu
    from memlens.data.vocab import EOS

    if tagset not in TAGSETS:
        raise MemlensError(f"unknown tag set {tagset!r}: choose xpos or upos")
    tokens, tags = read_conllu(path)
    lexicon: dict = {}  # word -> {tag: None}: first-seen order, linear time
    for word, tag in zip(tokens, tags[tagset]):
        if word == EOS:
            continue
        entry = lexicon.setdefault(word.lower() if lowercase else word, {})
        if tag is not None:
            entry[tag] = None
    if not any(lexicon.values()):
        raise MemlensError(f"{path}: no token has a {tagset.upper()} tag (every one is '_'): "
                           f"no lexicon (try --tagset {'upos' if tagset == 'xpos' else 'xpos'})")
    return {word: list(tags) for word, tags in lexicon.items()}


def load_lexicon(path: str | os.PathLike, tagset: str | None = None, lowercase: bool = False
                 ) -> dict[str, list[str]]:
    """{word: [tags]} of a word -> possible-tags file (:func:`read_lexicon`) or of a CoNLL-U
    file (:func:`is_conllu`; the tags seen per word, :func:`lexicon_from_conllu`, column
    ``tagset``, default xpos). ``tagset`` and ``lowercase`` apply to a CoNLL-U file only
    (given for a lexicon file: one line naming the problem)."""
    if is_conllu(path):
        return lexicon_from_conllu(path, tagset or "xpos", lowercase)
    if tagset is not None or lowercase:
        what = "--tagset" if tagset is not None else "lowercase"
        raise MemlensError(f"{what} applies to a CoNLL-U file (lexicon:FILE.conllu); {path} is "
                           "a word -> tags lexicon")
    return read_lexicon(path)


def check_lexicon_words(lexicon: dict[str, list[str]], known, path: str | os.PathLike
                        ) -> list[str]:
    """The words of ``lexicon`` that are not among ``known`` (the model's vocabulary, or the
    corpus' words), at most all of them; a lexicon none of whose words is known is refused
    with one line (its classes would be empty: a lexicon of another language or
    tokenisation)."""
    missing = [w for w in lexicon if w not in known]
    if lexicon and len(missing) == len(lexicon):
        raise MemlensError(f"lexicon file {path}: none of its {len(lexicon)} words is in the "
                           f"model's vocabulary or the corpus (e.g. {missing[0][:40]!r})")
    return missing


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
