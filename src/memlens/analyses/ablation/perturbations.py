"""The perturbations of context ablation: what happens to the tokens farther than k.

For a target x_t the model reads the window w = (x_{t-L}, ..., x_{t-1}) of L tokens; at
distance k the last k tokens w[L-k:] = x_{t-k} .. x_{t-1} stay intact and the *far* part
w[:L-k] (the f = L - k tokens at positions < t - k) is perturbed. A perturbation maps
(w, k, rng, context) to the window the model reads instead:

* :class:`Shuffle` ``"shuffle"``: w'[:f] = w[:f][pi], pi a uniform random permutation of
  0..f-1 (same words, order lost);
* :class:`Replace` ``"replace"``: w'[:f] = f independent draws from the unigram distribution
  (default: the analysed stream's token frequencies);
* :class:`Drop` ``"drop"``: w' = w[f:], the last k tokens only (a truncated context, read from a
  zero state); its width is k, not L;
* :class:`Swap` ``"swap"`` (not in the default set): w'[:f] = v[:f], the same window slots of
  the window v of *another* target, chosen uniformly among the other N - 1 analysed targets:
  real text of the same stream, in its own order and at the same offsets from its own target,
  but unrelated to this one.

The interface is :class:`Perturbation` (``name``, ``perturb``, optionally ``width``,
``uses_unigram``, ``min_targets``) and the registry :data:`PERTURBATIONS` maps each name to
one instance. A new perturbation is one class plus one registry entry::

    class Reverse(Perturbation):
        name = "reverse"

        def perturb(self, window, k, rng, context):
            out = window.copy()
            out[:len(window) - k] = window[:len(window) - k][::-1]
            return out

    PERTURBATIONS["reverse"] = Reverse()

Randomness: :func:`memlens.context_ablation` gives every (perturbation, target position t,
distance k) its own generator ``numpy.random.default_rng([seed, code, t, k])``, with ``code``
the perturbation's position in :data:`PERTURBATIONS` (:func:`seed_code`: shuffle 0, replace 1,
drop 2, swap 3, then the added ones in the order they were added), so the numbers do not
depend on batching, on the order of the options or on the other targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memlens.core.errors import MemlensError


@dataclass(frozen=True)
class PerturbationContext:
    """What a perturbation may read besides the window: the analysed stream and targets.

    ``stream``: the T ids; ``positions``: the N target positions (sorted); ``index``: this
    target's index in ``positions``; ``length``: the window length L; ``unigram_cdf``: the
    cumulative unigram distribution over 0..V-1 (filled when a requested perturbation has
    ``uses_unigram``; None otherwise).
    """

    stream: np.ndarray
    positions: np.ndarray
    index: int
    length: int
    unigram_cdf: np.ndarray | None = None

    def window(self, j: int) -> np.ndarray:
        """The window of target j: stream[p_j - L : p_j] (L ids)."""
        p = int(self.positions[j])
        return self.stream[p - self.length:p]

    def other_window(self, rng: np.random.Generator) -> np.ndarray:
        """The window of another target o = (index + U) mod N, U = ``rng.integers(1, N)``
        uniform in 1..N-1: never this target (one draw from ``rng``)."""
        n = len(self.positions)
        return self.window((self.index + int(rng.integers(1, n))) % n)


class Perturbation:
    """One way of perturbing the far context (see module docstring).

    Subclasses set ``name`` and write :meth:`perturb`; ``width`` (default L) is the number of
    tokens the perturbed window holds (it must not depend on the randomness: contexts of one
    width are batched together); ``uses_unigram``: :meth:`perturb` reads
    ``context.unigram_cdf``; ``min_targets``: the fewest targets it can work with.
    """

    name: str = ""
    uses_unigram: bool = False
    min_targets: int = 1

    def width(self, length: int, k: int) -> int:  # noqa: ARG002 - k used by subclasses
        """Tokens in the window read at distance k of a window of ``length`` L (default L)."""
        return length

    def perturb(self, window: np.ndarray, k: int, rng: np.random.Generator,
                context: PerturbationContext) -> np.ndarray:
        """The window read at distance k: ``window`` (L int64 ids x_{t-L} .. x_{t-1}, not to
        be modified) with its first L - k tokens perturbed; ``width(L, k)`` ids. ``rng``: this
        (target, distance)'s own generator."""
        raise NotImplementedError

    def check_targets(self, n: int) -> None:
        """Refuse ``n`` analysed targets when fewer than ``min_targets``."""
        if n < self.min_targets:
            raise MemlensError(f"the {self.name} perturbation needs at least "
                               f"{self.min_targets} targets, got {n}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Shuffle(Perturbation):
    """w'[:f] = w[:f][rng.permutation(f)]: the far tokens in a random order."""

    name = "shuffle"

    def perturb(self, window, k, rng, context):
        far = len(window) - k
        out = window.copy()
        out[:far] = window[:far][rng.permutation(far)]
        return out


class Replace(Perturbation):
    """w'[:f] = searchsorted(cdf, u, "right"), u = f uniform draws in [0, 1): f independent
    tokens from the unigram distribution P(v) = cdf[v] - cdf[v - 1]."""

    name = "replace"
    uses_unigram = True

    def perturb(self, window, k, rng, context):
        if context.unigram_cdf is None:
            raise MemlensError("replace needs the unigram distribution (context.unigram_cdf)")
        far = len(window) - k
        out = window.copy()
        out[:far] = np.searchsorted(context.unigram_cdf, rng.random(far), side="right")
        return out


class Drop(Perturbation):
    """w' = w[L-k:]: only the k nearest tokens, read from a zero state (no randomness)."""

    name = "drop"

    def width(self, length, k):
        return k

    def perturb(self, window, k, rng, context):
        return window[len(window) - k:]


class Swap(Perturbation):
    """w'[:f] = v[:f] with v = ``context.other_window(rng)``, the window of another target
    (uniform among the other N - 1): real, in-distribution text unrelated to this target."""

    name = "swap"
    min_targets = 2

    def perturb(self, window, k, rng, context):
        far = len(window) - k
        other = context.other_window(rng)
        if len(other) != len(window):
            raise MemlensError("swap needs another target's window of the same length")
        out = window.copy()
        out[:far] = other[:far]
        return out

    def check_targets(self, n):
        if n < self.min_targets:
            raise MemlensError("the swap perturbation needs at least 2 targets (it takes the "
                               "far context of another target)")


# every known perturbation, by name; the order fixes the seed codes (seed_code)
PERTURBATIONS: dict[str, Perturbation] = {"shuffle": Shuffle(), "replace": Replace(),
                                          "drop": Drop(), "swap": Swap()}
DEFAULT_PERTURBATIONS = ("shuffle", "replace", "drop")


def seed_code(name: str) -> int:
    """The perturbation's code in the seed [seed, code, t, k]: its position in
    :data:`PERTURBATIONS`."""
    return list(PERTURBATIONS).index(name)


def get_perturbation(name: str) -> Perturbation:
    """The registered perturbation ``name``, or a one-line error listing the known ones."""
    p = PERTURBATIONS.get(name)
    if p is None:
        raise MemlensError(f"unknown perturbation {name!r}: choose from "
                           f"{', '.join(PERTURBATIONS)}")
    if not isinstance(p, Perturbation):
        raise MemlensError(f"PERTURBATIONS[{name!r}] is not a Perturbation: {p!r}")
    return p


def unigram_cdf(ids: np.ndarray, vocab_size: int, unigram=None) -> np.ndarray:
    """Cumulative unigram distribution over 0..V-1: cdf[v] = sum_{u <= v} p(u) with
    p = ``unigram`` (V non-negative weights) normalised, or the counts of ``ids``; cdf[-1] = 1
    exactly."""
    if unigram is None:
        p = np.bincount(ids, minlength=vocab_size).astype(np.float64)
    else:
        try:
            p = np.asarray(unigram, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            p = np.array([np.nan])
        if p.size != vocab_size or not np.isfinite(p).all() or (p < 0).any():
            raise MemlensError(f"unigram= must hold {vocab_size} non-negative finite weights")
    if p.sum() <= 0:
        raise MemlensError("the unigram distribution is empty")
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    return cdf


__all__ = ["DEFAULT_PERTURBATIONS", "PERTURBATIONS", "Drop", "Perturbation",
           "PerturbationContext", "Replace", "Shuffle", "Swap", "get_perturbation",
           "seed_code", "unigram_cdf"]
