"""Vocabulary: symbol <-> id with a size cap and/or minimum frequency, ``<unk>`` and ``<eos>``."""

from __future__ import annotations

import numbers
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from memlens.core.errors import MemlensError
from memlens.core.limits import MAX_VOCAB, check_int

UNK = "<unk>"
EOS = "<eos>"


def _symbols(symbols) -> list[str]:
    """The symbols of a vocabulary: a sequence of strings (a str, a mapping or a symbol that
    is not a str is refused: ``str(3)`` would silently stand for the id of ``3``)."""
    if isinstance(symbols, (str, bytes, dict)) or not hasattr(symbols, "__iter__"):
        raise MemlensError(f"vocabulary symbols must be a list of strings, got "
                           f"{type(symbols).__name__}")
    out = list(symbols)
    if len(out) > MAX_VOCAB:
        raise MemlensError(f"vocabulary has {len(out)} symbols, more than {MAX_VOCAB}")
    bad = next((s for s in out if not isinstance(s, str)), None)
    if bad is not None:
        raise MemlensError(f"vocabulary symbols must be strings, got {type(bad).__name__} "
                           f"{' '.join(repr(bad).split())[:40]}")
    return out


def _counts(counts) -> list[int] | None:
    """Training counts: None, or non-negative integers (one per symbol, checked later)."""
    if counts is None:
        return None
    if isinstance(counts, (str, bytes, dict)) or not hasattr(counts, "__iter__"):
        raise MemlensError(f"vocabulary counts must be a list of integers, got "
                           f"{type(counts).__name__}")
    out = []
    for c in counts:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 0:
            raise MemlensError(f"vocabulary counts must be non-negative integers, got "
                               f"{' '.join(repr(c).split())[:40]}")
        out.append(int(c))
    return out


