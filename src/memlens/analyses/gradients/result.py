"""The result object of :func:`memlens.state_gradients`: averages, counts and metrics.

Shapes: S = K + 1 delays, H state units, E embedding dimensions, C classes, B bootstrap blocks.
``mean(tau, cls)`` is the unnormalised average Gbar(tau) (H x E); every metric uses the
normalised Gn(tau) = Gbar(tau) D (H x r) unless ``normalized=False``; r = E, or the rank of
the input covariance when the inputs span fewer dimensions (``normalization.full_rank`` False:
normalised within their span, :mod:`memlens.analyses.gradients.normalize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from memlens.analyses.gradients import contrasts, metrics, spectrum
from memlens.analyses.gradients.engine import Sums
from memlens.analyses.gradients.normalize import Normalization
from memlens.analyses.gradients.stability import Stability
from memlens.core.errors import MemlensError
from memlens.core.limits import check_int, shown
from memlens.runtime.options import check_option
from memlens.runtime.result import Result


@dataclass(repr=False)
class GradientResult(Result):
    """Exact average state gradients per delay (and class) with their metrics.

    As a :class:`~memlens.runtime.result.Result`: ``to_frame()`` has one row per (delay, class)
    (see :meth:`table`), ``plot()`` draws the sum of singular values vs delay per class,
    ``save(dir)`` writes result.json, table.csv, gradients.npz and PNGs.

    Shapes: S = K + 1 delays, H state units, E input dimensions, C classes, r the rank of the
    input covariance (r = E at full rank). Gbar(tau) = mean_t d r_t / d x_{t-tau} (H x E) is
    the unnormalised average (:meth:`mean`); Gn(tau) = Gbar(tau) D (H x r), with S = D D^T
    the input covariance, is the normalised one every metric uses (:meth:`normalized_mean`).
    Made by :func:`memlens.state_gradients`; not meant to be built by hand.

    Attributes
    ----------
    max_delay : int
        K, the largest delay.
    layer : int
        The layer analysed (0-based).
    readout : str
        The readout analysed (e.g. "c" for an LSTM's cell state, "h").
    class_names : list of str
        The C class names, in the order of the class axes (empty: no classes).
    raw : Sums
        The engine's float64 sums: ``sums`` (S x H x E), ``counts`` (S), per-class and
        per-block sums and counts (:class:`~memlens.analyses.gradients.engine.Sums`).
    normalization : Normalization
        The input normalisation: ``mu`` (E), ``D`` (E x r), ``Z`` (r x E, Z D = I_r), its
        condition number and rank (:class:`~memlens.analyses.gradients.normalize.Normalization`).
    settings : dict
        How the result was computed: max_delay, layer, readout, units, tokens, method, blocks,
        bootstrap (resamples), seed, context, direction_weighting, ...
    class_embeddings : numpy.ndarray or None
        C x E class-mean embeddings behind :meth:`direction` (None: no classes).
    probe : dict or None
        Held-out accuracy of a logistic-regression probe predicting a token's class from its
        embedding: accuracy, majority_baseline, train, test (None: fewer than two classes).
    model_meta : dict
        A description of the model analysed.
    corpus_meta : dict
        A description of the input analysed.
    directions : dict of str to numpy.ndarray
        Named property directions (E each, raw embedding space) whose relative memory and
        alignment :meth:`rows` reports as ``relmem_<name>``, ``align1_<name>``, ...
    stability : Stability or None
        The stability diagnostic (per-delay gradient norms, flags and advice;
        :class:`~memlens.analyses.gradients.stability.Stability`).
    words : WordTable or None
        The vocabulary side of :meth:`read_directions` (None: continuous inputs).
    """

    kind = "gradients"
    arrays_file = "gradients.npz"

    max_delay: int
    layer: int
    readout: str
    class_names: list[str]
    raw: Sums
    normalization: Normalization
    settings: dict = field(default_factory=dict)
    class_embeddings: np.ndarray | None = None
    probe: dict | None = None
    model_meta: dict = field(default_factory=dict)
    corpus_meta: dict = field(default_factory=dict)
    directions: dict[str, np.ndarray] = field(default_factory=dict)
    stability: Stability | None = None  # the stability diagnostic (gradients.stability)
    words: spectrum.WordTable | None = None  # vocabulary side of read_directions (token inputs)
    _boot: dict | None = field(default=None, repr=False)
    _rows: tuple | None = field(default=None, repr=False)

    # -- access ----------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """H, the number of state units analysed (the site's size)."""
        return self.raw.sums.shape[1]

    @property
    def emb_size(self) -> int:
        """E, the input dimensions (embedding size, or the size of an input frame)."""
        return self.raw.sums.shape[2]

    @property
    def stats(self) -> dict:
        """The engine's performance statistics (``raw.stats``: method, tokens processed,
        seconds, tokens per second, ...), saved as the ``performance`` section."""
        return self.raw.stats

    def _cls(self, cls: str | int | None) -> int | None:
        if cls is None:
            return None
        if isinstance(cls, (bool, np.bool_)):
            raise MemlensError(f"class must be a class name or index, got {cls!r}")
        if isinstance(cls, (int, np.integer)):
            if not 0 <= cls < len(self.class_names):
                raise MemlensError(f"class index {cls} out of range")
            return int(cls)
        if cls not in self.class_names:
            raise MemlensError(f"unknown class {cls!r}: choose from "
                               f"{', '.join(self.class_names) or '(no classes)'}")
        return self.class_names.index(cls)

    def _tau(self, tau: int) -> int:
        if isinstance(tau, (bool, np.bool_)) or not isinstance(tau, (int, np.integer)):
            raise MemlensError(f"delay must be an integer in 0..{self.max_delay}, got "
                               f"{shown(tau)}")
        if not 0 <= tau <= self.max_delay:
            raise MemlensError(f"delay {tau} out of range 0..{self.max_delay}")
        return int(tau)

    def count(self, tau: int, cls: str | int | None = None) -> int:
        """N(tau): the number of (t, tau) pairs averaged at one delay.

        Parameters
        ----------
        tau : int
            The delay, 0 <= tau <= K (:attr:`max_delay`).
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).

        Returns
        -------
        int
            N(tau), or N_c(tau), the pairs whose source word t - tau is of class ``cls``.

        Raises
        ------
        MemlensError
            A delay out of range, or an unknown class.
        """
        c, tau = self._cls(cls), self._tau(tau)
        return int(self.raw.counts[tau] if c is None else self.raw.class_counts[c, tau])

    def sum(self, tau: int, cls: str | int | None = None) -> np.ndarray:
        """The sum of d r_t / d x_{t-tau} over the N(tau) pairs of one delay.

        Parameters
        ----------
        tau : int
            The delay, 0 <= tau <= K (:attr:`max_delay`).
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).

        Returns
        -------
        numpy.ndarray
            H x E float64, unnormalised (a view of ``raw``: do not modify it); :meth:`mean`
            = sum / :meth:`count`.
        """
        c, tau = self._cls(cls), self._tau(tau)
        return self.raw.sums[tau] if c is None else self.raw.class_sums[c, tau]

    def mean(self, tau: int, cls: str | int | None = None) -> np.ndarray:
        """Gbar(tau) = mean_t d r_t / d x_{t-tau}: the unnormalised average gradient.

        Parameters
        ----------
        tau : int
            The delay, 0 <= tau <= K (:attr:`max_delay`).
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).

        Returns
        -------
        numpy.ndarray
            H x E: :meth:`sum` / :meth:`count` (all NaN when the count is zero).
        """
        n = self.count(tau, cls)
        s = self.sum(tau, cls)
        return s / n if n else np.full_like(s, np.nan)

    def means(self, cls: str | int | None = None) -> np.ndarray:
        """Gbar(tau) for every delay at once.

        Parameters
        ----------
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).

        Returns
        -------
        numpy.ndarray
            S x H x E: :meth:`mean` at tau = 0..K stacked (NaN at delays without pairs).
        """
        return np.stack([self.mean(t, cls) for t in range(self.max_delay + 1)])

    def normalized_mean(self, tau: int, cls: str | int | None = None) -> np.ndarray:
        """Gn(tau) = Gbar(tau) D: the gradient with respect to the normalised input.

        Parameters
        ----------
        tau : int
            The delay, 0 <= tau <= K (:attr:`max_delay`).
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).

        Returns
        -------
        numpy.ndarray
            H x r (r = E at full rank); every metric is computed from it.
        """
        return self.normalization.apply(self.mean(tau, cls))

    def singular_values(self, tau: int, cls: str | int | None = None,
                        normalized: bool = True) -> np.ndarray:
        """The singular values sigma_1 >= sigma_2 >= ... of Gn(tau) (or of Gbar(tau)).

        Parameters
        ----------
        tau : int
            The delay, 0 <= tau <= K (:attr:`max_delay`).
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).
        normalized : bool, optional
            True (default): of Gn(tau) = Gbar(tau) D; False: of the raw Gbar(tau).

        Returns
        -------
        numpy.ndarray
            min(H, r) values, descending (min(H, E) raw); all NaN when the count is zero.
            Their sum, sum(sigma), is the "amount" of memory of the input tau steps back.
        """
        m = self.normalized_mean(tau, cls) if normalized else self.mean(tau, cls)
        if np.isnan(m).any():
            return np.full(min(m.shape), np.nan)
        return metrics.singular_values(m)

    def spectrum(self, cls: str | int | None = None, normalized: bool = True) -> np.ndarray:
        """The singular values of every delay (:meth:`singular_values` for tau = 0..K).

        Parameters
        ----------
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).
        normalized : bool, optional
            True (default): of Gn(tau); False: of the raw Gbar(tau).

        Returns
        -------
        numpy.ndarray
            S x min(H, r) (S x min(H, E) raw), descending per row; NaN rows at delays
            without pairs.
        """
        m = self.means(cls)
        if normalized:
            m = self.normalization.apply(m)
        out = metrics.singular_values(m)
        out[np.isnan(m).any(axis=(1, 2))] = np.nan
        return out

    def right_singular_vectors(self, tau: int, cls: str | int | None = None) -> np.ndarray:
        """The right-singular vectors of Gn(tau) = U diag(sigma) V^T.

        Parameters
        ----------
        tau : int
            The delay, 0 <= tau <= K (:attr:`max_delay`).
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).

        Returns
        -------
        numpy.ndarray
            r x r: the rows of V^T, strongest first, as directions of the normalised input
            space (coordinates in the basis of Z).
        """
        return metrics.right_singular_vectors(self.normalized_mean(tau, cls))

    # -- properties of directions ----------------------------------------------------------
    def _unit(self, direction) -> np.ndarray:
        """The unit normalised direction of ``direction`` (E finite numbers, not zero within
        the span of the inputs), or a one-line error."""
        try:
            d = np.asarray(direction, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            d = np.array(np.nan)
        E = self.normalization.Z.shape[1]
        if d.shape != (E,) or not np.isfinite(d).all():
            raise MemlensError(f"a direction must be {E} finite numbers (one per input "
                               f"dimension), got {' '.join(repr(direction).split())[:60]}")
        try:
            return metrics.unit_direction(d, self.normalization.Z)
        except ValueError as exc:  # zero (within the span of the inputs)
            raise MemlensError(str(exc)) from None

    def direction(self, a: str | int, b: str | int) -> np.ndarray:
        """The property direction d = mean embedding of class a - that of class b.

        The means are over vocabulary types or token occurrences, as
        ``settings["direction_weighting"]`` says ("type" or "token").

        Parameters
        ----------
        a : str or int
            The first class (name or index).
        b : str or int
            The second class (name or index).

        Returns
        -------
        numpy.ndarray
            E numbers in the raw embedding space (pass it to :meth:`relative_memory` or
            :meth:`alignment`).

        Raises
        ------
        MemlensError
            No classes, an unknown class, or a class that never occurs.
        """
        if self.class_embeddings is None:
            raise MemlensError("class-mean embeddings are not available (no classes)")
        d = self.class_embeddings[self._cls(a)] - self.class_embeddings[self._cls(b)]
        if not np.isfinite(d).all():
            raise MemlensError(f"class {a!r} or {b!r} never occurs: no property direction")
        return d

    def relative_memory(self, direction: np.ndarray, cls: str | int | None = None
                        ) -> np.ndarray:
        """How much of the strongest memory a property direction keeps, per delay.

        relmem(tau) = |Gn(tau) dn| / sigma_1(tau), in [0, 1]: 1 when dn is the most
        remembered input direction at that delay, 0 when it is forgotten entirely.

        Parameters
        ----------
        direction : numpy.ndarray
            A direction d of the raw input space (E finite numbers, e.g. :meth:`direction`);
            it is normalised to dn = Z d / |Z d| (r).
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).

        Returns
        -------
        numpy.ndarray
            S values (NaN where sigma_1 = 0 or no pair was averaged).

        Raises
        ------
        MemlensError
            A direction of the wrong size, not finite, or zero within the span of the inputs.
        """
        dn = self._unit(direction)
        return np.array([metrics.relative_memory(self.normalized_mean(t, cls), dn)
                         for t in range(self.max_delay + 1)])

    def alignment(self, direction: np.ndarray, k: int = 5, cls: str | int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """How well the top right-singular vectors of Gn(tau) cover a property direction.

        For j = 1..k: |V_j^T dn|, the norm of the projection of dn on the top j
        right-singular vectors (1: dn lies in their span), and (sigma_1 + ... + sigma_j) /
        sum(sigma), the share of the singular-value sum they carry.

        Parameters
        ----------
        direction : numpy.ndarray
            A direction d of the raw input space (E finite numbers, e.g. :meth:`direction`);
            it is normalised to dn = Z d / |Z d| (r).
        k : int, optional
            The number of top singular vectors (default 5; at most r are used).
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).

        Returns
        -------
        projections : numpy.ndarray
            S x min(k, r): |V_j^T dn| per delay and j.
        shares : numpy.ndarray
            S x min(k, r): the share of sum(sigma) in the top j per delay.

        Raises
        ------
        MemlensError
            A bad direction or k.
        """
        dn = self._unit(direction)
        k = check_int(k, "k", 1, 1 << 16)
        rows = [metrics.alignment(self.normalized_mean(t, cls), dn, k)
                for t in range(self.max_delay + 1)]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def contrasts(self, pairs="ptb", k: int = 5, resamples: int | None = None,
                  level: float = 0.95, seed: int | None = None):
        """Tag contrasts A-B as a tidy DataFrame, one row per (contrast, delay): relative
        memory |Gn(tau) dn| / sigma_1(tau) and top-k alignment of d = mean embedding of A
        minus that of B, on the gradient averaged over the words of A and B, with block
        bootstrap intervals (:mod:`memlens.analyses.gradients.contrasts`).

        Parameters
        ----------
        pairs : str or sequence
            A preset ("ptb": NNS-NN, NNPS-NNP, VBD-VB, VBZ-VBP, VBG-VB, VBN-VB, JJR-JJ,
            JJS-JJ, RBR-RB; "upos": NOUN-VERB, ...), pairs "A-B,C-D", or a list of "A-B"
            strings and (A, B) pairs of class names.
        k : int
            Number of top right-singular vectors of the alignment.
        resamples : int or None
            Bootstrap resamples (None: the result's, :attr:`resamples`; 0: no intervals).
        level : float
            The interval level, in (0, 1).
        seed : int or None
            The bootstrap seed (None: the run's, :attr:`seed`).

        Returns
        -------
        pandas.DataFrame
            Columns contrast, a, b, delay, count, relmem, relmem_se, relmem_low,
            relmem_high, k, alignment, alignment_low, alignment_high, align1, share. Preset
            pairs whose classes are missing are left out with one warning line.
        """
        import pandas as pd

        from memlens.runtime.result import clean

        rows, skipped = contrasts.contrast_rows(self, pairs, k, resamples, level, seed)
        if skipped:
            import warnings

            from memlens.core.errors import TrustWarning

            warnings.warn("contrasts left out: " + "; ".join(skipped), TrustWarning,
                          stacklevel=2)
        return pd.DataFrame(clean(rows))

    # -- selectiveness and reading the directions (gradients.spectrum) ---------------------
    def selectiveness(self, tau: int | None = None, cls: str | int | None = None,
                      measure: str = "eff_rank"):
        """How concentrated the spectrum of Gn(tau) is (:func:`metrics.selectiveness`).

        Parameters
        ----------
        tau : int or None
            The delay; None: every delay (an array of S).
        cls : str or int or None
            A class (None: all positions).
        measure : str
            "eff_rank" (exp of the entropy of sigma / sum(sigma); the verdicts' measure),
            "sv1_share" or "sv5_share".

        Returns
        -------
        float or numpy.ndarray
            The measure (NaN where no pair was averaged).
        """
        return spectrum.selectiveness(self, tau, cls, measure)

    def selectiveness_interval(self, cls: str | int | None = None, measure: str = "eff_rank",
                               resamples: int | None = None, level: float = 0.95,
                               seed: int | None = None) -> dict[str, np.ndarray]:
        """The block-bootstrap interval of a selectiveness measure at every delay.

        Parameters
        ----------
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).
        measure : str, optional
            "eff_rank" (default), "sv1_share" or "sv5_share" (:meth:`selectiveness`).
        resamples : int or None, optional
            Bootstrap resamples (default None: the result's, :attr:`resamples`).
        level : float, optional
            The interval level, in (0, 1) (default 0.95).
        seed : int or None, optional
            The bootstrap seed (default None: the run's, :attr:`seed`).

        Returns
        -------
        dict of str to numpy.ndarray
            "se", "low", "high", S values each; for a class only at the delays that kept
            per-block class sums (``raw.ci_delays``), NaN elsewhere.
        """
        return spectrum.interval(self, cls, measure, resamples, level, seed)

    def read_directions(self, tau: int, k: int = 3, words: int = 10,
                        cls: str | int | None = None) -> list[dict]:
        """What the top right-singular vectors of Gn(tau) encode, read in the vocabulary.

        Every word's normalised embedding is projected on v_i (i = 1..k); the words at the
        two poles are listed, and the projections are correlated with log frequency and with
        each class (:func:`memlens.analyses.gradients.spectrum.read_directions`).

        Parameters
        ----------
        tau : int
            The delay, 0 <= tau <= K (:attr:`max_delay`).
        k : int, optional
            The number of top directions (default 3).
        words : int, optional
            The words listed at each pole (default 10).
        cls : str or int or None, optional
            A class name or index: the class of the source position t - tau (default None:
            every pair).

        Returns
        -------
        list of dict
            One per direction: delay, direction (i), sigma, sigma_share (sigma_i / sum
            sigma), positive and negative (lists of (word, projection, count), strongest
            first), corr_log_freq (Pearson r with log(1 + count)), corr_class ({class: r}),
            freq_source.

        Raises
        ------
        MemlensError
            Continuous inputs (no vocabulary), or k beyond the kept vectors.
        """
        return spectrum.read_directions(self, tau, k, words, cls)

    def directions_frame(self, k: int = 3, words: int = 10):
        """:meth:`read_directions` at every delay as a DataFrame.

        A loaded result reads the same table back from result.json
        (:func:`memlens.analyses.gradients.spectrum.saved_frame`).

        Parameters
        ----------
        k : int, optional
            The number of top directions per delay (default 3).
        words : int, optional
            The words listed at each pole (default 10).

        Returns
        -------
        pandas.DataFrame
            One row per (delay, direction): delay, direction, sigma, sigma_share, positive,
            negative (words joined by spaces), corr_log_freq, corr_<class>.
        """
        return spectrum.directions_frame(self, k, words)

    # -- uncertainty -----------------------------------------------------------------------
    @property
    def seed(self) -> int:
        """The bootstrap seed of the run (``settings["seed"]``, 0 when absent)."""
        return int(self.settings.get("seed", 0) or 0)

    def bootstrap(self, resamples: int = 200, level: float = 0.95, seed: int | None = None
                  ) -> dict[str, np.ndarray]:
        """Block-bootstrap standard error and interval of sum(sigma(Gn(tau))) per delay.

        The targets are cut into contiguous blocks (``settings["blocks"]``); each resample
        draws blocks with replacement and recomputes Gn(tau) from their sums. Cached for the
        last (resamples, level, seed).

        Parameters
        ----------
        resamples : int, optional
            Bootstrap resamples, 0..2**20 (default 200; 0: no interval).
        level : float, optional
            The interval level, in (0, 1) (default 0.95).
        seed : int or None, optional
            The bootstrap seed (default None: the run's, :attr:`seed`).

        Returns
        -------
        dict of str to numpy.ndarray
            "se", "low", "high" (S each) of the overall sum(sigma), and "stat_se",
            "stat_low", "stat_high" (S x 3) of the selectiveness measures eff_rank,
            sv1_share, sv5_share from the same draws; NaN where undefined (everywhere for 0
            resamples or one block).
        """
        resamples, level, seed = _boot_args(resamples, level, self.seed if seed is None
                                            else seed)
        key = (resamples, level, seed)
        if self._boot is None or self._boot.get("key") != key:
            out = metrics.block_bootstrap(self.raw.block_sums, self.raw.block_counts,
                                          self.normalization.D, resamples, level, seed,
                                          stat=metrics.selectiveness)  # stat_*: S x 3
            self._boot = {"key": key, **out}
        return {k: v for k, v in self._boot.items() if k != "key"}

    def class_bootstrap(self, cls: str | int, resamples: int = 200, level: float = 0.95,
                        seed: int | None = None) -> dict[int, tuple[float, float, float]]:
        """Block-bootstrap standard error and interval of sum(sigma) for one class.

        Parameters
        ----------
        cls : str or int
            The class (name or index).
        resamples : int, optional
            Bootstrap resamples, 0..2**20 (default 200; 0: no interval).
        level : float, optional
            The interval level, in (0, 1) (default 0.95).
        seed : int or None, optional
            The bootstrap seed (default None: the run's, :attr:`seed`).

        Returns
        -------
        dict of int to tuple of float
            {delay: (se, low, high)} at the delays that kept per-block class sums
            (``raw.ci_delays``); empty when none were kept.
        """
        resamples, level, seed = _boot_args(resamples, level, self.seed if seed is None
                                            else seed)
        c = self._cls(cls)
        if self.raw.class_block_sums is None or not self.raw.ci_delays:
            return {}
        delays = self.raw.ci_delays
        out = spectrum.class_boot(self, c, resamples, level, seed)  # cached, with selectiveness
        return {d: (out["se"][k], out["low"][k], out["high"][k]) for k, d in enumerate(delays)}

    # -- the result format -----------------------------------------------------------------
    @property
    def resamples(self) -> int:
        """Bootstrap resamples of the saved intervals (``settings["bootstrap"]``, default 200;
        0: none)."""
        return int(self.settings.get("bootstrap", 200))

    def rows(self) -> list[dict]:
        """The result table: :meth:`table` with the result's bootstrap setting and
        :attr:`directions` (cached).

        Returns
        -------
        list of dict
            One flat dict per (delay, class) row (see :meth:`table`).
        """
        key = (self.resamples, tuple(self.directions))
        if self._rows is None or self._rows[0] != key:
            self._rows = (key, self.table(self.resamples, self.directions))
        return self._rows[1]

    def series(self) -> list[dict]:
        """The plot declaration: sum of singular values vs delay, one curve per class.

        Returns
        -------
        list of dict
            One declaration ("memory": ``sum_sv`` against ``delay`` grouped by ``class``,
            band ``ci_low`` to ``ci_high``, log y axis).
        """
        return [{"name": "memory", "title": "Sum of singular values by delay and class",
                 "x": "delay", "y": "sum_sv", "group": ["class"], "low": "ci_low",
                 "high": "ci_high", "xlabel": "delay tau",
                 "ylabel": "sum of singular values (normalised)", "log_y": True,
                 "caption": "How strongly the state still reacts to the input that many steps "
                            "back (larger = remembered more); band: 95% block bootstrap."}]

    def summary(self) -> dict:
        """The headline numbers.

        Returns
        -------
        dict
            condition_number_Z, pairs_at_delay_0, input_rank, input_dims,
            input_normalization; ``sum_sv_tau<tau>`` and ``sum_sv_tau<tau>_se`` at delays 0,
            1, 5, 10 and K; probe_accuracy (with classes); the stability headline; the mean
            relative memory per tag contrast; the effective rank and pole words of v_1.
        """
        spec = self.spectrum(None)
        boot = self.bootstrap(self.resamples) if self.resamples else None
        norm = self.normalization
        out = {"condition_number_Z": norm.condition, "pairs_at_delay_0": self.count(0),
               "input_rank": norm.rank, "input_dims": norm.dims,
               "input_normalization": "full rank" if norm.full_rank else "within the span"}
        for tau in sorted({0, 1, 5, 10, self.max_delay}):
            if tau <= self.max_delay:
                out[f"sum_sv_tau{tau}"] = _num(spec[tau].sum())
                out[f"sum_sv_tau{tau}_se"] = _num(boot["se"][tau]) if boot else None
        if self.probe:
            out["probe_accuracy"] = self.probe["accuracy"]
        if self.stability is not None:
            out.update(self.stability.headline())
        out.update(contrasts.summary(self))  # settings["contrasts"]: mean relmem per pair
        out.update(spectrum.summary(self))  # selectiveness, pole words of v_1
        return out

    def extra(self) -> dict:
        """The further sections of result.json.

        Returns
        -------
        dict
            probe, performance (:attr:`stats`), normalization, and when they apply the
            normalisation and stability warnings, stability, the tag contrasts and the
            selectiveness and directions sections with their tidy rows.
        """
        out = {"probe": self.probe, "performance": self.stats,
               "normalization": self.normalization.to_dict()}
        if not self.normalization.full_rank:  # a warning box in the report
            out["normalization_warning"] = self.normalization.section()
        if self.stability is not None:  # the data, and a warning box in the report if flagged
            out["stability"] = self.stability.to_dict()
            if self.stability.flagged:
                out["stability_warning"] = self.stability.section()
        out.update(contrasts.extra(self))  # the report section and the tidy rows
        out.update(spectrum.extra(self))  # selectiveness and directions sections, tidy rows
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays saved as gradients.npz.

        Returns
        -------
        dict of str to numpy.ndarray
            mean (S x H x E float32, Gbar), counts (S), singular_values (S x min(H, r)),
            sum_sv_se, sum_sv_ci_low, sum_sv_ci_high (S), D (E x r), Z (r x E), mu (E),
            classes (C); with classes also class_mean (C x S x H x E float32), class_counts
            (C x S), class_singular_values (C x S x min(H, r)), class_embeddings (C x E).
        """
        boot = self.bootstrap(self.resamples) if self.resamples else None
        nan = np.full(self.max_delay + 1, np.nan)
        out = {"mean": self.means().astype(np.float32), "counts": self.raw.counts,
               "singular_values": self.spectrum(None),
               "sum_sv_se": boot["se"] if boot else nan,
               "sum_sv_ci_low": boot["low"] if boot else nan,
               "sum_sv_ci_high": boot["high"] if boot else nan, "D": self.normalization.D,
               "Z": self.normalization.Z, "mu": self.normalization.mu,
               "classes": np.array(self.class_names, dtype=str)}
        C = len(self.class_names)
        if C:
            out["class_mean"] = np.stack([self.means(c) for c in range(C)]).astype(np.float32)
            out["class_counts"] = self.raw.class_counts
            out["class_singular_values"] = np.stack([self.spectrum(c) for c in range(C)])
            out["class_embeddings"] = self.class_embeddings
        return out

    def figures(self, out) -> list[dict]:
        """Write the result's PNG figures: memory vs delay, spectra, contrasts, selectiveness.

        Parameters
        ----------
        out : pathlib.Path
            The (existing) directory to write into.

        Returns
        -------
        list of dict
            One ``{"file", "title", "caption"}`` per PNG written.
        """
        from memlens.analyses.gradients.plots import write_plots

        boot = self.bootstrap(self.resamples) if self.resamples else None
        return (write_plots(self, out, boot) + contrasts.figures(self, out)
                + spectrum.figures(self, out))

    # -- tables ----------------------------------------------------------------------------
    def table(self, resamples: int = 200, directions: dict[str, np.ndarray] | None = None
              ) -> list[dict]:
        """The result table, one flat dict per (delay, class).

        Parameters
        ----------
        resamples : int, optional
            Bootstrap resamples of the intervals (default 200; 0: none).
        directions : dict of str to numpy.ndarray or None, optional
            Named property directions (E each, raw input space) to report (default None).

        Returns
        -------
        list of dict
            Rows for class "all" (every pair) and then each class, delays 0..K: delay, class,
            count, sum_sv (sum(sigma(Gn(tau)))), sv_1..sv_5, eff_rank, sv1_share and
            sv5_share (each with _low and _high), se, ci_low, ci_high (None where not
            computed), the stability columns when diagnosed, input_rank below full rank, and
            per direction relmem_<name>, align1_<name>, align5_<name> and share5; None where
            no pair was averaged.

        Raises
        ------
        MemlensError
            Bad resamples or directions.
        """
        resamples, _, _ = _boot_args(resamples, 0.5, 0)
        if directions is not None and not isinstance(directions, dict):
            raise MemlensError(f"directions must be a dict of name -> direction, got "
                               f"{type(directions).__name__}")
        boot = self.bootstrap(resamples) if resamples else None
        rows = []
        groups: list[str | None] = [None, *self.class_names]
        dn = {name: self._unit(d) for name, d in (directions or {}).items()}
        for cls in groups:
            spec = self.spectrum(cls)
            cboot = (self.class_bootstrap(cls, resamples)
                     if cls is not None and resamples else {})
            for tau in range(self.max_delay + 1):
                sv = spec[tau]
                n = self.count(tau, cls)
                row = {"delay": tau, "class": "all" if cls is None else cls, "count": n,
                       "sum_sv": _num(sv.sum()) if n else None}
                for k in range(5):
                    row[f"sv_{k + 1}"] = _num(sv[k]) if n and k < sv.size else None
                row.update(spectrum.cells(self, cls, tau, sv if n else None, resamples))
                if cls is None and boot is not None:
                    row["se"] = _num(boot["se"][tau])
                    row["ci_low"] = _num(boot["low"][tau])
                    row["ci_high"] = _num(boot["high"][tau])
                elif tau in cboot and n:
                    row["se"], row["ci_low"], row["ci_high"] = (_num(v) for v in cboot[tau])
                else:
                    row["se"] = row["ci_low"] = row["ci_high"] = None
                if self.stability is not None:
                    st = self.stability
                    row["mean_norm"] = _num(st.mean_norm[tau]) if cls is None else None
                    row["top1_share"] = _num(st.top1_share[tau]) if cls is None else None
                    row["stability_flags"] = ", ".join(st.flags)
                if not self.normalization.full_rank:
                    row["input_rank"] = self.normalization.rank
                for name, d in dn.items():
                    if n:
                        gn = self.normalized_mean(tau, cls)
                        proj, share = metrics.alignment(gn, d, 5)
                        row[f"relmem_{name}"] = _num(metrics.relative_memory(gn, d))
                        row[f"align1_{name}"] = _num(proj[0])
                        row[f"align5_{name}"] = _num(proj[-1])
                        row["share5"] = _num(share[-1])
                    else:
                        row[f"relmem_{name}"] = row[f"align1_{name}"] = None
                        row[f"align5_{name}"] = None
                rows.append(row)
        return rows


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _boot_args(resamples, level, seed) -> tuple[int, float, int]:
    """Checked bootstrap arguments: resamples 0..2**20, level in (0, 1), seed 0..2**63-1."""
    if resamples is None:
        raise MemlensError("resamples must be an integer in 0..1048576, got None")
    resamples = check_option("bootstrap", resamples, "resamples")
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) \
            or not 0 < level < 1:
        raise MemlensError(f"level must be a number in (0, 1), got {shown(level)}")
    return resamples, float(level), check_option("seed", seed)
