"""The result of :func:`memlens.context_ablation`: losses per (perturbation, distance).

Rows: one per (perturbation, distance k) with the mean loss under the perturbation (nats,
bits), the unperturbed loss on the same targets, the paired increase
Delta(p, k) = mean_t [l_t(p, k) - l_t] (nats, bits, percent of the unperturbed loss) and its
block-bootstrap interval, and the number of targets. Summary: the unperturbed loss and
perplexity, the effective context per perturbation and the tolerance that defines it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from memlens.runtime.bootstrap import block_bootstrap, block_edges, block_sums
from memlens.runtime.result import Result

LN2 = math.log(2.0)


def block_mean_interval(values: np.ndarray, blocks: int = 20, resamples: int = 1000,
                        seed: int = 0, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the mean of each row of ``values`` (R x N, columns in stream
    order) by resampling b = max(2, min(``blocks``, N)) contiguous blocks of columns with
    replacement (:mod:`memlens.runtime.bootstrap`, multinomial draws); the same resampled
    blocks for every row: mean_r = (w @ S_r) / (w @ n) for block sums S_r and block sizes n.
    NaN when ``resamples`` is 0 or N < 2."""
    R, N = values.shape
    if resamples < 1 or N < 2:
        return np.full(R, np.nan), np.full(R, np.nan)
    edges = block_edges(N, blocks, min_blocks=2)
    sums = block_sums(values, edges, axis=1)                              # R x b
    counts = np.diff(edges).astype(np.float64)                            # b
    low, high, _ = block_bootstrap(lambda w: (w @ sums.T) / (w @ counts)[:, None],
                                   len(edges) - 1, resamples, seed, level=level)
    return low, high


def effective_context(distances: list[int], increase: np.ndarray, tol: float) -> int | None:
    """Smallest k such that |increase(k')| <= tol for every measured k' >= k (None: none)."""
    eff = None
    for k, inc in sorted(zip(distances, increase), reverse=True):
        if abs(inc) > tol:
            break
        eff = k
    return eff


