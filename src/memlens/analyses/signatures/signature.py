"""The memory signature of a state sequence: how well each lag k of the input can be decoded.

For lags k = 0..K, with decoder D_k trained on training states and evaluated on states of
separate held-out text:

* accuracy_k     = mean over held-out t of [argmax D_k(s_t) == x_{t-k}]
* CE_k           = mean over held-out t of -log2 D_k(s_t)[x_{t-k}]            (bits)
* H(X)           = entropy (bits) of the symbol prior on the training states (per lag)
* bits_k         = max(0, H(X) - CE_k), a lower bound on I(s_t; x_{t-k});  fraction = bits/H
* majority_k     = held-out accuracy of always answering the most frequent training class
* prior_k        = sum_c p_train(c) p_heldout(c): accuracy of guessing from the prior
* recall[k, c]   = fraction of held-out positions with x_{t-k} = c decoded as c
* 95% intervals  = percentiles (2.5, 97.5) over ``Bootstrap.resamples`` resamples of
  ``Bootstrap.blocks`` contiguous held-out blocks (accuracy and bits;
  :mod:`memlens.runtime.bootstrap`).
* saturation     = fraction of the held-out state values h (M x D) with |h| > 0.99;
  saturated_units = fraction of the D units with |h| > 0.99 at more than half of the M
  positions (:func:`state_saturation`). Only for states bounded by 1 (every held-out
  |h| <= 1: tanh / sigmoid outputs, the hidden state of an LSTM / GRU / tanh RNN); None for
  unbounded states (an LSTM cell state, a linear readout: some |h| > 1, where |h| > 0.99 is
  no saturation) and for one-hot n-gram windows. More than ``SATURATED_SHARE`` (50%) of the
  values saturated is a :class:`~memlens.core.errors.TrustWarning`: the decoders then read
  an almost binary state, typical of a model run outside its training regime.

This module works on states (arrays); :mod:`.api` computes them from a model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from memlens.analyses.signatures.decoders import lag_targets, make_decoder
from memlens.analyses.signatures.symbols import SymbolSet
from memlens.analyses.signatures.table import MEMORY_SPAN_DEFINITION, SERIES, signature_rows
from memlens.core.errors import MemlensError, TrustWarning
from memlens.core.limits import shown
from memlens.models.states import IndexStates
from memlens.runtime.bootstrap import block_edges, block_sums, block_weights, percentile_interval
from memlens.runtime.options import Bootstrap
from memlens.runtime.result import Result

DEFAULT_RESAMPLES = 1000  # bootstrap resamples of a signature when none are given
SATURATION_LEVEL = 0.99  # a state value with |h| above this is saturated
SATURATED_SHARE = 0.5  # a TrustWarning when more than this share of the values is saturated
BOUND = 1.0 + 1e-6  # states with every |h| <= BOUND count as bounded (saturation applies)


@dataclass(repr=False)
class Signature(Result):
    """Per-lag results (arrays of length K+1) plus the lag x symbol recall matrix (K+1 x C).

    As a :class:`~memlens.runtime.result.Result`: ``to_frame()`` has one row per lag,
    ``plot()`` draws accuracy (or ``plot(series="bits")``) vs lag, ``save(dir)`` writes the
    standard result directory (kind "signatures").

    Shapes: K + 1 lags k = 0..K, C symbols; the formulas are in the module docstring
    (:mod:`memlens.analyses.signatures.signature`). Made by :func:`memlens.memory_signature`.

    Attributes
    ----------
    accuracy : numpy.ndarray
        K + 1: held-out accuracy of decoding x_{t-k} from s_t.
    acc_low : numpy.ndarray
        K + 1: lower end of the 95% block-bootstrap interval of the accuracy (NaN: none).
    acc_high : numpy.ndarray
        K + 1: upper end of that interval.
    bits : numpy.ndarray
        K + 1: max(0, H(X) - CE_k), a lower bound on I(s_t; x_{t-k}) in bits.
    bits_low : numpy.ndarray
        K + 1: lower end of the 95% interval of the bits.
    bits_high : numpy.ndarray
        K + 1: upper end of that interval.
    bits_fraction : numpy.ndarray
        K + 1: bits / H(X) (0 where H(X) = 0).
    cross_entropy : numpy.ndarray
        K + 1: CE_k, the held-out cross-entropy of the decoder (bits).
    entropy : numpy.ndarray
        K + 1: H(X), the entropy (bits) of the symbol prior on the training states.
    majority : numpy.ndarray
        K + 1: held-out accuracy of always answering the most frequent training symbol.
    prior : numpy.ndarray
        K + 1: sum_c p_train(c) p_heldout(c), the accuracy of guessing from the prior.
    recall : numpy.ndarray
        (K + 1) x C: the fraction of held-out positions with x_{t-k} = c decoded as c (NaN
        where c never occurs).
    support : numpy.ndarray
        (K + 1) x C int: the held-out positions with x_{t-k} = c.
    symbols : list of str
        The C symbol names (the columns of ``recall``).
    n_train : int
        The number of training states.
    n_heldout : int
        The number of held-out states.
    decoder : str
        The decoder ("linear", ...).
    epochs : int
        The epochs the decoder trained for.
    info : dict
        What was analysed (model, layer, readout, units, ...), merged into :attr:`settings`.
    temperature : numpy.ndarray or None
        K + 1: the decoder's calibration temperature per lag (None: not calibrated).
    saturation : float or None
        The share of held-out state values with |h| > 0.99 (None: unbounded states or
        n-gram windows).
    saturated_units : float or None
        The share of units with |h| > 0.99 at more than half of the held-out positions.
    model_meta : dict
        A description of the model analysed.
    corpus_meta : dict
        A description of the input analysed.
    """

    kind = "signatures"
    arrays_file = "recall.npz"

    accuracy: np.ndarray
    acc_low: np.ndarray
    acc_high: np.ndarray
    bits: np.ndarray
    bits_low: np.ndarray
    bits_high: np.ndarray
    bits_fraction: np.ndarray
    cross_entropy: np.ndarray
    entropy: np.ndarray
    majority: np.ndarray
    prior: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    symbols: list[str]
    n_train: int
    n_heldout: int
    decoder: str
    epochs: int
    info: dict = field(default_factory=dict)
    temperature: np.ndarray | None = None  # per lag: the decoder's calibration temperature
    saturation: float | None = None  # share of held-out values |h| > 0.99 (None: n/a)
    saturated_units: float | None = None  # share of units saturated > half the time
    model_meta: dict = field(default_factory=dict)
    corpus_meta: dict = field(default_factory=dict)

    @property
    def max_delay(self) -> int:
        """K: the largest lag."""
        return len(self.accuracy) - 1

    def memory_span(self, margin: float = 0.05) -> int:
        """The memory span: the last lag whose accuracy beats the majority baseline.

        Parameters
        ----------
        margin : float, optional
            How far above ``majority`` the accuracy must be (default 0.05).

        Returns
        -------
        int
            The largest k with accuracy_k > majority_k + margin (-1 if none).

        Raises
        ------
        MemlensError
            A margin that is not a finite number.
        """
        if isinstance(margin, bool) or not isinstance(margin, (int, float, np.floating)) \
                or not math.isfinite(margin):
            raise MemlensError(f"margin must be a finite number, got {shown(margin)}")
        above = np.nonzero(self.accuracy > self.majority + margin)[0]
        return int(above.max()) if above.size else -1

    # -- the result format -----------------------------------------------------------------
    @property
    def settings(self) -> dict:
        """How the signature was computed: :attr:`info` plus max_delay, decoder, epochs,
        train_states and heldout_states."""
        return {**self.info, "max_delay": self.max_delay, "decoder": self.decoder,
                "epochs": self.epochs, "train_states": self.n_train,
                "heldout_states": self.n_heldout}

    def rows(self) -> list[dict]:
        """The result table, one row per lag.

        Returns
        -------
        list of dict
            One flat dict per lag k = 0..K: model, role, layer, readout, units, lag,
            accuracy, ci_low, ci_high, bits, bits_ci_low, bits_ci_high, bits_fraction,
            cross_entropy_bits, temperature, entropy_bits, majority, prior, the control
            columns (None here), saturation, saturated_units, decoder, train_states,
            heldout_states (:mod:`memlens.analyses.signatures.table`).
        """
        return signature_rows(self, str(self.info.get("model", "model")), "model",
                              self.info.get("layer"), str(self.info.get("readout", "")),
                              str(self.info.get("units", "all")))

    def series(self) -> list[dict]:
        """The plot declarations: accuracy vs lag and bits vs lag, with their intervals.

        Returns
        -------
        list of dict
            The declarations of :data:`~memlens.analyses.signatures.table.SERIES`.
        """
        return SERIES

    def summary(self) -> dict:
        """The headline numbers.

        Returns
        -------
        dict
            memory_span (:meth:`memory_span`), accuracy_lag0, bits_lag0, saturation,
            saturated_units and memory_span_definition.
        """
        return {"memory_span": self.memory_span(), "accuracy_lag0": float(self.accuracy[0]),
                "bits_lag0": float(self.bits[0]), "saturation": self.saturation,
                "saturated_units": self.saturated_units,
                "memory_span_definition": MEMORY_SPAN_DEFINITION}

    @property
    def saturated(self) -> bool:
        """True when more than ``SATURATED_SHARE`` of the held-out state values are
        saturated (never for unbounded states or n-gram windows: saturation None)."""
        return self.saturation is not None and self.saturation > SATURATED_SHARE

    def saturation_message(self, what: str | None = None) -> str | None:
        """The one-line warning about saturated states.

        Parameters
        ----------
        what : str or None, optional
            A prefix naming what was analysed, e.g. the model and site (default None).

        Returns
        -------
        str or None
            The warning, None when not :attr:`saturated`.
        """
        if not self.saturated:
            return None
        prefix = f"{what}: " if what else ""
        return (f"{prefix}{self.saturation:.0%} of the held-out state values are saturated "
                f"(|h| > {SATURATION_LEVEL}; {self.saturated_units:.0%} of the units more "
                "than half the time): the decoders read an almost binary state; the model "
                "may be analysed outside its training regime")

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays saved as recall.npz.

        Returns
        -------
        dict of str to numpy.ndarray
            recall_0 ((K + 1) x C, :attr:`recall`), support_0 ((K + 1) x C) and symbols (C).
        """
        return {"recall_0": self.recall, "support_0": self.support,
                "symbols": np.array(self.symbols, dtype=str)}


