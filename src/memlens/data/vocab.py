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
    """Symbols in id order, with their training counts: symbol <-> id.

    A memlens-built vocabulary (:meth:`build`) has id 0 ``<unk>`` and id 1 ``<eos>``, the rest
    sorted by descending frequency (ties by first occurrence). A user's vocabulary
    (:meth:`from_symbols`, e.g. the id order of their own model) has no such requirement:
    ``unk`` names its unknown symbol, or is None, and then a corpus token outside the
    vocabulary is an error. ``len(vocab)`` is the number of symbols; ``vocab.stoi`` maps a
    symbol to its id.

    Parameters
    ----------
    itos : list of str
        The symbols in id order (distinct strings, at most 2**24).
    counts : list of int or None, optional
        ``counts[i]`` is the training count of symbol i (non-negative, one per symbol), or
        None (default) when unknown.
    unk : str or None, optional
        The unknown symbol, which must be in ``itos`` (default ``"<unk>"``); None: none.
    memlens_layout : bool, optional
        Require the memlens layout, ``itos`` starting with ``<unk>``, ``<eos>`` (default
        True).

    Raises
    ------
    MemlensError
        When the symbols are empty, not strings, duplicated, the counts differ in length or
        are negative, ``unk`` is not among the symbols, or the layout is required and absent.
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
        """A user's vocabulary in id order (no memlens layout required).

        Parameters
        ----------
        symbols : sequence of str
            The symbols in id order, e.g. those of the user's own model.
        counts : sequence of int or None, optional
            Training counts, one per symbol (default None: unknown).
        unk : str or None, optional
            The unknown symbol; "auto" (default): ``<unk>`` if present, else none (a token
            outside the vocabulary is then an error when encoding).

        Returns
        -------
        Vocab
            The vocabulary, ``memlens_layout=False``.

        Raises
        ------
        MemlensError
            When the symbols or counts are invalid (see :class:`Vocab`).
        """
        symbols = _symbols(symbols)
        if unk == "auto":
            unk = UNK if UNK in symbols else None
        return cls(symbols, _counts(counts), unk, memlens_layout=False)

    @classmethod
    def read(cls, path) -> Vocab:
        """Read a vocabulary file: one symbol per line in id order.

        Each line is ``symbol`` or ``symbol<TAB>count`` (a count on every line or on none);
        blank lines are skipped. The result is :meth:`from_symbols` of the lines.

        Parameters
        ----------
        path : str or os.PathLike
            The vocabulary file (UTF-8).

        Returns
        -------
        Vocab
            The vocabulary, with the counts when the file gives them.

        Raises
        ------
        MemlensError
            When the file is missing, unreadable, has no symbols, a bad count, or counts on
            some lines only.
        """
        from memlens.core.files import as_path
        from memlens.data.files import read_text

        as_path(path, "path")
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
        """Build a memlens vocabulary from a token stream.

        Ids 0 and 1 are ``<unk>`` and ``<eos>``; then the symbols counted at least
        ``min_freq`` times, by descending count (ties by first occurrence), at most
        ``max_size - 2`` of them. The count of ``<unk>`` is that of the literal ``<unk>``
        tokens plus every token left out.

        Parameters
        ----------
        tokens : iterable of str
            The training tokens.
        max_size : int or None, optional
            The most symbols kept, specials included, 3 <= max_size <= 2**24; None (default):
            no cap.
        min_freq : int, optional
            The least count of a kept symbol, >= 1 (default 1).

        Returns
        -------
        Vocab
            The vocabulary in the memlens layout, with counts.

        Raises
        ------
        MemlensError
            When ``max_size`` or ``min_freq`` is out of range or a token is not a string.
        """
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
        """The id of the unknown symbol, None when the vocabulary has none."""
        return None if self.unk is None else self.stoi[self.unk]

    @property
    def eos_id(self) -> int | None:
        """The id of ``<eos>``, None when the vocabulary has none."""
        return self.stoi.get(EOS)

    @property
    def specials(self) -> set[str]:
        """Symbols that are not words (``<unk>``, ``<eos>``): no class, no frequency bin."""
        return {s for s in (self.unk, EOS) if s is not None and s in self.stoi}

    def encode(self, tokens: Sequence[str]) -> torch.Tensor:
        """Map symbols to ids.

        Parameters
        ----------
        tokens : sequence of str
            The symbols.

        Returns
        -------
        torch.Tensor
            Shape (len(tokens),), dtype long: the id of each symbol; a symbol outside the
            vocabulary maps to the id of the unknown symbol.

        Raises
        ------
        MemlensError
            When a symbol is outside the vocabulary and the vocabulary has no unknown symbol.
        """
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
        """Map ids to symbols.

        Parameters
        ----------
        ids : iterable of int
            Ids, 0 <= id < len(vocab) (ints, numpy integers or a 1-D tensor).

        Returns
        -------
        list of str
            The symbol of each id.
        """
        return [self.itos[int(i)] for i in ids]

    def is_known(self, token: str) -> bool:
        """Whether ``token`` is in the vocabulary and is not the unknown symbol.

        Parameters
        ----------
        token : str
            The symbol.

        Returns
        -------
        bool
            True for a symbol of the vocabulary other than ``unk``.
        """
        return token in self.stoi and token != self.unk

    def oov_rate(self, tokens: Sequence[str]) -> float:
        """Fraction of ``tokens`` (excluding ``<eos>``) that are not in the vocabulary.

        A literal ``<unk>`` in the text counts as out of vocabulary.

        Parameters
        ----------
        tokens : sequence of str
            The symbols of a corpus.

        Returns
        -------
        float
            The out-of-vocabulary share, in [0, 1]; 0.0 when there are no tokens besides
            ``<eos>``.
        """
        words = [t for t in tokens if t != EOS]
        if not words:
            return 0.0
        return sum(1 for t in words if not self.is_known(t)) / len(words)

    def to_dict(self) -> dict:
        """The vocabulary as plain data (JSON- and checkpoint-safe).

        Returns
        -------
        dict
            ``{"itos": [...], "counts": [...] or None}``, plus ``"unk"`` for a vocabulary
            without the memlens layout; :meth:`from_dict` reads it back.
        """
        d = {"itos": list(self.itos),
             "counts": None if self.counts is None else [int(c) for c in self.counts]}
        if not self.memlens_layout:
            d["unk"] = self.unk
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        """Rebuild a vocabulary from :meth:`to_dict`'s output.

        Parameters
        ----------
        d : dict
            ``{"itos": [...], "counts": [...] or None}``, with ``"unk"`` for a user's
            vocabulary (then read with :meth:`from_symbols`).

        Returns
        -------
        Vocab
            The vocabulary.

        Raises
        ------
        MemlensError
            When the symbols or counts are invalid (see :class:`Vocab`).
        """
        counts = d.get("counts")
        counts = None if counts is None else [int(c) for c in counts]
        if "unk" in d:
            return cls.from_symbols(list(d["itos"]), counts, d["unk"])
        return cls(list(d["itos"]), counts)
