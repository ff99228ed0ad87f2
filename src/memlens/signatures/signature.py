"""The memory signature of a state sequence: what each lag k of the input can be decoded.

For lags k = 0..K, with decoder D_k trained on training states and evaluated on states of
separate held-out text:

* accuracy_k     = mean over held-out t of [argmax D_k(s_t) == x_{t-k}]
* CE_k           = mean over held-out t of -log2 D_k(s_t)[x_{t-k}]            (bits)
* H(X)           = entropy (bits) of the symbol prior on the training states (per lag)
* bits_k         = max(0, H(X) - CE_k), a lower bound on I(s_t; x_{t-k});  fraction = bits/H
* majority_k     = held-out accuracy of always answering the most frequent training class
* prior_k        = sum_c p_train(c) p_heldout(c): accuracy of guessing from the prior
* recall[k, c]   = fraction of held-out positions with x_{t-k} = c decoded as c
* 95% intervals  = percentiles over ``resamples`` bootstrap resamples of ``blocks``
  contiguous held-out blocks (accuracy and bits).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from memlens.errors import MemlensError
from memlens.models.encoder import as_encoder
from memlens.models.inputs import as_stream
from memlens.results import Result
from memlens.signatures.decoders import lag_targets, make_decoder
from memlens.signatures.states import check_view, extract_states
from memlens.signatures.symbols import (
    SymbolSet,
    build_symbols,
    label_strings,
    label_symbols,
)


@dataclass(repr=False)
class Signature(Result):
    """Per-lag results (arrays of length K+1) plus the lag x symbol recall matrix (K+1 x C).

    As a :class:`~memlens.results.Result`: ``to_frame()`` has one row per lag, ``plot()``
    draws accuracy (or ``plot(series="bits")``) vs lag, ``save(dir)`` writes the standard
    result directory (kind "signatures").
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
    model_meta: dict = field(default_factory=dict)
    corpus_meta: dict = field(default_factory=dict)

    @property
    def max_lag(self) -> int:
        return len(self.accuracy) - 1

    def memory_span(self, margin: float = 0.05) -> int:
        """Last lag whose accuracy exceeds majority + margin (-1 if none)."""
        above = np.nonzero(self.accuracy > self.majority + margin)[0]
        return int(above.max()) if above.size else -1

    # -- the result format -----------------------------------------------------------------
    @property
    def settings(self) -> dict:
        return {**self.info, "max_delay": self.max_lag, "decoder": self.decoder,
                "epochs": self.epochs, "train_states": self.n_train,
                "heldout_states": self.n_heldout}

    def rows(self) -> list[dict]:
        from memlens.signatures.result import signature_rows

        return signature_rows(self, str(self.info.get("model", "model")), "model",
                              self.info.get("layer"), str(self.info.get("readout", "")),
                              str(self.info.get("units", "all")))

    def series(self) -> list[dict]:
        from memlens.signatures.result import SERIES

        return SERIES

    def summary(self) -> dict:
        return {"memory_span": self.memory_span(), "accuracy_lag0": float(self.accuracy[0]),
                "bits_lag0": float(self.bits[0]),
                "memory_span_definition": "last lag with held-out accuracy above majority + "
                                          "0.05 (-1: none)"}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"recall_0": self.recall, "support_0": self.support,
                "symbols": np.array(self.symbols, dtype=str)}


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def bootstrap(correct: np.ndarray, nll: np.ndarray, valid: np.ndarray, entropy: np.ndarray,
              blocks: int = 20, resamples: int = 1000, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """95% percentile intervals of accuracy and bits per lag, resampling contiguous blocks.

    ``correct``, ``nll``, ``valid``: N x (K+1). Returns acc_low, acc_high, bits_low, bits_high
    (all NaN when ``resamples`` is 0: no intervals).
    """
    if resamples < 1:
        nan = np.full(correct.shape[1], np.nan)
        return nan, nan.copy(), nan.copy(), nan.copy()
    n = correct.shape[0]
    blocks = max(1, min(blocks, n))
    edges = np.linspace(0, n, blocks + 1).astype(int)
    c = np.add.reduceat(np.where(valid, correct, 0).astype(np.float64), edges[:-1], axis=0)
    e = np.add.reduceat(np.where(valid, nll, 0.0), edges[:-1], axis=0)
    m = np.add.reduceat(valid.astype(np.float64), edges[:-1], axis=0)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(blocks, np.full(blocks, 1.0 / blocks), size=resamples).astype(float)
    cnt = np.maximum(w @ m, 1.0)
    acc = (w @ c) / cnt
    bits = np.maximum(0.0, entropy[None, :] - (w @ e) / cnt)
    lo, hi = np.percentile(acc, [2.5, 97.5], axis=0)
    blo, bhi = np.percentile(bits, [2.5, 97.5], axis=0)
    return lo, hi, blo, bhi


def signature_from_states(train_x, train_cls: np.ndarray, held_x, held_cls: np.ndarray,
                          max_lag: int, symbols: SymbolSet, decoder: str = "linear",
                          seed: int = 0, blocks: int = 20, resamples: int = 1000,
                          **decoder_options) -> Signature:
    """Train the joint decoder on (train_x, classes) and score it on (held_x, classes)."""
    check_lag(max_lag, len(train_cls), len(held_cls))
    if not (held_cls >= 0).any():
        raise MemlensError("the held-out text has no symbol known to the decoders (only "
                           "unknown or untagged tokens)")
    return signature_from_targets(train_x, lag_targets(train_cls, max_lag), held_x,
                                  lag_targets(held_cls, max_lag), symbols, decoder, seed,
                                  blocks, resamples, **decoder_options)


def signature_from_targets(train_x, y_tr: np.ndarray, held_x, y_he: np.ndarray,
                           symbols: SymbolSet, decoder: str = "linear", seed: int = 0,
                           blocks: int = 20, resamples: int = 1000,
                           **decoder_options) -> Signature:
    """The signature from given per-lag targets: ``y_tr`` (N x (K+1)) and ``y_he``
    (M x (K+1)) class ids, -1 = no target (e.g. lags counted in graphemes of a speech
    encoder's frames, :mod:`memlens.speech.analysis`); ``lag_targets`` gives the usual ones."""
    if not (y_he >= 0).any():
        raise MemlensError("the held-out stream has no target known to the decoders")
    n_cls = symbols.size
    max_lag = y_tr.shape[1] - 1
    dec = make_decoder(decoder, seed=seed, **decoder_options).fit(train_x, y_tr, n_cls)
    pred, nll = dec.evaluate(held_x, y_he)
    valid = y_he >= 0
    correct = (pred == y_he) & valid
    heads = max_lag + 1
    nv = np.maximum(valid.sum(0), 1)
    accuracy = correct.sum(0) / nv
    ce = np.where(valid, nll, 0.0).sum(0) / nv
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
    bits = np.maximum(0.0, entropy - ce)
    lo, hi, blo, bhi = bootstrap(correct, nll, valid, entropy, blocks, resamples, seed)
    return Signature(accuracy=accuracy, acc_low=lo, acc_high=hi, bits=bits, bits_low=blo,
                     bits_high=bhi, bits_fraction=np.where(entropy > 0, bits / entropy, 0.0),
                     cross_entropy=ce, entropy=entropy, majority=majority, prior=prior,
                     recall=recall, support=support, symbols=list(symbols.names),
                     n_train=len(y_tr), n_heldout=len(y_he), decoder=decoder,
                     epochs=dec.epochs, temperature=dec.temperature)


def check_lag(max_lag: int, n_train: int, n_heldout: int) -> None:
    """Refuse lags that the streams cannot support."""
    if not isinstance(max_lag, (int, np.integer)) or max_lag < 0:
        raise MemlensError(f"max lag must be a non-negative integer, got {max_lag!r}")
    if max_lag >= n_train - 1:
        raise MemlensError(f"max lag K={max_lag} is too large for the training stream of "
                           f"{n_train} tokens (need K < {n_train - 1})")
    if max_lag >= n_heldout:
        raise MemlensError(f"max lag K={max_lag} is too large for the held-out stream of "
                           f"{n_heldout} tokens")


# -- token handling ---------------------------------------------------------------------------
def to_ids(model: nn.Module, tokens, what: str = "tokens"
           ) -> tuple[np.ndarray, list[str | None] | None, list[str] | None]:
    """Token ids (int64), UPOS tags (or None) and the vocabulary (or None) for ``tokens``
    (a Corpus, a list of symbols through the model's vocabulary, or ids)."""
    encoder = as_encoder(model)
    stream = as_stream(encoder, tokens, what)
    vocab = encoder.vocab
    return (stream.values.numpy(), stream.tags.get("upos"),
            vocab.itos if vocab is not None else None)


def random_init_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """An untrained copy (same architecture, seeded) of a memlens model or wrapped encoder."""
    from memlens.models.lm import LanguageModel

    if isinstance(model, LanguageModel):
        torch.manual_seed(seed)
        ctrl = LanguageModel(model.config, model.encoder.vocab_size)
        ctrl.vocab = model.vocab
        return ctrl.eval()
    enc = copy.deepcopy(as_encoder(model))
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in enc.modules():
            if module is not enc and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return enc.eval()


def memory_signature(model: nn.Module, train_inputs, heldout_inputs,
                     max_delay: int | None = None,
                     layer: int = -1, readout: str | None = None, decoder: str = "linear",
                     symbols: str | None = None, units: str = "all", seed: int = 0,
                     blocks: int = 20, bootstrap: int = 1000, *,
                     labels: tuple[Sequence, Sequence] | None = None,
                     device: str | torch.device | None = None,
                     dtype: torch.dtype | str = "float32", max_lag: int | None = None,
                     resamples: int | None = None, **decoder_options) -> Signature:
    """Memory signature of one layer/readout/unit set of ``model`` (see module docstring).

    ``model``: anything the model protocol accepts (a memlens model, ``memlens.wrap(...)``).
    ``train_inputs`` / ``heldout_inputs``: two streams (Corpus, symbols, ids, T x I vectors or
    :class:`~memlens.models.inputs.Stream`): decoders are trained on the first and scored on
    the second. ``max_delay``: the largest lag K. ``readout``: default the layer's output
    ("hidden"). ``symbols``: None (every symbol; top:1000 for word models), ``"chars"``,
    ``"top:N"`` or ``"upos"``; ``labels=(train_labels, heldout_labels)`` (or Streams with
    labels) decode given per-position labels instead (required for vector inputs).
    ``bootstrap``: resamples of ``blocks`` contiguous held-out blocks for the intervals.
    ``device``/``dtype``: where and in which precision states are computed. ``max_lag=`` and
    ``resamples=`` are deprecated aliases. Returns a :class:`Signature` with ``.accuracy``,
    ``.bits``, ``.majority`` etc. (length K+1).
    """
    from memlens.gradients.api import deprecated_alias, resolve_dtype

    max_delay = deprecated_alias(max_delay, max_lag, "max_delay", "max_lag")
    if resamples is not None:
        bootstrap = deprecated_alias(None, resamples, "bootstrap", "resamples")
    if max_delay is None:
        raise MemlensError("memory_signature needs max_delay (the largest lag K)")
    encoder = as_encoder(model)
    view = check_view(encoder, layer, readout, units)
    tr_labels, he_labels = labels if labels is not None else (None, None)
    train = as_stream(encoder, train_inputs, "training inputs", tr_labels)
    held = as_stream(encoder, heldout_inputs, "held-out inputs", he_labels)
    check_lag(max_delay, len(train), len(held))
    if (train.labels is None) != (held.labels is None):
        raise MemlensError("give labels for both the training and the held-out stream")
    if train.labels is not None:
        if symbols is not None:
            raise MemlensError("give symbols= or labels=, not both")
        sym = label_symbols(train.labels)
        tr_key, he_key = label_strings(train.labels), label_strings(held.labels)
    elif not train.is_tokens:
        raise MemlensError("a model with continuous inputs needs labels=(train_labels, "
                           "heldout_labels): what to decode at each position")
    else:
        unit = (getattr(model, "config", None) or {}).get("unit", "char")
        itos = encoder.vocab.itos if encoder.vocab is not None else None
        sym = build_symbols(symbols, unit, train.values.numpy(), train.tags.get("upos"), itos)
        tr_key, he_key = train.tags.get("upos"), held.tags.get("upos")
    tr_cls = sym.classes(np.asarray(train.values if train.is_tokens else []), tr_key)
    he_cls = sym.classes(np.asarray(held.values if held.is_tokens else []), he_key)
    dtype = resolve_dtype(dtype)
    work = encoder
    if device is not None or dtype != torch.float32:
        work = copy.deepcopy(encoder).to(device=device or "cpu", dtype=dtype)
    tr_x = extract_states(work, train.values, [view])[view]
    he_x = extract_states(work, held.values, [view])[view]
    sig = signature_from_states(tr_x, tr_cls, he_x, he_cls, max_delay, sym, decoder, seed,
                                blocks, bootstrap, **decoder_options)
    sig.info = {"model": type(model).__name__, "layer": view.layer, "readout": view.readout,
                "units": view.units,
                "input": encoder.input_kind}
    return sig


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