def state_saturation(states, chunk: int = 65536) -> tuple[float | None, float | None]:
    """(saturation, saturated_units) of M x D states h: the fraction of the M*D values with
    |h| > ``SATURATION_LEVEL`` (0.99), and the fraction of the D units with |h| > 0.99 at
    more than half of the M positions. (None, None) for :class:`IndexStates` (one-hot
    windows), empty states, and states not bounded by 1 (some |h| > 1 + 1e-6, e.g. an LSTM
    cell state: there |h| > 0.99 says nothing about saturation). Read ``chunk`` rows at a
    time (no M x D temporary)."""
    if isinstance(states, IndexStates) or getattr(states, "ndim", 0) != 2 \
            or states.shape[0] == 0 or states.shape[1] == 0:
        return None, None
    m = states.shape[0]
    per_unit = np.zeros(states.shape[1], dtype=np.int64)
    for i in range(0, m, chunk):
        a = np.abs(np.asarray(states[i:i + chunk], dtype=np.float32))
        if not (a <= BOUND).all():  # unbounded (or NaN): no saturation to speak of
            return None, None
        per_unit += (a > SATURATION_LEVEL).sum(0)
    return float(per_unit.sum() / per_unit.size / m), float((per_unit > m / 2).mean())


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def bootstrap_intervals(correct: np.ndarray, nll: np.ndarray, valid: np.ndarray,
                        entropy: np.ndarray, blocks: int = 20,
                        resamples: int = DEFAULT_RESAMPLES, seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """95% percentile intervals of accuracy and bits per lag, resampling contiguous blocks.

    ``correct``, ``nll``, ``valid``: N x (K+1). With block sums C (correct), E (nll) and M
    (valid counts) and resample weights w (:func:`~memlens.runtime.bootstrap.block_weights`,
    multinomial draws): acc = (w C) / max(w M, 1), bits = max(0, H - (w E) / max(w M, 1)).
    Returns acc_low, acc_high, bits_low, bits_high (all NaN when ``resamples`` is 0: no
    intervals).
    """
    if resamples < 1:
        nan = np.full(correct.shape[1], np.nan)
        return nan, nan.copy(), nan.copy(), nan.copy()
    edges = block_edges(correct.shape[0], blocks)
    c = block_sums(np.where(valid, correct, 0).astype(np.float64), edges)
    e = block_sums(np.where(valid, nll, 0.0), edges)
    m = block_sums(valid.astype(np.float64), edges)
    w = block_weights(len(edges) - 1, resamples, seed)
    cnt = np.maximum(w @ m, 1.0)
    acc = (w @ c) / cnt
    bits = np.maximum(0.0, entropy[None, :] - (w @ e) / cnt)
    lo, hi = percentile_interval(acc, quantiles=(0.025, 0.975))
    blo, bhi = percentile_interval(bits, quantiles=(0.025, 0.975))
    return lo, hi, blo, bhi


def signature_from_states(train_x, train_cls: np.ndarray, held_x, held_cls: np.ndarray,
                          max_delay: int, symbols: SymbolSet, decoder: str = "linear",
                          seed: int = 0, bootstrap: Bootstrap | None = None,
                          decoder_options: dict | None = None, *, warn: bool = True
                          ) -> Signature:
    """Train the joint decoder on (train_x, classes) and score it on (held_x, classes).

    ``train_x`` / ``held_x``: N x D and M x D states (arrays or
    :class:`~memlens.models.states.IndexStates`); ``train_cls`` / ``held_cls``: class id per
    position (-1: excluded). ``bootstrap``: the intervals' resamples and blocks (None:
    ``Bootstrap(1000, 20, seed)``); ``decoder_options``: keyword arguments of the decoder
    (:func:`~memlens.analyses.signatures.decoders.make_decoder`, e.g. ``max_epochs``).
    ``warn``: issue the :class:`~memlens.core.errors.TrustWarning` of saturated held-out
    states here (False: the caller does, e.g. the study, naming the model and site)."""
    check_lag(max_delay, len(train_cls), len(held_cls))
    if not (held_cls >= 0).any():
        raise MemlensError("the held-out text has no symbol known to the decoders (only "
                           "unknown or untagged tokens)")
    return signature_from_targets(train_x, lag_targets(train_cls, max_delay), held_x,
                                  lag_targets(held_cls, max_delay), symbols, decoder, seed,
                                  bootstrap, decoder_options, warn=warn)


def _baselines(y_tr: np.ndarray, y_he: np.ndarray, pred: np.ndarray, n_cls: int) -> dict:
    """Per lag: training-prior entropy, majority and prior-guess accuracy, per-symbol recall
    and held-out support (K+1 x C)."""
    heads = y_tr.shape[1]
    valid = y_he >= 0
    entropy, majority, prior = np.zeros(heads), np.zeros(heads), np.zeros(heads)
    recall = np.full((heads, n_cls), np.nan)
    support = np.zeros((heads, n_cls), dtype=np.int64)
    for k in range(heads):
        tr = y_tr[:, k][y_tr[:, k] >= 0]
        he = y_he[:, k][valid[:, k]]
        ctr = np.bincount(tr, minlength=n_cls).astype(float)
        che = np.bincount(he, minlength=n_cls).astype(float)
        entropy[k] = _entropy_bits(ctr)
        majority[k] = che[int(ctr.argmax())] / max(che.sum(), 1)
        prior[k] = float((ctr / ctr.sum()) @ (che / max(che.sum(), 1)))
        hits = np.bincount(he[pred[valid[:, k], k] == he], minlength=n_cls)
        support[k] = che.astype(np.int64)
        recall[k] = np.where(che > 0, hits / np.maximum(che, 1), np.nan)
    return {"entropy": entropy, "majority": majority, "prior": prior, "recall": recall,
            "support": support}


def signature_from_targets(train_x, y_tr: np.ndarray, held_x, y_he: np.ndarray,
                           symbols: SymbolSet, decoder: str = "linear", seed: int = 0,
                           bootstrap: Bootstrap | None = None,
                           decoder_options: dict | None = None, *, warn: bool = True
                           ) -> Signature:
    """The signature from given per-lag targets: ``y_tr`` (N x (K+1)) and ``y_he``
    (M x (K+1)) class ids, -1 = no target (e.g. lags counted in graphemes of a speech
    encoder's frames, :mod:`memlens.analyses.speech.analysis`); ``lag_targets`` gives the usual
    ones. ``bootstrap``, ``decoder_options`` and ``warn``: see :func:`signature_from_states`."""
    if not (y_he >= 0).any():
        raise MemlensError("the held-out stream has no target known to the decoders")
    boot = Bootstrap(seed=seed) if bootstrap is None else bootstrap
    n_cls = symbols.size
    if decoder_options is not None and not isinstance(decoder_options, dict):
        raise MemlensError(f"decoder_options must be a dict of decoder keywords, got "
                           f"{type(decoder_options).__name__}")
    dec = make_decoder(decoder, seed=seed, **(decoder_options or {})).fit(train_x, y_tr, n_cls)
    pred, nll = dec.evaluate(held_x, y_he)
    valid = y_he >= 0
    correct = (pred == y_he) & valid
    nv = np.maximum(valid.sum(0), 1)
    accuracy = correct.sum(0) / nv
    ce = np.where(valid, nll, 0.0).sum(0) / nv
    base = _baselines(y_tr, y_he, pred, n_cls)
    entropy = base["entropy"]
    bits = np.maximum(0.0, entropy - ce)
    lo, hi, blo, bhi = bootstrap_intervals(correct, nll, valid, entropy, boot.blocks,
                                           boot.count(DEFAULT_RESAMPLES), boot.seed)
    sat, sat_units = state_saturation(held_x)
    sig = Signature(accuracy=accuracy, acc_low=lo, acc_high=hi, bits=bits, bits_low=blo,
                    bits_high=bhi, bits_fraction=np.where(entropy > 0, bits / entropy, 0.0),
                    cross_entropy=ce, symbols=list(symbols.names), n_train=len(y_tr),
                    n_heldout=len(y_he), decoder=decoder, epochs=dec.epochs,
                    temperature=dec.temperature, saturation=sat, saturated_units=sat_units,
                    **base)
    message = sig.saturation_message() if warn else None
    if message:
        warnings.warn(message, TrustWarning, stacklevel=2)
    return sig


def check_lag(max_delay: int, n_train: int, n_heldout: int) -> None:
    """Refuse a largest lag K that the streams cannot support (one-line MemlensError)."""
    if isinstance(max_delay, bool) or not isinstance(max_delay, (int, np.integer)) \
            or max_delay < 0:
        raise MemlensError(f"max lag must be a non-negative integer, got {max_delay!r}")
    if max_delay >= n_train - 1:
        raise MemlensError(f"max lag K={max_delay} is too large for the training stream of "
                           f"{n_train} tokens (need K < {n_train - 1})")
    if max_delay >= n_heldout:
        raise MemlensError(f"max lag K={max_delay} is too large for the held-out stream of "
                           f"{n_heldout} tokens")


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (bits, in [0, 1]) between two non-negative profiles."""
    p = np.nan_to_num(np.asarray(p, dtype=float)).ravel()
    q = np.nan_to_num(np.asarray(q, dtype=float)).ravel()
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / b[nz])).sum())

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def group_divergence(recalls: Sequence[np.ndarray]) -> np.ndarray:
    """Pairwise Jensen-Shannon divergence (G x G) between groups' lag x symbol recall
    profiles (each flattened and normalised to sum 1)."""
    g = len(recalls)
    out = np.zeros((g, g))
    for i in range(g):
        for j in range(i + 1, g):
            out[i, j] = out[j, i] = js_divergence(recalls[i], recalls[j])
    return out


__all__ = ["DEFAULT_RESAMPLES", "SATURATED_SHARE", "SATURATION_LEVEL", "Signature",
           "bootstrap_intervals", "check_lag", "group_divergence", "js_divergence",
           "signature_from_states", "signature_from_targets", "state_saturation"]