@dataclass
class Vocab:
    """Symbols in id order; ``counts[i]`` is the training count of symbol i (or None).

    A memlens-built vocabulary has id 0 ``<unk>`` and id 1 ``<eos>``, the rest sorted by
    descending frequency (ties by first occurrence). A user's vocabulary
    (:meth:`from_symbols`, e.g. the id order of their own model) has no such requirement:
    ``unk`` names its unknown symbol, or is None, and then a corpus token outside the
    vocabulary is an error.
    """

    itos: list[str]
    counts: list[int] | None = None
    unk: str | None = UNK
    memlens_layout: bool = True
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.itos, self.counts = _symbols(self.itos), _counts(self.counts)
        if self.unk is not None and not isinstance(self.unk, str):
            raise MemlensError(f"vocabulary unknown symbol must be a string or None, got "
                               f"{type(self.unk).__name__}")
        if self.counts is not None and len(self.itos) != len(self.counts):
            raise MemlensError("vocabulary symbols and counts differ in length")
        if not self.itos:
            raise MemlensError("the vocabulary is empty")
        if self.memlens_layout and self.itos[:2] != [UNK, EOS]:
            raise MemlensError("vocabulary must start with <unk>, <eos>")
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            dup = next(s for i, s in enumerate(self.itos) if self.stoi[s] != i)
            raise MemlensError(f"vocabulary has duplicate symbols (e.g. {dup!r})")
        if self.unk is not None and self.unk not in self.stoi:
            raise MemlensError(f"unknown symbol {self.unk!r} is not in the vocabulary")

    @classmethod
    def from_symbols(cls, symbols: Sequence[str], counts: Sequence[int] | None = None,
                     unk: str | None = "auto") -> Vocab:
        """A user's vocabulary in id order. ``unk="auto"``: ``<unk>`` if present, else none."""
        symbols = _symbols(symbols)
        if unk == "auto":
            unk = UNK if UNK in symbols else None
        return cls(symbols, _counts(counts), unk, memlens_layout=False)

    @classmethod
    def read(cls, path) -> Vocab:
        """A vocabulary file: one symbol per line in id order, optionally ``symbol<TAB>count``."""
        from memlens.data.files import read_text

        symbols, counts = [], []
        for number, line in enumerate(read_text(path, "vocabulary").split("\n"), start=1):
            line = line.rstrip("\r")
            if not line:
                continue
            sym, tab, count = line.partition("\t")
            if tab:
                try:
                    value = int(count)
                except ValueError:
                    value = -1
                if value < 0:
                    raise MemlensError(f"{path}:{number}: bad count {count[:40]!r} (expected "
                                       "symbol<TAB>non-negative integer)")
                counts.append(value)
            symbols.append(sym)
        if not symbols:
            raise MemlensError(f"vocabulary file has no symbols: {path}")
        if counts and len(counts) != len(symbols):
            raise MemlensError(f"{path}: give a count on every line or on none")
        return cls.from_symbols(symbols, counts or None)

    @classmethod
    def build(cls, tokens: Iterable[str], max_size: int | None = None,
              min_freq: int = 1) -> Vocab:
        """Count ``tokens`` and keep the most frequent (at most ``max_size`` incl. specials)."""
        if max_size is not None and not isinstance(max_size, bool) \
                and isinstance(max_size, int) and max_size < 3:
            raise MemlensError(f"vocabulary size must be at least 3 (<unk>, <eos>, one "
                               f"symbol), got {max_size}")
        if max_size is not None:
            check_int(max_size, "vocabulary size", 3, MAX_VOCAB)
        check_int(min_freq, "min_freq", 1, 2**62)
        if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__iter__"):
            raise MemlensError(f"vocabulary tokens must be a sequence of strings, got "
                               f"{type(tokens).__name__}")
        tokens = list(tokens)
        bad = next((t for t in tokens if not isinstance(t, str)), None)
        if bad is not None:
            raise MemlensError(f"vocabulary tokens must be strings, got "
                               f"{type(bad).__name__}")
        counter = Counter(tokens)
        unk, eos = counter.pop(UNK, 0), counter.pop(EOS, 0)
        ranked = [(s, c) for s, c in counter.most_common() if c >= min_freq]
        if max_size is not None:
            ranked = ranked[: max_size - 2]
        kept = {s for s, _ in ranked}
        unk += sum(c for s, c in counter.items() if s not in kept)
        return cls([UNK, EOS] + [s for s, _ in ranked], [unk, eos] + [c for _, c in ranked])

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def unk_id(self) -> int | None:
        return None if self.unk is None else self.stoi[self.unk]

    @property
    def eos_id(self) -> int | None:
        return self.stoi.get(EOS)

    @property
    def specials(self) -> set[str]:
        """Symbols that are not words (``<unk>``, ``<eos>``): no class, no frequency bin."""
        return {s for s in (self.unk, EOS) if s is not None and s in self.stoi}

    def encode(self, tokens: Sequence[str]) -> torch.Tensor:
        """Map symbols to a 1-D LongTensor of ids (unknown symbols -> the unknown symbol)."""
        get = self.stoi.get
        unk = self.unk_id
        if unk is None:
            missing = next((t for t in tokens if t not in self.stoi), None)
            if missing is not None:
                raise MemlensError(f"corpus token {missing!r} is not in the vocabulary and "
                                   "the vocabulary declares no unknown symbol (add <unk>)")
            return torch.tensor([self.stoi[t] for t in tokens], dtype=torch.long)
        return torch.tensor([get(t, unk) for t in tokens], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def is_known(self, token: str) -> bool:
        return token in self.stoi and token != self.unk

    def oov_rate(self, tokens: Sequence[str]) -> float:
        """Fraction of ``tokens`` (excluding ``<eos>``) that are not in the vocabulary.

        A literal ``<unk>`` in the text counts as out of vocabulary.
        """
        words = [t for t in tokens if t != EOS]
        if not words:
            return 0.0
        return sum(1 for t in words if not self.is_known(t)) / len(words)

    def to_dict(self) -> dict:
        d = {"itos": list(self.itos),
             "counts": None if self.counts is None else [int(c) for c in self.counts]}
        if not self.memlens_layout:
            d["unk"] = self.unk
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        counts = d.get("counts")
        counts = None if counts is None else [int(c) for c in counts]
        if "unk" in d:
            return cls.from_symbols(list(d["itos"]), counts, d["unk"])
        return cls(list(d["itos"]), counts)
