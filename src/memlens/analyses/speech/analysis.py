"""What the layers of a grapheme CTC recogniser remember: per-layer memory signatures of
grapheme history and state gradients with respect to the input frames.

* :func:`prepare_speech`: a corpus (or one split of it) through the recogniser's feature
  pipeline (log-mel, normalisation, stacking), with a CTC forced alignment
  (:mod:`memlens.analyses.speech.align`) of each transcript under the recogniser's own emissions:
  per step, the index of the grapheme being spoken.
* :func:`grapheme_signature`: memory signature of one site, lag k counted in **graphemes**
  (the target at step t is the grapheme k positions before the one spoken at t, within the
  utterance); states are computed per utterance from a zero state, as in training.
* :func:`speech_gradients`: state gradients d r_t / d x_{t-tau} (tau in steps of
  ``stack`` x 10 ms), normalised by the covariance of the input frames, classes by the type of
  the grapheme spoken at the source step (vowel, consonant, space). The utterances are one
  continuous stream (state carried over); only targets at least ``max_delay`` steps into their
  utterance are accumulated, so every (t, t - tau) pair lies inside one utterance.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from memlens.analyses.signatures.api import _working_copy
from memlens.analyses.signatures.decoders import choose_decoder
from memlens.analyses.signatures.signature import (
    DEFAULT_RESAMPLES,
    Signature,
    check_lag,
    signature_from_targets,
)
from memlens.analyses.signatures.sites import resolve_site
from memlens.analyses.signatures.symbols import SymbolSet
from memlens.analyses.speech.align import ctc_viterbi, frame_positions, lag_labels
from memlens.core.errors import MemlensError
from memlens.data.speech import corpus as sdata
from memlens.data.speech.graphemes import GRAPHEMES, encode, grapheme_type
from memlens.models.asr import ASRModel
from memlens.models.encoder import as_encoder
from memlens.protocol import Site
from memlens.runtime.context import Context
from memlens.runtime.html import span_text
from memlens.runtime.options import Bootstrap, RunOptions, as_options, check_option


def grapheme_name(g: str) -> str:
    """Display name of a grapheme (space -> ``<space>``)."""
    return "<space>" if g == " " else g


@dataclass
class SpeechData:
    """Per utterance: ``inputs`` (T_i x I float32), ``positions`` (T_i: index of the grapheme
    being spoken, -1 before the first), ``targets`` (grapheme ids) and ``ids``."""

    inputs: list[np.ndarray]
    positions: list[np.ndarray]
    targets: list[list[int]]
    ids: list[str]

    @property
    def steps(self) -> int:
        return sum(len(x) for x in self.inputs)

    def values(self) -> torch.Tensor:
        """All utterances as one stream (sum T_i x I)."""
        return torch.from_numpy(np.concatenate(self.inputs))

    def spoken(self) -> list[str | None]:
        """Per step: the grapheme being spoken (display name), None before the first."""
        out: list[str | None] = []
        for pos, y in zip(self.positions, self.targets):
            out += [grapheme_name(GRAPHEMES[y[p]]) if p >= 0 else None for p in pos]
        return out

    def types(self) -> list[str | None]:
        """Per step: vowel / consonant / space of the grapheme being spoken (None before)."""
        out: list[str | None] = []
        for pos, y in zip(self.positions, self.targets):
            out += [grapheme_type(GRAPHEMES[y[p]]) if p >= 0 else None for p in pos]
        return out

    def offsets(self) -> np.ndarray:
        """Per step: its index inside its utterance."""
        return np.concatenate([np.arange(len(x)) for x in self.inputs])

    def lag_targets(self, max_delay: int) -> np.ndarray:
        """sum T_i x (K+1) grapheme ids k graphemes back (-1: none; K = ``max_delay``), per
        utterance."""
        return np.concatenate([lag_labels(p, y, max_delay)
                               for p, y in zip(self.positions, self.targets)])


@torch.no_grad()
def prepare_speech(model: ASRModel, corpus: str | sdata.SpeechCorpus, split: str | None = None,
                   max_utterances: int | None = None) -> SpeechData:
    """Inputs and forced alignments of a corpus (``split``: train/test of the manifest)."""
    c = sdata.read_corpus(corpus) if not isinstance(corpus, sdata.SpeechCorpus) else corpus
    if split is not None:
        c = c.split(split)
    if max_utterances:
        c = sdata.SpeechCorpus(c.utterances[:max_utterances], c.source, c.layout)
    feats = sdata.load_features(c, workers=2)
    model.eval()
    inputs, positions, targets = [], [], []
    for u, f in zip(c.utterances, feats):
        x = model.inputs(f)
        y = encode(u.text)
        if len(x) == 0:
            raise MemlensError(f"utterance {u.id} is shorter than one model step")
        logp = model(torch.from_numpy(x)[:, None])[:, 0].double().numpy()
        try:
            path, _ = ctc_viterbi(logp, y)
        except MemlensError as exc:
            raise MemlensError(f"utterance {u.id}: {exc}") from None
        inputs.append(x)
        positions.append(frame_positions(path))
        targets.append(y)
    return SpeechData(inputs, positions, targets, [u.id for u in c.utterances])


@torch.no_grad()
def utterance_states(model: nn.Module, data: SpeechData, site: Site | None = None,
                     carry: bool = False) -> np.ndarray:
    """States (sum T_i x D float32) of one site's readout, each utterance from a zero state
    (``carry``: the state carried from one utterance to the next, the ``stream`` regime;
    ``site`` None: the last layer's output; units must be "all"), computed on the device and
    in the dtype of the model's parameters."""
    enc = as_encoder(model)
    site = resolve_site(enc, site)  # readout None: the layer's output
    if site.units != "all":
        raise MemlensError(f"speech signatures decode whole layers (units 'all'), not units "
                           f"{site.units!r}")
    key = (site.layer, site.readout)
    param = next(enc.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    enc.eval()
    out, state = [], None
    for x in data.inputs:
        frames = torch.from_numpy(x).to(torch.float32).to(device=device, dtype=dtype)
        st, final = enc.states(frames[:, None], state, readouts=[key])
        state = final if carry else None
        out.append(st[key][:, 0].float().cpu().numpy())
    return np.concatenate(out)


def grapheme_symbols(train: SpeechData) -> SymbolSet:
    """Classes: the graphemes of the training transcripts, most frequent first."""
    counts = np.bincount(np.concatenate([np.asarray(y) for y in train.targets]),
                         minlength=len(GRAPHEMES))
    ids = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    names = [grapheme_name(GRAPHEMES[i]) for i in ids]
    return SymbolSet("labels", names, id_to_class={int(i): c for c, i in enumerate(ids)})


def _classes(y: np.ndarray, sym: SymbolSet) -> np.ndarray:
    lut = np.full(len(GRAPHEMES) + 1, -1, dtype=np.int64)
    for i, c in (sym.id_to_class or {}).items():
        lut[i] = c
    return np.where(y >= 0, lut[np.where(y >= 0, y, len(GRAPHEMES))], -1)


def grapheme_signature(model: nn.Module, train: SpeechData, heldout: SpeechData,
                       max_delay: int, site: Site | None = None, decoder: str = "auto", *,
                       context: Context | str | None = None, seed: int = 0,
                       decoder_options: dict | None = None,
                       options: RunOptions | None = None) -> Signature:
    """Memory signature of one site with lags in graphemes (module docstring): accuracy_k of
    decoding the grapheme k back from s_t (k = 0..``max_delay``), beside majority / prior
    baselines, per-grapheme recall and 95% block-bootstrap intervals over held-out
    utterances' steps. Decoders train on ``train`` and are scored on ``heldout``.

    ``site``: ``Site(layer=-1, readout=None, units="all")`` by default; readout None is the
    layer's output (as :func:`memlens.memory_signature`). ``decoder``: "auto" (default:
    "linear" for the 29 graphemes, as memory_signature's rule), "linear", "linear-fast" or
    "mlp"; ``decoder_options``: its keyword arguments. ``seed`` seeds the
    decoders and the bootstrap's block draws. ``options``: device and dtype of the state
    computation (device None: where the model is) and ``options.bootstrap`` (resamples,
    default 1000, 0: no intervals; blocks, default 20). ``context``: "sentence" (default:
    each utterance from the initial state, as the model was trained) or "stream" (the state
    carried from one utterance to the next); lags, counted in graphemes, stay inside an
    utterance either way, so windows of frames are refused.
    """
    _check_data(train, "train")
    _check_data(heldout, "heldout")
    regime = Context.parse(context, default="sentence")
    if regime.kind not in ("sentence", "stream"):
        raise MemlensError(f"speech signatures count lags in graphemes of one utterance: give "
                           f"context sentence or stream, not {regime}")
    opts = as_options(options)
    boot = _bootstrap(opts.bootstrap, seed)
    check_lag(max_delay, train.steps, heldout.steps)
    sym = grapheme_symbols(train)
    y_tr = _classes(train.lag_targets(max_delay), sym)
    y_he = _classes(heldout.lag_targets(max_delay), sym)
    enc = as_encoder(model)
    site = resolve_site(enc, site)
    work = _working_copy(enc, opts)
    carry = regime.kind == "stream"
    tr_x = utterance_states(work, train, site, carry)
    he_x = utterance_states(work, heldout, site, carry)
    decoder = choose_decoder(decoder, sym.size)
    sig = signature_from_targets(tr_x, y_tr, he_x, y_he, sym, decoder, seed, boot,
                                 decoder_options)
    sig.info = {"model": type(model).__name__, "layer": site.layer, "readout": site.readout,
                "units": site.units, "input": "vectors", "lag_unit": "graphemes",
                "utterances": [len(train.inputs), len(heldout.inputs)], "context": str(regime)}
    return sig


def _check_data(data, what: str) -> None:
    """``data`` must be a :class:`SpeechData` (from :func:`prepare_speech`) with utterances."""
    if not isinstance(data, SpeechData):
        raise MemlensError(f"{what} must be SpeechData (memlens.analyses.speech.analysis."
                           f"prepare_speech), got {type(data).__name__}")
    if not data.inputs:
        raise MemlensError(f"{what}: the speech data holds no utterance")


def _bootstrap(given: Bootstrap, seed: int) -> Bootstrap:
    """The signature's bootstrap: resamples (default 1000) and blocks as given, seeded with
    ``seed`` (one seed for the decoders and the intervals, as memory_signature)."""
    if given.seed not in (0, seed):
        raise MemlensError("grapheme_signature seeds its decoders and its bootstrap with "
                           "seed=: leave options.bootstrap.seed at 0")
    return dataclasses.replace(given, resamples=given.count(DEFAULT_RESAMPLES), seed=seed)


def speech_gradients(model: nn.Module, inputs: SpeechData, max_delay: int, *,
                     site: Site | None = None, options: RunOptions | None = None, **kwargs):
    """State gradients of one site w.r.t. the input frames of ``inputs`` (the utterances as
    one stream), classes vowel / consonant / space of the aligned grapheme at the source step
    (module docstring). ``site``, ``options`` and ``kwargs`` (method, context, ...) as
    :func:`memlens.state_gradients`. Without ``context`` the state is carried across
    utterances and the target mask keeps the targets with K frames of their utterance before
    them; ``context="sentence"`` restarts the state at each utterance and keeps every pair
    inside one instead (the utterances are the stream's sentences)."""
    from memlens.analyses.gradients import EngineSettings, state_gradients
    from memlens.models.inputs import Stream

    _check_data(inputs, "inputs")
    if max_delay is None:
        raise MemlensError("speech_gradients needs max_delay (the largest delay K)")
    check_option("max_delay", max_delay)
    offsets = inputs.offsets()
    stream = Stream(inputs.values().to(torch.float32), labels=inputs.types(),
                    sentences=np.nonzero(offsets == 0)[0])
    if kwargs.get("context") is not None:
        return state_gradients(model, stream, max_delay, site=site, options=options, **kwargs)
    mask = offsets >= max_delay
    if not mask.any():
        raise MemlensError(f"no utterance is longer than max_delay={max_delay} steps")
    return state_gradients(model, stream, max_delay, site=site, options=options,
                           engine=EngineSettings(target_mask=mask), **kwargs)


def _limit(data: SpeechData, max_steps: int | None) -> SpeechData:
    """The first utterances of ``data`` holding at most ``max_steps`` steps (at least one)."""
    if not max_steps:
        return data
    n, total = 0, 0
    while n < len(data.inputs) and (n == 0 or total + len(data.inputs[n]) <= max_steps):
        total += len(data.inputs[n])
        n += 1
    return SpeechData(data.inputs[:n], data.positions[:n], data.targets[:n], data.ids[:n])


def speech_signature_study(cfg, log=print):
    """``memlens signatures --model ASR.pt --corpus SPEECHDIR``: grapheme-lag signatures of
    the chosen layers of the recogniser and of its random-init control, as a
    :class:`~memlens.analyses.signatures.result.StudyResult` (``cfg``: a StudyConfig; the decoders
    train on the corpus's ``train`` split (or all of --corpus) and are scored on its ``test``
    split (or --heldout); ``train_tokens`` / ``heldout_tokens`` cap the steps)."""
    import time

    from memlens.analyses.signatures.api import random_init_copy
    from memlens.analyses.signatures.result import Entry, StudyResult
    from memlens.analyses.signatures.sites import parse_layers
    from memlens.models.asr import load_asr

    if cfg.symbols not in (None, "graphemes"):
        raise MemlensError("a speech recogniser's signatures decode graphemes: leave --symbols "
                           "out (or --symbols graphemes)")
    if cfg.units != "all" or cfg.ngram or cfg.window_lm:
        raise MemlensError("--units, --ngram and --window-lm are not available for speech "
                           "corpora")
    regime = Context.parse(cfg.context, default="sentence")
    if regime.kind not in ("sentence", "stream"):
        raise MemlensError(f"speech signatures count lags in graphemes of one utterance: give "
                           f"--context sentence or stream, not {regime}")
    asr = load_asr(cfg.model)
    corpus = sdata.read_corpus(cfg.corpus)
    has_split = all("split" in u.meta for u in corpus.utterances)
    if cfg.heldout:
        train = prepare_speech(asr, corpus)
        held = prepare_speech(asr, cfg.heldout)
    elif has_split:
        train = prepare_speech(asr, corpus, "train")
        held = prepare_speech(asr, corpus, "test")
    else:
        raise MemlensError(f"{cfg.corpus}: give --heldout (the manifest has no split column)")
    train, held = _limit(train, cfg.train_tokens), _limit(held, cfg.heldout_tokens)
    enc = asr.encoder
    views = [resolve_site(enc, Site(i, cfg.readout)) for i in parse_layers(cfg.layer, enc)]
    runs = [(f"{asr.kind} CTC", "model", enc)]
    if cfg.control == "random-init":
        runs.append((f"{asr.kind} CTC (random init)", "control",
                     random_init_copy(enc, cfg.seed)))
    result = StudyResult(config=cfg, model_meta={"path": str(cfg.model), "arch": asr.kind,
                                                 "layers": enc.num_layers,
                                                 "hidden": enc.hidden_sizes[-1],
                                                 "input": "vectors", "stack": asr.stack},
                         corpus_meta={"path": str(cfg.corpus), "kind": "speech",
                                      "train_utterances": len(train.inputs),
                                      "train_steps": train.steps,
                                      "heldout_utterances": len(held.inputs),
                                      "heldout_steps": held.steps},
                         extras={"context": str(regime),
                                 "lag_unit": "graphemes (k-th previous grapheme of the one "
                                             "being spoken, CTC forced alignment)",
                                 "step_ms": 10 * asr.stack})
    options = RunOptions(bootstrap=cfg.bootstrap_options())  # states on the cpu, as before
    for label, role, net in runs:
        for v in views:
            t0 = time.time()
            sig = grapheme_signature(net, train, held, cfg.max_delay, v, cfg.decoder,
                                     context=regime, seed=cfg.seed, options=options)
            result.entries.append(Entry(label, role, v, sig))
            log(f"{label} {v.label}: lag0 {sig.accuracy[0]:.3f}, lag1 "
                f"{sig.accuracy[min(1, cfg.max_delay)]:.3f}, memory span: "
                f"{span_text(sig.memory_span(), 'graphemes')} ({time.time() - t0:.0f}s)")
    return result
