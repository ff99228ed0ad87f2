"""Symbol sets: which classes the decoders predict for each token.

* ``chars`` (also the default for character models and wrapped models): every token id that
  occurs in the decoder-training stream is its own class.
* ``top:N``: the N most frequent token types of the decoder-training stream, plus one
  ``<other>`` class for every other token.
* ``upos``: the universal part-of-speech tag of each token (CoNLL-U); tokens without a tag
  (``<eos>``) are excluded.
* ``labels``: labels given per position (e.g. the grapheme spoken at each frame of a speech
  encoder, or a class per token); positions labelled None are excluded.

A class id of -1 means "excluded" (no tag, or a held-out symbol never seen in training: the
decoder cannot predict a class it has never been shown).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memlens.core.errors import MemlensError

OTHER = "<other>"


@dataclass
class SymbolSet:
    """``kind`` (chars/top/upos), class ``names`` (C) and the id/tag -> class mapping."""

    kind: str
    names: list[str]
    id_to_class: dict[int, int] | None = None   # chars / top
    tag_to_class: dict[str, int] | None = None  # upos / labels
    other: int | None = None                    # class of unlisted ids (top:N)

    @property
    def size(self) -> int:
        return len(self.names)

    def classes(self, ids: np.ndarray, tags: Sequence[str | None] | None = None) -> np.ndarray:
        """Class id per token (int64, -1 = excluded)."""
        if self.kind in ("upos", "labels"):
            if tags is None:
                raise MemlensError(f"symbols {self.kind!r} need a label (tag) per position")
            m = self.tag_to_class or {}
            return np.array([m.get(t, -1) if t is not None else -1 for t in tags],
                            dtype=np.int64)
        m = self.id_to_class or {}
        default = -1 if self.other is None else self.other
        lut_size = int(max(max(m, default=0), int(ids.max(initial=0)))) + 1
        lut = np.full(lut_size, default, dtype=np.int64)
        for i, c in m.items():
            lut[i] = c
        return lut[np.asarray(ids, dtype=np.int64)]


def parse_symbols(spec: str | None, unit: str) -> tuple[str, int | None]:
    """``None``/``chars``/``top:N``/``upos`` -> (kind, N). Word models default to top:1000."""
    if spec is None:
        spec = "chars" if unit != "word" else "top:1000"
    if spec in ("chars", "upos"):
        return spec, None
    if spec.startswith("top:"):
        try:
            n = int(spec[4:])
        except ValueError:
            n = 0
        if n < 1:
            raise MemlensError(f"bad symbols spec {spec!r}: top:N needs a positive integer N")
        return "top", n
    raise MemlensError(f"unknown symbols {spec!r}: choose chars, top:N or upos")


def build_symbols(spec: str | None, unit: str, train_ids: np.ndarray,
                  train_tags: Sequence[str | None] | None = None,
                  itos: Sequence[str] | None = None) -> SymbolSet:
    """Build the symbol set from the decoder-training stream (ids, and tags for upos)."""
    kind, n = parse_symbols(spec, unit)

    def name(i: int) -> str:
        return itos[i] if itos is not None and i < len(itos) else str(i)

    if kind == "upos":
        if train_tags is None:
            raise MemlensError("symbols 'upos' need a CoNLL-U corpus with UPOS tags "
                               "(use --format conllu)")
        tags = sorted({t for t in train_tags if t is not None})
        if not tags:
            raise MemlensError("the training corpus has no UPOS tags")
        return SymbolSet("upos", tags, tag_to_class={t: i for i, t in enumerate(tags)})
    counts = Counter(np.asarray(train_ids).tolist())
    if kind == "chars":
        order = sorted(counts, key=lambda i: (-counts[i], i))
        return SymbolSet("chars", [name(i) for i in order],
                         id_to_class={i: c for c, i in enumerate(order)})
    order = sorted(counts, key=lambda i: (-counts[i], i))[:n]
    names = [name(i) for i in order]
    other = None
    if len(order) < len(counts):
        names.append(OTHER)
        other = len(order)
    return SymbolSet("top", names, id_to_class={i: c for c, i in enumerate(order)},
                     other=other)


def label_symbols(train_labels: Sequence) -> SymbolSet:
    """Symbol set of per-position labels (most frequent first; None = excluded)."""
    counts = Counter(str(t) for t in train_labels if t is not None)
    if not counts:
        raise MemlensError("the training labels are all None: nothing to decode")
    names = sorted(counts, key=lambda t: (-counts[t], t))
    return SymbolSet("labels", names, tag_to_class={t: i for i, t in enumerate(names)})


def label_strings(labels: Sequence) -> list[str | None]:
    """Labels as strings (None stays None), the form :meth:`SymbolSet.classes` matches."""
    return [None if t is None else str(t) for t in labels]
