"""Word classes for class-conditional state gradients: one list of class names per token.

Spec strings (the CLI's ``--classes``):

* ``upos`` / ``xpos``: the CoNLL-U tag of each token (``<eos>`` and untagged tokens: no class).
* ``groups:FILE``: tag groups (``nouns NN NNS NNP NNPS`` per line); a token belongs to every
  group that lists its tag. The tag column (UPOS or XPOS) is the one the groups match best.
* ``lexicon:FILE``: a word -> possible-tags file (plain ``word<TAB>tags`` or the original's
  ``word ['NN', 'VBN|JJ']`` / ``word not in list`` format, see :mod:`memlens.data.lexicon`); a
  word counts for every class among its tags (as in the original). A CoNLL-U FILE (named
  ``*.conllu``, or with CoNLL-U token lines) gives the lexicon of the tags each word is seen
  with in it (:func:`memlens.data.lexicon.lexicon_from_conllu`; column ``tagset``, the CLI's
  ``--tagset``: xpos, the default, or upos), e.g. ``lexicon:en_ewt-ud-train.conllu``.
* ``SOURCE+groups:FILE`` with SOURCE = ``lexicon:FILE``, ``upos`` or ``xpos``: the tag groups
  of FILE applied to the tags of SOURCE; a token belongs to every group that lists one of its
  (possible) tags, once per group. ``lexicon:ptb_words+pos.txt+groups:nouns_verbs.txt`` is the
  original's ``avg_gradient_matrix_pos.py`` class selection (a word counts if any of its tags
  is in the class). The split is at the last ``+groups:``, so file names may contain ``+``.
* ``freq:N``: N frequency bins of equal training-token mass from the model's training counts
  (bin 1 = most frequent words); ``freq:E1,E2,...``: bins by training count [E_i, E_i+1).
* ``words:FILE[,FILE...]``: one class per word-list file (named after the file).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from memlens.core.errors import MemlensError
from memlens.data import read_groups, read_word_list
from memlens.data.lexicon import check_lexicon_words, is_conllu, load_lexicon
from memlens.data.vocab import EOS, UNK

KINDS = ("upos", "xpos", "groups", "lexicon", "freq", "words")


GROUPS_SUFFIX = "+groups:"


def split_groups(spec: str) -> tuple[str, str | None]:
    """``SOURCE+groups:FILE`` -> (SOURCE, FILE); any other spec -> (spec, None)."""
    base, sep, groups = spec.rpartition(GROUPS_SUFFIX)
    if not sep:
        return spec, None
    if not groups:
        raise MemlensError(f"--classes {spec!r}: +groups: needs a file (+groups:FILE)")
    if base not in ("upos", "xpos") and not base.startswith("lexicon:"):
        raise MemlensError(f"--classes {spec!r}: +groups:FILE applies to the tags of "
                           "lexicon:FILE, upos or xpos")
    return base, groups


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``kind[:arg]`` and check it; returns (kind, arg) (of SOURCE for
    ``SOURCE+groups:FILE``)."""
    spec, _ = split_groups(spec)
    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise MemlensError(f"unknown class specification {spec!r}: choose upos, xpos, "
                           "groups:FILE, lexicon:FILE[+groups:FILE], freq:N or "
                           "freq:E1,E2,..., words:FILE")
    if kind in ("groups", "lexicon", "words", "freq") and not arg:
        raise MemlensError(f"--classes {kind} needs an argument ({kind}:...)")
    return kind, arg


def _warn(msg: str, log: Callable[[str], None] | None) -> None:
    if log is not None:
        log(f"memlens: warning: {msg}")
    else:
        warnings.warn(msg, stacklevel=3)


