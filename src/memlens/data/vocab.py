"""Vocabulary: symbol <-> id with a size cap and/or minimum frequency, ``<unk>`` and ``<eos>``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from memlens.errors import MemlensError

UNK = "<unk>"
EOS = "<eos>"


@dataclass
class Vocab:
    """Symbols in id order; ``counts[i]`` is the training count of symbol i.

    Id 0 is ``<unk>`` and id 1 is ``<eos>``; the rest are sorted by descending frequency
    (ties by first occurrence), so frequency bins can be read off id ranges.
    """

    itos: list[str]
    counts: list[int]
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        if len(self.itos) != len(self.counts):
            raise MemlensError("vocabulary symbols and counts differ in length")
        if self.itos[:2] != [UNK, EOS]:
            raise MemlensError("vocabulary must start with <unk>, <eos>")
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise MemlensError("vocabulary has duplicate symbols")

    @classmethod
    def build(cls, tokens: Iterable[str], max_size: int | None = None,
              min_freq: int = 1) -> Vocab:
        """Count ``tokens`` and keep the most frequent (at most ``max_size`` incl. specials)."""
        if max_size is not None and max_size < 3:
            raise MemlensError(f"vocabulary size must be at least 3 (<unk>, <eos>, one symbol), "
                               f"got {max_size}")
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
    def unk_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return 1

    def encode(self, tokens: Sequence[str]) -> torch.Tensor:
        """Map symbols to a 1-D LongTensor of ids (unknown symbols -> ``<unk>``)."""
        get = self.stoi.get
        return torch.tensor([get(t, 0) for t in tokens], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def oov_rate(self, tokens: Sequence[str]) -> float:
        """Fraction of ``tokens`` (excluding ``<eos>``) that are not in the vocabulary.

        A literal ``<unk>`` in the text counts as out of vocabulary.
        """
        words = [t for t in tokens if t != EOS]
        if not words:
            return 0.0
        return sum(1 for t in words if t == UNK or t not in self.stoi) / len(words)

    def to_dict(self) -> dict:
        return {"itos": list(self.itos), "counts": [int(c) for c in self.counts]}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        return cls(list(d["itos"]), [int(c) for c in d["counts"]])
