"""The entry point :func:`memory_signature`: a model and two streams in, a
:class:`~memlens.analyses.signatures.signature.Signature` out.

Steps: resolve the site (:func:`~memlens.analyses.signatures.sites.resolve_site`, default
readout: the layer's output); read both streams (:func:`~memlens.models.inputs.as_stream`);
choose the symbols and give every position its class (:func:`stream_classes`); compute the
states of the site on both streams (:func:`~memlens.models.states.extract_states`, on the
device and in the dtype of ``options``); train and score the decoders
(:func:`~memlens.analyses.signatures.signature.signature_from_states`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from memlens.analyses.signatures.decoders import choose_decoder
from memlens.analyses.signatures.regime import kept, regime_states, regime_targets, stream_layout
from memlens.analyses.signatures.signature import (
    DEFAULT_RESAMPLES,
    Signature,
    check_lag,
    signature_from_states,
    signature_from_targets,
)
from memlens.analyses.signatures.sites import resolve_site
from memlens.analyses.signatures.symbols import (
    SymbolSet,
    build_symbols,
    label_strings,
    label_symbols,
)
from memlens.core.errors import MemlensError
from memlens.models.encoder import as_encoder
from memlens.models.inputs import Stream, as_stream
from memlens.models.states import extract_states
from memlens.protocol import Site
from memlens.runtime.context import Context, check_model_regime
from memlens.runtime.options import Bootstrap, RunOptions, as_options


def memory_signature(model: nn.Module, train_inputs, heldout_inputs, max_delay: int,
                     site: Site | None = None, decoder: str = "auto",
                     symbols: str | None = None, *,
                     context: Context | str | int | None = None,
                     labels: tuple[Sequence, Sequence] | None = None, seed: int = 0,
                     decoder_options: dict | None = None,
                     options: RunOptions | None = None) -> Signature:
    """Memory signature of one site: how well each lag k of the input decodes from the state.

    For lags k = 0..K a decoder D_k is trained on the training states s_t to predict x_{t-k}
    and scored on the held-out states: accuracy_k = mean_t [argmax D_k(s_t) == x_{t-k}] and
    bits_k = max(0, H(X) - CE_k), a lower bound on I(s_t; x_{t-k}) (CE_k: held-out
    cross-entropy in bits; :mod:`memlens.analyses.signatures.signature` has the formulas).

    Parameters
    ----------
    model : torch.nn.Module
        Anything the model protocol accepts: a memlens model, ``memlens.wrap(...)``,
        ``memlens.from_hf(...)``.
    train_inputs : sequence or Corpus or Stream or torch.Tensor or numpy.ndarray
        The stream the decoders are trained on: a Corpus, symbols, ids, T x I vectors or a
        :class:`~memlens.models.inputs.Stream`.
    heldout_inputs : sequence or Corpus or Stream or torch.Tensor or numpy.ndarray
        The stream the decoders are scored on (same forms).
    max_delay : int
        K, the largest lag, shorter than both streams.
    site : Site or None, optional
        The (layer, readout, units) read; None (default): ``Site()``, the top layer's output
        readout ("hidden" for LSTM / GRU / RNN layers), all units.
    decoder : str, optional
        "auto" (default: "linear-fast" from 1000 decoded symbols on, else "linear"),
        "linear", "linear-fast" or "mlp".
    symbols : str or None, optional
        What is decoded: None (default: every symbol; top:1000 for word models),
        ``"chars"``, ``"top:N"`` (the N most frequent, the rest one class) or ``"upos"``.
    context : Context or str or int or None, optional
        The context regime (:mod:`memlens.runtime.context`): "stream" (default: one
        continuous pass, state carried), "segment:S", "sentence" or
        ``"window:N[,stride=M][,targets=last]"`` (each window or sentence from the initial
        state, lags inside it; :mod:`memlens.analyses.signatures.regime`).
    labels : tuple of (sequence, sequence) or None, optional
        ``(train_labels, heldout_labels)``, one label per position of each stream, decoded
        instead of the symbols (or Streams with labels); required for vector inputs.
        Default None.
    seed : int, optional
        Seeds the decoders and the bootstrap's block draws (default 0).
    decoder_options : dict or None, optional
        Keyword arguments of the decoder (e.g. ``{"max_epochs": 20}``); default None.
    options : RunOptions or None, optional
        Device and dtype of the state computation (device None: where the model is) and
        ``options.bootstrap`` (resamples, default 1000, 0: no intervals; blocks, default
        20). Default None: ``RunOptions()``.

    Returns
    -------
    Signature
        Per-lag arrays of length K+1 (``.accuracy`` with ``.acc_low`` / ``.acc_high``,
        ``.bits`` with ``.bits_low`` / ``.bits_high``, ``.majority``, ``.prior``,
        ``.entropy``) and the K+1 x C ``.recall``; ``to_frame()`` has one row per lag.

    Raises
    ------
    MemlensError
        One line naming the problem: a model outside the protocol, a bad stream, site,
        lag, decoder, symbol choice, label pair, context or option.
    """
    opts = as_options(options)
    boot = _bootstrap(opts.bootstrap, seed)
    if max_delay is None:
        raise MemlensError("memory_signature needs max_delay (the largest lag K)")
    encoder = as_encoder(model)
    site = resolve_site(encoder, site)
    tr_labels, he_labels = _label_pair(labels, symbols)
    train = as_stream(encoder, train_inputs, "training inputs", tr_labels)
    held = as_stream(encoder, heldout_inputs, "held-out inputs", he_labels)
    check_lag(max_delay, len(train), len(held))
    sym, tr_cls, he_cls = stream_classes(model, encoder, train, held, symbols)
    decoder = choose_decoder(decoder, sym.size)
    work = _working_copy(encoder, opts)
    regime = Context.parse(context)
    check_model_regime(regime, encoder)
    if regime.kind == "stream":
        tr_x = extract_states(work, train.values, [site])[site]
        he_x = extract_states(work, held.values, [site])[site]
        sig = signature_from_states(tr_x, tr_cls, he_x, he_cls, max_delay, sym, decoder, seed,
                                    boot, decoder_options)
    else:
        parts = []
        for stream, cls, what in ((train, tr_cls, "the training stream"),
                                  (held, he_cls, "the held-out stream")):
            rows = stream_layout(encoder, stream, regime, what)
            y, keep = regime_targets(rows, cls, max_delay)
            parts += [kept(regime_states(work, stream.values, rows, [site])[site], keep), y]
        sig = signature_from_targets(parts[0], parts[1], parts[2], parts[3], sym, decoder,
                                     seed, boot, decoder_options)
    sig.info = {"model": type(model).__name__, "layer": site.layer, "readout": site.readout,
                "units": site.units, "input": encoder.input_kind, "context": str(regime)}
    return sig


def _label_pair(labels, symbols) -> tuple[Sequence | None, Sequence | None]:
    """Check ``symbols`` (None or a str) and split ``labels`` (None or a pair of per-position
    sequences) into (training labels, held-out labels)."""
    if symbols is not None and not isinstance(symbols, str):
        raise MemlensError(f"symbols must be None, 'chars', 'top:N' or 'upos', got "
                           f"{type(symbols).__name__}")
    if labels is None:
        return None, None
    if not isinstance(labels, (tuple, list)) or len(labels) != 2:
        raise MemlensError("labels must be a pair (train_labels, heldout_labels), one label "
                           "per position of each stream")
    return labels[0], labels[1]


def _bootstrap(given: Bootstrap, seed: int) -> Bootstrap:
    """The signature's bootstrap: resamples (default 1000) and blocks as given, seeded with
    ``seed`` (one seed for the decoders and the intervals)."""
    if given.seed not in (0, seed):
        raise MemlensError("memory_signature seeds its decoders and its bootstrap with seed=: "
                           "leave options.bootstrap.seed at 0")
    return dataclasses.replace(given, resamples=given.count(DEFAULT_RESAMPLES), seed=seed)


def _working_copy(encoder: nn.Module, opts: RunOptions) -> nn.Module:
    """The encoder itself, or a copy on ``opts.device`` (None: where the encoder is) in
    ``opts.dtype`` when either is not the default (device None, float32)."""
    dtype = opts.torch_dtype()
    if opts.device is None and dtype == torch.float32:
        return encoder
    return copy.deepcopy(encoder).to(device=opts.device_for(encoder), dtype=dtype)


def stream_classes(model: nn.Module, encoder, train: Stream, held: Stream,
                   symbols: str | None) -> tuple[SymbolSet, np.ndarray, np.ndarray]:
    """The symbol set and the class id of every position of both streams (-1: excluded):
    from the streams' labels when given, else the ``symbols`` of the token streams."""
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
    return sym, tr_cls, he_cls


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


__all__ = ["memory_signature", "random_init_copy", "stream_classes", "to_ids"]
