"""Count-based n-gram language model with interpolated Kneser-Ney smoothing, and its state.

Probability of symbol w after context h (the previous n-1 symbols), order o = |h| + 1:

    P_o(w | h) = max(c_o(h w) - D_o, 0) / c_o(h .)  +  D_o N1+(h .) / c_o(h .) * P_{o-1}(w | h')

where h' drops the oldest symbol of h, c_n are raw counts at the highest order and c_o (o < n)
are continuation counts |{v : c(v h w) > 0}|; D_o = n1 / (n1 + 2 n2) from the count-of-counts
of order o; a context never seen falls back to P_{o-1}; P_0(w) = 1 / V (V = training symbol
types + <unk>). The stream is treated as one sequence (no padding): the first symbols use the
shorter contexts available.

The model's *state* after reading x_t is its context window (x_t, x_{t-1}, ..., x_{t-n+2}):
for the signature it is the concatenation of n-1 one-hot vectors, stored as indices
(:class:`~memlens.models.states.IndexStates`), slot j holding x_{t-j} or a "before the
start" marker. Its memory is exact for lags k < n-1 and zero beyond.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from memlens.core.errors import MemlensError
from memlens.models.states import IndexStates

UNK = "<unk>"


class KneserNeyLM:
    """Interpolated Kneser-Ney n-gram LM over a symbol stream (see module docstring)."""

    def __init__(self, order: int = 5):
        if not isinstance(order, int) or order < 1:
            raise MemlensError(f"n-gram order must be a positive integer, got {order!r}")
        self.order = order

    def fit(self, tokens: Sequence[str]) -> KneserNeyLM:
        n = self.order
        if len(tokens) < n:
            raise MemlensError(f"training text of {len(tokens)} tokens is too short for a "
                               f"{n}-gram model")
        self.itos = [UNK] + sorted(set(tokens) - {UNK})
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        ids = [self.stoi[t] for t in tokens]
        self.vocab_size = len(self.itos)
        grams = Counter(tuple(ids[i:i + n]) for i in range(len(ids) - n + 1))
        tables: list[dict] = [None] * (n + 1)  # type: ignore[list-item]
        level: Counter = grams
        for o in range(n, 0, -1):
            table: dict[tuple, dict[int, int]] = defaultdict(dict)
            for g, c in level.items():
                table[g[:-1]][g[-1]] = c
            tables[o] = table
            if o > 1:
                lower: Counter = Counter()
                for g in level:
                    lower[g[1:]] += 1
                level = lower
        self.tables = []
        self.discount = [0.0] * (n + 1)
        for o in range(1, n + 1):
            t = tables[o]
            coc = Counter(c for d in t.values() for c in d.values())
            n1, n2 = coc.get(1, 0), coc.get(2, 0)
            self.discount[o] = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5
        self.stats = [None] + [{h: (d, sum(d.values()), len(d)) for h, d in tables[o].items()}
                               for o in range(1, n + 1)]
        self.train_tokens = len(tokens)
        return self

    def encode(self, tokens: Sequence[str]) -> list[int]:
        get = self.stoi.get
        return [get(t, 0) for t in tokens]

    def prob(self, history: tuple[int, ...], w: int) -> float:
        """P(w | history); ``history`` may be shorter than n-1 at the stream start."""
        p = 1.0 / self.vocab_size
        for o in range(1, min(len(history), self.order - 1) + 2):
            h = history[len(history) - (o - 1):] if o > 1 else ()
            entry = self.stats[o].get(h)
            if entry is None:
                continue
            d, total, types = entry
            dsc = self.discount[o]
            p = max(d.get(w, 0) - dsc, 0.0) / total + dsc * types / total * p
        return p

    def cross_entropy(self, tokens: Sequence[str]) -> float:
        """Mean -log2 P(x_t | previous symbols) over ``tokens`` (bits per symbol)."""
        ids = self.encode(tokens)
        if not ids:
            raise MemlensError("cannot evaluate an n-gram model on an empty text")
        m = self.order - 1
        total = 0.0
        for t, w in enumerate(ids):
            total -= math.log2(self.prob(tuple(ids[max(0, t - m):t]), w))
        return total / len(ids)

    def evaluate(self, tokens: Sequence[str]) -> dict[str, float]:
        bits = self.cross_entropy(tokens)
        oov = sum(1 for t in tokens if t not in self.stoi) / max(len(tokens), 1)
        return {"tokens": len(tokens), "bits": bits, "perplexity": 2.0 ** bits,
                "oov_rate": oov}


def window_states(ids: np.ndarray, order: int, vocab_size: int) -> IndexStates:
    """The n-gram state (x_t, ..., x_{t-n+2}) as one-hot indices: N x (n-1).

    Slot j uses indices j*(V+1) .. j*(V+1)+V; index j*(V+1)+V marks "before the start".
    """
    if order < 2:
        raise MemlensError("an n-gram window state needs order >= 2")
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise MemlensError(f"ids must be in 0..{vocab_size - 1}")
    n, m, width = len(ids), order - 1, vocab_size + 1
    idx = np.empty((n, m), dtype=np.int64)
    for j in range(m):
        col = np.full(n, vocab_size, dtype=np.int64)
        col[j:] = ids[: n - j] if j < n else col[j:]
        idx[:, j] = j * width + col
    return IndexStates(idx, m * width)