def token_classes(spec: str, tokens: Sequence[str], tags: dict[str, list] | None = None,
                  vocab=None, log: Callable[[str], None] | None = None,
                  tagset: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Return (class names in order, classes of each token) for a spec string.

    ``tags`` are the corpus annotations (``Corpus.tags``); ``vocab`` (a memlens Vocab) is needed
    for ``freq``. Classes named by a file that never occur are kept (count zero) with a warning.
    ``tagset``: the tag column of a CoNLL-U ``lexicon:FILE`` (None: xpos); refused for any
    other spec.
    """
    base, groups_file = split_groups(spec)
    if groups_file is not None:
        # unused source tags are expected here (the groups report their own missing tags)
        _, per_token = token_classes(base, tokens, tags, vocab, log=lambda _msg: None,
                                     tagset=tagset)
        return _apply_groups(read_groups(groups_file), per_token, log)
    kind, arg = parse_spec(spec)
    if tagset is not None and not (kind == "lexicon" and is_conllu(arg)):
        raise MemlensError(f"--tagset applies to --classes lexicon:FILE.conllu (the tags seen "
                           f"per word in a CoNLL-U file), not to --classes {spec}")
    tags = tags or {}
    if kind in ("upos", "xpos"):
        column = tags.get(kind)
        if column is None:
            raise MemlensError(f"--classes {kind} needs a CoNLL-U corpus (--format conllu)")
        names = sorted({t for t in column if t is not None and t != "_"})
        if not names:
            raise MemlensError(f"--classes {kind}: the corpus has no {kind.upper()} tags "
                               "(every one is '_')")
        return names, [[t] if t is not None and t != "_" else [] for t in column]
    if kind == "groups":
        groups = read_groups(arg)
        if not tags:
            raise MemlensError("--classes groups needs a tagged corpus (--format conllu); for "
                               "a word -> tags file use lexicon:FILE+groups:FILE")
        all_tags = {k: {t for t in col if t is not None} for k, col in tags.items()}
        wanted = {t for g in groups.values() for t in g}
        column_name = max(all_tags, key=lambda k: len(wanted & all_tags[k]))
        return _apply_groups(groups, [[t] if t is not None else [] for t in tags[column_name]],
                             log)
    if kind == "lexicon":
        lexicon = load_lexicon(arg, tagset)
        check_lexicon_words(lexicon, set(tokens) | set(getattr(vocab, "stoi", ())), arg)
        names = sorted({t for ts in lexicon.values() for t in ts})
        per_token = [list(lexicon.get(w, [])) for w in tokens]
        seen = {c for cs in per_token for c in cs}
        unused = [n for n in names if n not in seen]
        if unused:
            _warn(f"lexicon tag(s) {' '.join(unused[:10])} never occur in the corpus "
                  "(count zero)", log)
        return names, per_token
    if kind == "words":
        names, per_word = [], {}
        for f in arg.split(","):
            name = Path(f).stem
            if name in names:
                raise MemlensError(f"two word lists are named {name!r}")
            names.append(name)
            for w in read_word_list(f):
                per_word.setdefault(w, [])
                if name not in per_word[w]:
                    per_word[w].append(name)
        per_token = [list(per_word.get(w, [])) for w in tokens]
        seen = {c for cs in per_token for c in cs}
        for n in names:
            if n not in seen:
                _warn(f"no word of word list {n!r} occurs in the corpus (count zero)", log)
        return names, per_token
    return _frequency_classes(arg, tokens, vocab)


def _apply_groups(groups: dict[str, list[str]], per_token_tags: Sequence[Sequence[str]],
                  log: Callable[[str], None] | None) -> tuple[list[str], list[list[str]]]:
    """Group names (file order) and, per token, every group listing one of its tags (once
    each, file order); warns about group tags that no token has."""
    present = {t for ts in per_token_tags for t in ts}
    by_tag: dict[str, list[str]] = {}
    for name, members in groups.items():
        missing = [t for t in members if t not in present]
        if missing:
            _warn(f"group {name!r}: tag(s) {' '.join(missing)} never occur in the corpus", log)
        for t in members:
            by_tag.setdefault(t, []).append(name)
    rank = {name: k for k, name in enumerate(groups)}
    per_token = [sorted({g for t in ts for g in by_tag.get(t, ())}, key=rank.__getitem__)
                 for ts in per_token_tags]
    return list(groups), per_token


def _frequency_classes(arg: str, tokens: Sequence[str], vocab) -> tuple[list[str],
                                                                       list[list[str]]]:
    """Frequency bins of the vocabulary's words by training count (the vocabulary's counts;
    for a user vocabulary without counts, the counts in the analysed corpus)."""
    if vocab is None:
        raise MemlensError("--classes freq needs the model's vocabulary (give --vocab FILE)")
    special = vocab.specials | {UNK, EOS}
    if vocab.counts is not None:
        counts = np.asarray(vocab.counts, dtype=np.float64)
    else:
        counts = np.zeros(len(vocab))
        for w in tokens:
            i = vocab.stoi.get(w)
            if i is not None:
                counts[i] += 1
    words = [i for i, s in enumerate(vocab.itos) if s not in special]
    if "," in arg or "." in arg:
        try:
            edges = sorted(float(e) for e in arg.split(","))
        except ValueError:
            raise MemlensError(f"bad frequency edges {arg!r}: give numbers like 1,10,100"
                               ) from None
        if len(edges) < 2:
            raise MemlensError("frequency edges need at least two numbers")
        names = [f"freq[{edges[i]:g},{edges[i + 1]:g})" for i in range(len(edges) - 1)]
        word_bin = {}
        for i in words:
            k = int(np.searchsorted(edges, counts[i], side="right")) - 1
            if 0 <= k < len(names):
                word_bin[i] = k
    else:
        try:
            n = int(arg)
        except ValueError:
            raise MemlensError(f"bad number of frequency bins {arg!r}") from None
        if not 1 <= n <= max(1, len(words)):
            raise MemlensError(f"number of frequency bins must be in 1..{len(words)} (the "
                               f"model's vocabulary has {len(words)} words), got {n}")
        # words by descending training count (ties: id order): bins of equal token mass
        ranked = sorted(words, key=lambda i: (-counts[i], i))
        c = counts[ranked]
        mass = np.cumsum(c) / max(c.sum(), 1)
        bins = np.minimum((mass * n - 1e-12).astype(int), n - 1)
        word_bin = dict(zip(ranked, bins.tolist()))
        names = [f"freq{k + 1}of{n}" for k in range(n)]

    per_token: list[list[str]] = []
    for w in tokens:
        i = vocab.stoi.get(w)
        k = word_bin.get(i) if i is not None and w not in special else None
        per_token.append([names[k]] if k is not None else [])
    return names, per_token


def encode_memberships(names: Sequence[str], per_token: Sequence[Sequence[str] | str | None]
                       ) -> list[list[int]]:
    """Class names per token -> class indices per token (unknown names are an error)."""
    index = {n: i for i, n in enumerate(names)}
    out: list[list[int]] = []
    for labels in per_token:
        if labels is None:
            out.append([])
            continue
        if isinstance(labels, str):
            labels = [labels]
        row = []
        for lab in labels:
            if lab not in index:
                raise MemlensError(f"class {lab!r} is not among the declared classes")
            if index[lab] not in row:
                row.append(index[lab])
        out.append(row)
    return out
