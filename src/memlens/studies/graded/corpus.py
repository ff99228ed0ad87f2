"""The graded-importance corpus and its fixed embedding geometry.

Every token carries three visible binary features f1, f2, f3, an irrelevant sign z and three
hidden *answer* bits a1, a2, a3 (one word per combination: 2**7 = 128 words). All visible bits
are drawn uniformly and independently at every position; the answer bits of the token at t
copy the features of the token at t - ``lag``: a_i(t) = f_i(t - lag) with probability
``reliabilities[i]``, flipped otherwise. Feature f_i therefore decides the i-th answer bit
``lag`` tokens later with a known, graded reliability (default 0.95 > 0.8 > 0.65), and z
decides nothing.

The embedding table (:func:`graded_embeddings`, fixed during training) puts f_i on
coordinate i at spread ``scales[i]``, z on its own coordinate at spread ``z_scale`` (by far
the largest variance of the table) and ``noise_dims`` coordinates of small Gaussian noise; the
answer bits are not in the embedding (they are what is predicted). The default spreads are
ordered *against* the importance (f1 the widest, f3 the narrowest), so that in raw embedding
space a unit step along f3 is a large step compared with how words differ along it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from memlens.core.errors import MemlensError

#: the planted features, strongest first, and the irrelevant one
FEATURES = ("f1", "f2", "f3")
IRRELEVANT = "z"
Z_COORD = len(FEATURES)


@dataclass
class GradedConfig:
    """Sizes and planted values of the graded-importance study (defaults: about 10 s on 2
    cores).

    Attributes
    ----------
    seed : int
        Seeds the embedding noise, the streams (seed + 1 train, seed + 2 held out) and the model.
    lag : int
        a_i(t) copies f_i(t - lag); the planted delays are 0 .. lag - 1.
    reliabilities : tuple of float
        P(a_i(t) = f_i(t - lag)) per feature, in (0.5, 1]: the planted importance.
    scales, z_scale, noise_scale : float
        Raw spreads of f1..f3, of z and of the noise coordinates.
    noise_dims : int
        Noise coordinates of the embedding.
    arch, hidden : str, int
        The recurrent layer ("lstm", "gru", "rnn") and its size.
    steps, lr, weight_decay, batch, bptt, train_tokens : int or float
        AdamW training: updates, learning rate, decoupled weight decay, batch x bptt tokens
        per update, length of the training stream.
    test_tokens : int
        Length of the held-out stream the state gradients average.
    bootstrap : int
        Block-bootstrap resamples of every interval.
    """

    seed: int = 0
    lag: int = 2                                   # a_i(t) copies f_i(t - lag)
    reliabilities: tuple[float, ...] = (0.95, 0.8, 0.65)
    scales: tuple[float, ...] = (0.5, 0.2, 0.05)   # raw spread of f1, f2, f3
    z_scale: float = 4.0                           # raw spread of the irrelevant z
    noise_dims: int = 4
    noise_scale: float = 0.2
    arch: str = "lstm"
    hidden: int = 24
    steps: int = 3000                              # Adam(W) updates
    lr: float = 0.01
    weight_decay: float = 0.1
    batch: int = 32
    bptt: int = 25
    train_tokens: int = 200_000
    test_tokens: int = 8000                        # the stream the state gradients average
    bootstrap: int = 200                           # block-bootstrap resamples (20 blocks)

    def check(self) -> None:
        """Refuse values the study cannot run with (one-line :class:`MemlensError`)."""
        m = len(FEATURES)
        if len(self.reliabilities) != m or len(self.scales) != m:
            raise MemlensError(f"graded study: reliabilities and scales need {m} values each")
        if not all(0.5 < p <= 1 for p in self.reliabilities):
            raise MemlensError("graded study: reliabilities must be in (0.5, 1]")
        if not all(s > 0 for s in (*self.scales, self.z_scale, self.noise_scale)):
            raise MemlensError("graded study: scales must be positive")
        for key in ("lag", "hidden", "steps", "batch", "bptt", "train_tokens", "test_tokens"):
            if getattr(self, key) < 1:
                raise MemlensError(f"graded study: {key} must be positive")
        if self.arch not in ("lstm", "gru", "rnn"):
            raise MemlensError(f"graded study: architecture {self.arch!r}: choose lstm, gru "
                               "or rnn")

    @property
    def emb(self) -> int:
        """Embedding size: the features, z and the noise coordinates."""
        return len(FEATURES) + 1 + self.noise_dims

    @property
    def max_delay(self) -> int:
        """Delays analysed: the planted ones (0 .. lag - 1) and three beyond."""
        return self.lag + 2


def graded_words() -> np.ndarray:
    """The bits of every word, one row per word id: a1 a2 a3 f1 f2 f3 z (128 x 7, 0/1)."""
    return np.array(list(itertools.product((0, 1), repeat=2 * len(FEATURES) + 1)))


def word_ids(bits: np.ndarray) -> np.ndarray:
    """The word id of each row of bits (the row's index in :func:`graded_words`)."""
    return bits @ (1 << np.arange(bits.shape[1] - 1, -1, -1))


def graded_embeddings(cfg: GradedConfig) -> np.ndarray:
    """The fixed embedding table (128 x emb): f_i at +-``scales[i]``, z at +-``z_scale``,
    Gaussian noise of spread ``noise_scale`` (seeded) on the last ``noise_dims``."""
    bits = graded_words()
    m = len(FEATURES)
    table = np.zeros((len(bits), cfg.emb))
    table[:, :m] = (2 * bits[:, m:2 * m] - 1) * np.asarray(cfg.scales)
    table[:, Z_COORD] = (2 * bits[:, 2 * m] - 1) * cfg.z_scale
    rng = np.random.default_rng(cfg.seed)
    table[:, m + 1:] = rng.normal(0.0, cfg.noise_scale, (len(bits), cfg.noise_dims))
    return table


def graded_stream(cfg: GradedConfig, n: int, seed: int) -> np.ndarray:
    """``n`` word ids of the planted stream.

    Parameters
    ----------
    cfg : GradedConfig
        The planted lag and reliabilities.
    n : int
        Tokens.
    seed : int
        Seed of the stream's generator.

    Returns
    -------
    numpy.ndarray
        ``n`` word ids (rows of :func:`graded_words`).
    """
    rng = np.random.default_rng(seed)
    m = len(FEATURES)
    f = rng.integers(0, 2, (n, m))
    z = rng.integers(0, 2, (n, 1))
    a = rng.integers(0, 2, (n, m))          # the first ``lag`` answers: nothing to copy
    keep = rng.random((n, m)) < np.asarray(cfg.reliabilities)
    L = cfg.lag
    if n > L:
        a[L:] = np.where(keep[L:], f[:-L], 1 - f[:-L])
    return word_ids(np.concatenate([a, f, z], axis=1))


def planted_directions(table: np.ndarray) -> dict[str, np.ndarray]:
    """Raw-space direction of each feature (mean embedding of the words with the bit set
    minus that of the others) and of z."""
    bits = graded_words()
    m = len(FEATURES)
    out = {}
    for i, name in enumerate((*FEATURES, IRRELEVANT)):
        on = bits[:, m + i] == 1
        out[name] = table[on].mean(0) - table[~on].mean(0)
    return out


def answer_floor_nats(cfg: GradedConfig) -> float:
    """The best possible next-token loss (nats): four free bits (features, z) plus the
    binary entropy of each answer bit."""
    p = np.asarray(cfg.reliabilities, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log(p) + np.where(p < 1, (1 - p) * np.log(1 - p), 0.0))
    return float((len(FEATURES) + 1) * np.log(2) + np.nan_to_num(h).sum())


__all__ = ["FEATURES", "IRRELEVANT", "GradedConfig", "answer_floor_nats", "graded_embeddings",
           "graded_stream", "graded_words", "planted_directions", "word_ids"]
