"""THE block bootstrap of memlens: contiguous blocks of a stream resampled with replacement.

A per-position statistic (a loss, an accuracy, a gradient) is summed over b contiguous blocks of
the stream; a resample draws b blocks with replacement, represented by its *weights*
w[r, j] = how many times block j was drawn in resample r (each row sums to b). A weighted
statistic of the block sums, e.g. the pooled mean (w @ S) / (w @ N) for block sums S and counts
N, is computed for every resample, and the interval is the (1 - level) / 2 and (1 + level) / 2
quantiles over the resamples (numpy's default linear interpolation).

Pieces (each analysis combines them; the numbers are bit-identical to the analyses' earlier
functions for the same seed):

* :func:`block_edges` / :func:`block_sums`: the blocks of n positions and the sums over them;
* :func:`block_weights`: the resample weights, ``resamples x b`` float64, from
  ``numpy.random.default_rng(seed)`` in one of two draw orders (:data:`DRAWS`);
* :func:`percentile_interval`: the interval of resampled statistics;
* :func:`block_bootstrap`: weights, statistic and interval in one call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from memlens.core.limits import check_memory

# "multinomial": rng.multinomial(b, [1/b]*b, size=resamples) (signatures, ablation);
# "indices": per resample, b indices rng.integers(0, b, b), counted (gradients)
DRAWS = ("multinomial", "indices")


def block_edges(n: int, blocks: int, min_blocks: int = 1) -> np.ndarray:
    """Edges of the contiguous blocks of ``n`` positions: int array of b + 1 edges,
    b = max(min_blocks, min(blocks, n)), edges = floor(linspace(0, n, b + 1)); block j holds
    the positions edges[j] <= t < edges[j + 1]."""
    b = max(min_blocks, min(blocks, n))
    return np.linspace(0, n, b + 1).astype(int)


def block_sums(values: np.ndarray, edges: np.ndarray, axis: int = 0) -> np.ndarray:
    """Sums of ``values`` over the blocks along ``axis``: the shape of ``values`` with that
    axis of length b (``np.add.reduceat`` at the block starts)."""
    return np.add.reduceat(values, edges[:-1], axis=axis)


def block_weights(blocks: int, resamples: int, seed: int | np.random.Generator = 0,
                  draw: str = "multinomial") -> np.ndarray:
    """Resample weights: ``resamples x blocks`` float64, w[r, j] = the number of times block
    j is drawn in resample r (rows sum to ``blocks``).

    ``seed``: an int (``np.random.default_rng(seed)``) or a generator. ``draw`` (the order of
    the random draws, which fixes the numbers): "multinomial",
    ``rng.multinomial(blocks, [1/blocks] * blocks, size=resamples)``; or "indices", for each
    resample ``blocks`` indices ``rng.integers(0, blocks, blocks)`` counted with bincount.
    """
    if draw not in DRAWS:
        raise ValueError(f"unknown draw {draw!r}: choose {' or '.join(DRAWS)}")
    # the weights (float64) and the integer draws they are made from, before any is drawn
    check_memory(16.0 * max(0, resamples) * blocks,
                 f"the bootstrap's weights ({resamples} resamples x {blocks} blocks)")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if resamples < 1:
        return np.zeros((0, blocks))
    if draw == "multinomial":
        return rng.multinomial(blocks, np.full(blocks, 1.0 / blocks),
                               size=resamples).astype(float)
    return np.stack([np.bincount(rng.integers(0, blocks, blocks), minlength=blocks)
                     for _ in range(resamples)]).astype(np.float64)


def interval_quantiles(level: float = 0.95) -> tuple[float, float]:
    """The quantiles of a central ``level`` interval: ((1 - level) / 2, (1 + level) / 2)."""
    return (1 - level) / 2, (1 + level) / 2


def percentile_interval(stats: np.ndarray, level: float = 0.95, axis: int = 0, *,
                        quantiles: tuple[float, float] | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): the quantiles :func:`interval_quantiles` (``level``) of ``stats`` along
    ``axis`` (the resamples), or the explicit ``quantiles`` (e.g. (0.025, 0.975), which is what
    ``np.percentile(stats, [2.5, 97.5])`` uses); each has the shape of ``stats`` without
    ``axis`` (scalars for 1-D stats)."""
    q = interval_quantiles(level) if quantiles is None else quantiles
    low, high = np.quantile(stats, list(q), axis=axis)
    return low, high


def block_bootstrap(stat: Callable[[np.ndarray], np.ndarray], blocks: int, resamples: int,
                    seed: int | np.random.Generator = 0, *, level: float = 0.95,
                    quantiles: tuple[float, float] | None = None, draw: str = "multinomial"
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile interval of a weighted block statistic.

    ``stat(w)`` maps the ``resamples x blocks`` weights (:func:`block_weights`) to the
    resampled statistics, ``resamples x ...`` (e.g. ``lambda w: (w @ S) / (w @ N)``). Returns
    (low, high, draws) with draws = stat(w) (for a standard error, ``draws.std(0, ddof=1)``);
    low and high are NaN (the shape of one draw) when ``resamples`` < 1.
    """
    w = block_weights(blocks, max(0, resamples), seed, draw)
    draws = np.asarray(stat(w))
    if resamples < 1:
        nan = np.full(draws.shape[1:], np.nan)
        return nan, nan.copy(), draws
    low, high = percentile_interval(draws, level, quantiles=quantiles)
    return low, high, draws


__all__ = ["DRAWS", "block_bootstrap", "block_edges", "block_sums", "block_weights",
           "interval_quantiles", "percentile_interval"]