@dataclass(repr=False)
class ContextAblationResult(Result):
    """Losses of one model on N targets under perturbations of the far context.

    ``base_nll``: N unperturbed losses (nats); ``nll``: P x D x N losses under each
    perturbation and distance; ``positions``: the N target positions in the stream.

    With l_t the unperturbed loss of target t and l_t(p, k) its loss when the context
    farther than k tokens back is perturbed by p, the paired increase is
    Delta(p, k) = mean_t [l_t(p, k) - l_t] (:attr:`increase`). As a
    :class:`~memlens.runtime.result.Result`: ``to_frame()`` has one row per (perturbation,
    distance), ``plot()`` draws the increase vs distance, ``save(dir)`` writes the standard
    result directory (kind "ablation"). Made by :func:`memlens.context_ablation`.

    Attributes
    ----------
    perturbations : list of str
        The P perturbations of the far context (e.g. "shuffle", "replace", "drop").
    distances : list of int
        The D distances k: the tokens kept intact before each target.
    base_nll : numpy.ndarray
        N: the unperturbed loss l_t of each target (nats).
    nll : numpy.ndarray
        P x D x N: the loss l_t(p, k) of each target under each perturbation and distance
        (nats).
    positions : numpy.ndarray
        N: the targets' positions in the stream.
    settings : dict
        How the result was computed: context, tolerance, blocks, bootstrap (resamples),
        seed, ...
    model_meta : dict
        A description of the model analysed.
    corpus_meta : dict
        A description of the input analysed.
    stats : dict
        Performance statistics (e.g. token_steps_per_second), saved as ``performance``.
    """

    kind = "ablation"
    arrays_file = "ablation.npz"

    perturbations: list[str]
    distances: list[int]
    base_nll: np.ndarray
    nll: np.ndarray
    positions: np.ndarray
    settings: dict = field(default_factory=dict)
    model_meta: dict = field(default_factory=dict)
    corpus_meta: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    # -- numbers -----------------------------------------------------------------------------
    @property
    def base_loss(self) -> float:
        """The mean unperturbed loss over the N targets, mean_t l_t (nats)."""
        return float(self.base_nll.mean())

    @property
    def increase(self) -> np.ndarray:
        """Delta(p, k) = mean_t [l_t(p, k) - l_t]: P x D mean paired increase (nats)."""
        return (self.nll - self.base_nll[None, None, :]).mean(-1)

    def intervals(self) -> tuple[np.ndarray, np.ndarray]:
        """The block-bootstrap interval of each increase Delta(p, k).

        The N paired differences are cut into ``settings["blocks"]`` contiguous blocks,
        resampled ``settings["bootstrap"]`` times with the seed ``settings["bootstrap_seed"]``
        (else ``settings["seed"]``); the same draws for every (p, k). Cached.

        Returns
        -------
        low : numpy.ndarray
            P x D lower ends of the 95% percentile intervals (nats; NaN: no intervals).
        high : numpy.ndarray
            P x D upper ends (nats).
        """
        if not hasattr(self, "_intervals"):
            P, D, N = self.nll.shape
            diffs = (self.nll - self.base_nll[None, None, :]).reshape(P * D, N)
            lo, hi = block_mean_interval(diffs, int(self.settings.get("blocks", 20)),
                                         int(self.settings.get("bootstrap", 1000)),
                                         int(self.settings.get("bootstrap_seed",
                                                               self.settings.get("seed", 0))))
            self._intervals = (lo.reshape(P, D), hi.reshape(P, D))
        return self._intervals

    @property
    def tolerance_nats(self) -> float:
        """The tolerance of :meth:`effective_context` in nats: ``settings["tolerance"]``
        (default 0.01) x :attr:`base_loss`."""
        return float(self.settings.get("tolerance", 0.01)) * self.base_loss

    def effective_context(self) -> dict[str, int | None]:
        """The effective context of each perturbation.

        Returns
        -------
        dict of str to int or None
            {perturbation: the smallest measured k such that |Delta(p, k')| <=
            :attr:`tolerance_nats` for k' = k and every larger measured k'} (None: none).
        """
        inc = self.increase
        return {p: effective_context(self.distances, inc[i], self.tolerance_nats)
                for i, p in enumerate(self.perturbations)}

    def last_significant(self) -> dict[str, int | None]:
        """The farthest distance at which each perturbation still clearly hurts.

        Returns
        -------
        dict of str to int or None
            {perturbation: the largest measured k whose interval (:meth:`intervals`) lies
            above 0} (None: none, or no intervals).
        """
        lo, _ = self.intervals()
        return {p: max((k for k, low in zip(self.distances, lo[i]) if low > 0), default=None)
                for i, p in enumerate(self.perturbations)}

    # -- the result format -------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """The result table, one row per (perturbation, distance).

        Returns
        -------
        list of dict
            perturbation, distance, loss_nats, loss_bits (mean l_t(p, k)), base_nats,
            increase_nats (Delta(p, k)), increase_low, increase_high, increase_bits,
            increase_percent (100 Delta / base loss; None when it is 0), targets (N).
        """
        inc, (lo, hi) = self.increase, self.intervals()
        base, out = self.base_loss, []
        for i, p in enumerate(self.perturbations):
            for j, k in enumerate(self.distances):
                loss = float(self.nll[i, j].mean())
                out.append({"perturbation": p, "distance": int(k), "loss_nats": loss,
                            "loss_bits": loss / LN2, "base_nats": base,
                            "increase_nats": float(inc[i, j]),
                            "increase_low": float(lo[i, j]), "increase_high": float(hi[i, j]),
                            "increase_bits": float(inc[i, j]) / LN2,
                            "increase_percent": 100 * float(inc[i, j]) / base if base else None,
                            "targets": int(self.nll.shape[-1])})
        return out

    def series(self) -> list[dict]:
        """The plot declarations: the increase and the loss vs distance, per perturbation.

        Returns
        -------
        list of dict
            "increase" (increase_nats with its interval band) and "loss" (loss_bits), both
            against distance on a log x axis, one curve per perturbation.
        """
        L = self.settings.get("context")
        return [
            {"name": "increase", "title": "Loss increase when the context beyond k is perturbed",
             "x": "distance", "y": "increase_nats", "group": ["perturbation"],
             "low": "increase_low", "high": "increase_high", "log_x": True,
             "xlabel": "distance k (tokens kept intact)", "ylabel": "loss increase (nats)",
             "caption": f"Mean increase of the loss on the same targets when the tokens "
                        f"farther than k are shuffled, replaced by unigram draws or dropped "
                        f"(context {L}); 95% block-bootstrap bands; 0 = context "
                        f"beyond k unused."},
            {"name": "loss", "title": "Loss vs intact context", "x": "distance",
             "y": "loss_bits", "group": ["perturbation"], "log_x": True,
             "xlabel": "distance k (tokens kept intact)", "ylabel": "loss (bits per token)",
             "caption": f"Mean loss under each perturbation; unperturbed: "
                        f"{self.base_loss / LN2:.3f} bits."},
        ]

    def summary(self) -> dict:
        """The headline numbers.

        Returns
        -------
        dict
            targets, context, base_loss_nats, base_loss_bits, base_perplexity,
            effective_context and last_significant_distance (per perturbation), tolerance,
            tolerance_nats, the two definitions, and tokens_per_second when measured.
        """
        eff = self.effective_context()
        return {"targets": int(self.nll.shape[-1]), "context": self.settings.get("context"),
                "base_loss_nats": self.base_loss, "base_loss_bits": self.base_loss / LN2,
                "base_perplexity": math.exp(self.base_loss),
                "effective_context": eff,
                "last_significant_distance": self.last_significant(),
                "tolerance": self.settings.get("tolerance"),
                "tolerance_nats": self.tolerance_nats,
                "effective_context_definition":
                    "smallest measured k such that |loss increase| <= tolerance x unperturbed "
                    "loss at k and every larger measured k (null: none)",
                "last_significant_definition":
                    "largest measured k whose 95% interval of the increase lies above 0",
                **({"tokens_per_second": self.stats["token_steps_per_second"]}
                   if self.stats.get("token_steps_per_second") else {})}

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays saved as ablation.npz.

        Returns
        -------
        dict of str to numpy.ndarray
            base_nll (N), nll (P x D x N), positions (N), distances (D), perturbations (P).
        """
        return {"base_nll": self.base_nll, "nll": self.nll, "positions": self.positions,
                "distances": np.asarray(self.distances),
                "perturbations": np.asarray(self.perturbations, dtype=str)}

    def extra(self) -> dict:
        """The further sections of result.json.

        Returns
        -------
        dict
            ``{"performance": stats}`` when performance was measured, else empty.
        """
        return {"performance": dict(self.stats)} if self.stats else {}
