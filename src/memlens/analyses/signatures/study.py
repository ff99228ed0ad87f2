"""A full signature study as run by ``memlens signatures``: model, controls, comparisons.

Steps (:func:`run_study`), each a function of its own:

1. :func:`~memlens.analyses.signatures.config.check_config`: every option, so that bad input
   fails before any output exists;
2. :func:`load_study`: the model, the sites of every requested layer (and unit split), the
   decoder-training and held-out streams, their symbols and classes, the comparison LMs'
   training text;
3. :func:`score_recurrent`: the states of all sites in one streaming pass per model (the
   model and its random-init control), then the joint decoders per site;
4. :func:`score_ngram` and :func:`score_window_lm`: the n-gram window state and the
   fixed-window neural LM;
5. :func:`add_divergence`: group / basis specialisation (pairwise JS divergence).

The result (:class:`~memlens.analyses.signatures.result.StudyResult`) is written by the
caller (``result.save``).

Several processes: inside a torch.distributed process group (``torchrun ... -m memlens
signatures``) every rank extracts the states of its contiguous shard of each stream, after a
warm-up of ``warmup`` positions (:func:`memlens.runtime.distributed.extract_states_sharded`);
the shards are all-gathered and rank 0 alone trains and scores the decoders and the
comparisons.

Progress: with a :class:`~memlens.analyses.signatures.progress.StudyCheckpoint` every finished
signature is saved as it completes; a resumed study takes the saved ones and gives the same
result as an uninterrupted run. An interrupt (Ctrl-C, SIGTERM) after at least one saved
signature raises :class:`~memlens.runtime.progress.Interrupted` naming the checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memlens.analyses.signatures.api import random_init_copy, to_ids
from memlens.analyses.signatures.config import StudyConfig, check_config
from memlens.analyses.signatures.decoders import AUTO_FAST_SYMBOLS, choose_decoder
from memlens.analyses.signatures.progress import StudyCheckpoint
from memlens.analyses.signatures.regime import kept, regime_states, regime_targets, stream_layout
from memlens.analyses.signatures.result import WINDOW_SITE, Entry, StudyResult, entry_key
from memlens.analyses.signatures.signature import (
    check_lag,
    group_divergence,
    signature_from_states,
    signature_from_targets,
)
from memlens.analyses.signatures.sites import SPLITS, parse_layers, study_sites
from memlens.analyses.signatures.symbols import SymbolSet, build_symbols, parse_symbols
from memlens.analyses.signatures.trust import check_trust
from memlens.core.errors import MemlensError
from memlens.models.encoder import as_encoder
from memlens.models.inputs import Stream
from memlens.models.loading import LoadedModel, load_model
from memlens.models.ngram import KneserNeyLM, window_states
from memlens.models.window_lm import WindowLM
from memlens.protocol import Site
from memlens.runtime import distributed
from memlens.runtime.context import Context, Layout, check_model_regime
from memlens.runtime.html import span_text
from memlens.runtime.progress import Interrupted

Log = Callable[[str], None]


@dataclass
class StudyInputs:
    """What a study reads (:func:`load_study`): the model, its sites, the two streams (tokens,
    UPOS tags or None, ids), the symbols with each position's class (-1: excluded), and the
    comparison LMs' training text (``lm_tokens`` None when no comparison is asked for)."""

    loaded: LoadedModel
    layers: list[int]
    sites: list[Site]
    tr_tokens: list[str]
    he_tokens: list[str]
    tr_ids: np.ndarray
    he_ids: np.ndarray
    symbols: SymbolSet
    tr_cls: np.ndarray
    he_cls: np.ndarray
    lm_path: str | None = None
    lm_tokens: list[str] | None = None
    decoder: str = "linear"  # the decoder used: --decoder, "auto" resolved by the symbols


# -- 2. the inputs ------------------------------------------------------------------------------
def load_study(cfg: StudyConfig, log: Log = print) -> StudyInputs:
    """Load the model, resolve its sites, read and split the corpora, build the symbols."""
    loaded = load_model(cfg.model, cfg.vocab, cfg.device, cfg.unit)
    encoder = loaded.encoder
    if encoder.input_kind != "tokens":
        raise MemlensError("memlens signatures reads text corpora: for a model with continuous "
                           "inputs use memlens.memory_signature with labels=")
    if encoder.vocab is None:
        raise MemlensError(f"the model {cfg.model} has no vocabulary: give --vocab FILE (its "
                           "symbols, one per line in id order)")
    parse_symbols(cfg.symbols, loaded.unit)
    layers = parse_layers(cfg.layer, encoder)
    sites = study_sites(encoder, layers, cfg.readout, cfg.units)
    (tr_tokens, tr_tags), (he_tokens, he_tags) = read_streams(cfg, loaded)
    check_lag(cfg.max_delay, len(tr_tokens), len(he_tokens))
    tr_ids, _, itos = to_ids(loaded.model, tr_tokens, "training text")
    he_ids, _, _ = to_ids(loaded.model, he_tokens, "held-out text")
    sym = build_symbols(cfg.symbols, loaded.unit, tr_ids, tr_tags, itos)
    tr_cls, he_cls = sym.classes(tr_ids, tr_tags), sym.classes(he_ids, he_tags)
    if not (he_cls >= 0).any():
        raise MemlensError("the held-out text has no symbol known to the decoders (only "
                           "unknown or untagged tokens)")
    decoder = choose_decoder(cfg.decoder, sym.size)
    if cfg.decoder == "auto":
        log(f"{sym.size} symbols: decoder {decoder} (--decoder auto: linear-fast from "
            f"{AUTO_FAST_SYMBOLS} symbols on; --decoder linear to choose the other)")
    elif cfg.decoder == "linear" and sym.size >= AUTO_FAST_SYMBOLS:
        log(f"{sym.size} symbols: the joint decoder's cost grows with the number of symbols; "
            "--decoder linear-fast fits the same softmax several times faster (docs/analyses/"
            "signatures.md, 'Large symbol sets')")
    inputs = StudyInputs(loaded, layers, sites, tr_tokens, he_tokens, tr_ids, he_ids, sym,
                         tr_cls, he_cls, decoder=decoder)
    if cfg.ngram or cfg.window_lm:
        inputs.lm_path, inputs.lm_tokens = lm_text(cfg, loaded, tr_tokens)
    return inputs


def _cut(tokens: list[str], tags: list | None, lo: int, hi: int
         ) -> tuple[list[str], list | None]:
    """tokens[lo:hi] and their tags (None without tags)."""
    return tokens[lo:hi], (tags[lo:hi] if tags else None)


def _first(tokens: list[str], tags: list | None, n: int | None
           ) -> tuple[list[str], list | None]:
    """The first ``n`` tokens and their tags; all of them (as given) when ``n`` is None."""
    return _cut(tokens, tags, 0, n) if n else (tokens, tags)


def read_streams(cfg: StudyConfig, loaded: LoadedModel
                 ) -> tuple[tuple[list[str], list | None], tuple[list[str], list | None]]:
    """((train tokens, tags), (held-out tokens, tags)): ``--corpus`` and ``--heldout`` cut to
    ``--train-tokens`` / ``--heldout-tokens``, or, with one file, its first part (default
    80%) for the decoders and the part after it held out."""
    corpus = loaded.read_corpus(cfg.corpus, cfg.format)
    tags = corpus.tags.get("upos")
    if cfg.heldout:
        held = loaded.read_corpus(cfg.heldout, cfg.format)
        return (_first(corpus.tokens, tags, cfg.train_tokens),
                _first(held.tokens, held.tags.get("upos"), cfg.heldout_tokens))
    n = len(corpus.tokens)
    n_tr = cfg.train_tokens or int(n * 0.8)
    n_he = cfg.heldout_tokens or n - n_tr
    if n_tr + n_he > n:
        raise MemlensError(f"--train-tokens {n_tr} + --heldout-tokens {n_he} exceed the "
                           f"corpus ({n} tokens)")
    return _cut(corpus.tokens, tags, 0, n_tr), _cut(corpus.tokens, tags, n_tr, n_tr + n_he)


def lm_text(cfg: StudyConfig, loaded: LoadedModel, tr_tokens: list[str]
            ) -> tuple[str, list[str]]:
    """(path, tokens) of the comparison LMs' training text: ``--lm-train``, else the model's
    recorded training text, else the decoder-training part; cut to ``--lm-max-tokens``."""
    lm_path = cfg.lm_train or loaded.extra.get("train", {}).get("train")
    if cfg.lm_train or (lm_path and Path(lm_path).exists()):  # --lm-train: always read
        lm_tokens = loaded.read_corpus(lm_path, cfg.format).tokens
    else:
        lm_path, lm_tokens = cfg.corpus + " (decoder-training part)", tr_tokens
    if cfg.lm_max_tokens:
        lm_tokens = lm_tokens[: cfg.lm_max_tokens]
    return lm_path, lm_tokens


def new_result(cfg: StudyConfig, inputs: StudyInputs) -> StudyResult:
    """The empty result: model and corpus descriptions, the symbol set."""
    result = StudyResult(cfg, inputs.loaded.info, {
        "path": cfg.corpus, "tokens": len(inputs.tr_tokens),
        "heldout_path": cfg.heldout or f"{cfg.corpus} (tokens after the training part)",
        "heldout_tokens": len(inputs.he_tokens),
        "oov_rate": inputs.loaded.encoder.vocab.oov_rate(inputs.he_tokens)})
    result.extras["symbols"] = {"kind": inputs.symbols.kind, "classes": inputs.symbols.size}
    return result


# -- 3, 4. scoring ------------------------------------------------------------------------------
class Scorer:
    """Trains and scores the decoders of one study, adding each signature to ``result``
    (and to ``checkpoint``), or takes it from the checkpoint when it is already done."""

    def __init__(self, cfg: StudyConfig, inputs: StudyInputs, result: StudyResult,
                 checkpoint: StudyCheckpoint | None, log: Log):
        self.cfg, self.inputs, self.result = cfg, inputs, result
        self.checkpoint, self.log = checkpoint, log
        self.regime = Context.parse(cfg.context)
        check_model_regime(self.regime, inputs.loaded.encoder)
        self.rows: list[Layout] = []       # train, held-out layouts (not under stream)
        self.targets: list[tuple[np.ndarray, np.ndarray]] = []
        if self.regime.kind != "stream":
            enc = inputs.loaded.encoder
            for ids, cls, what in ((inputs.tr_ids, inputs.tr_cls, "the training text"),
                                   (inputs.he_ids, inputs.he_cls, "the held-out text")):
                rows = stream_layout(enc, Stream(torch.as_tensor(ids)), self.regime, what)
                self.rows.append(rows)
                self.targets.append(regime_targets(rows, cls, cfg.max_delay))

    def regime_states(self, encoder, sites: list[Site]) -> tuple[dict, dict]:
        """Train and held-out states of ``sites`` at the rows of the context regime."""
        return tuple(regime_states(encoder, torch.as_tensor(ids), rows, sites)
                     for ids, rows in zip((self.inputs.tr_ids, self.inputs.he_ids), self.rows))

    def done(self, label: str, role: str, site: Site) -> bool:
        """Take a finished signature (and its extras) from the checkpoint; False if none."""
        key = entry_key(label, site)
        saved = self.checkpoint.get(key, self.cfg.max_delay) if self.checkpoint else None
        if saved is None:
            return False
        self.result.entries.append(Entry(label, role, site, saved[0]))
        self.result.extras.update(saved[1])
        self.log(f"{label} {site.label}: taken from the saved progress")
        return True

    def score(self, label: str, role: str, site: Site, tr_x, he_x, extras: dict | None = None,
              in_context: bool = False) -> None:
        """Train the decoders on ``tr_x``, score them on ``he_x``, record the signature.
        ``in_context``: the states are the rows of the context regime (not the stream)."""
        cfg, inputs = self.cfg, self.inputs
        t0 = time.time()
        if in_context:
            (y_tr, keep_tr), (y_he, keep_he) = self.targets
            sig = signature_from_targets(kept(tr_x, keep_tr), y_tr, kept(he_x, keep_he), y_he,
                                         inputs.symbols, inputs.decoder, cfg.seed,
                                         cfg.bootstrap_options(), warn=False)
        else:
            sig = signature_from_states(tr_x, inputs.tr_cls, he_x, inputs.he_cls,
                                        cfg.max_delay, inputs.symbols, inputs.decoder, cfg.seed,
                                        cfg.bootstrap_options(), warn=False)
        entry = Entry(label, role, site, sig)
        self.result.entries.append(entry)
        if self.checkpoint is not None:
            self.checkpoint.put(entry.key, sig, extras or {})
        self.log(f"{label} {site.label}: lag0 {sig.accuracy[0]:.3f}, lag1 "
                 f"{sig.accuracy[min(1, cfg.max_delay)]:.3f}, memory span: "
                 f"{span_text(sig.memory_span())} "
                 f"({time.time() - t0:.0f}s, {sig.epochs} epochs)")


def recurrent_runs(cfg: StudyConfig, inputs: StudyInputs) -> list[tuple[str, str, object]]:
    """(label, role, model) of the recurrent models: the model and its random-init control."""
    loaded = inputs.loaded
    runs = [(loaded.arch, "model", loaded.model)]
    if cfg.control == "random-init":
        runs.append((f"{loaded.arch} (random init)", "control",
                     random_init_copy(loaded.model, cfg.seed)))
    return runs


def score_recurrent(scorer: Scorer, runs: list[tuple[str, str, object]]) -> bool:
    """States of every site not yet done, one sharded pass per model and stream, then the
    decoders (rank 0). Returns True on rank 0 (the one that goes on to the comparisons)."""
    cfg, inputs, sites = scorer.cfg, scorer.inputs, scorer.inputs.sites
    group = distributed.current()
    rank0 = group is None or group.rank == 0
    warmup = distributed.default_warmup(cfg.max_delay) if cfg.warmup is None else cfg.warmup
    for label, role, net in runs:
        todo = [s for s in sites if not scorer.done(label, role, s)]
        if group is not None:  # rank 0 alone knows the saved progress
            todo = [sites[i] for i in distributed.broadcast_object(
                group, [sites.index(s) for s in todo])]
        if not todo:
            continue
        enc = as_encoder(net)
        in_context = scorer.regime.kind != "stream"
        if in_context:  # every rank reads the regime's rows itself; rank 0 scores
            tr_states, he_states = scorer.regime_states(enc, todo)
        else:
            tr_states = distributed.extract_states_sharded(enc, inputs.tr_ids, todo, warmup,
                                                           group)
            he_states = distributed.extract_states_sharded(enc, inputs.he_ids, todo, warmup,
                                                           group)
        with distributed.agreed(group, "while rank 0 trained the decoders"):
            for s in todo if rank0 else ():
                scorer.score(label, role, s, tr_states[s], he_states[s],
                             in_context=in_context)
        del tr_states, he_states
    if rank0:
        scorer.result.entries.sort(key=lambda e: (e.role != "model", sites.index(e.site)))
    return rank0


def score_ngram(scorer: Scorer) -> None:
    """The state of an n-gram model (its window of the last n-1 symbols, one-hot), and the
    held-out perplexity of the interpolated Kneser-Ney LM."""
    cfg, inputs, result = scorer.cfg, scorer.inputs, scorer.result
    label = f"{cfg.ngram}-gram window"
    if not cfg.ngram or scorer.done(label, "ngram", WINDOW_SITE):
        return
    lm = KneserNeyLM(cfg.ngram).fit(inputs.lm_tokens)
    ev = lm.evaluate(inputs.he_tokens)
    result.extras["ngram"] = {"order": cfg.ngram, "smoothing": "interpolated Kneser-Ney",
                              "train_path": inputs.lm_path,
                              "train_tokens": len(inputs.lm_tokens),
                              "heldout_bits": ev["bits"],
                              "heldout_perplexity": ev["perplexity"]}
    scorer.log(f"{cfg.ngram}-gram KN LM: {ev['bits']:.3f} bits/symbol, perplexity "
               f"{ev['perplexity']:.2f} on the held-out text")
    v = len(inputs.loaded.encoder.embedding.weight)
    scorer.score(label, "ngram", WINDOW_SITE, window_states(inputs.tr_ids, cfg.ngram, v),
                 window_states(inputs.he_ids, cfg.ngram, v), {"ngram": result.extras["ngram"]})


def score_window_lm(scorer: Scorer) -> None:
    """The hidden state of a feed-forward LM over a fixed window of ``--window-lm`` symbols,
    trained (seeded) on the LM text, and its held-out bits per symbol."""
    cfg, inputs, result = scorer.cfg, scorer.inputs, scorer.result
    label = f"window LM (n={cfg.window_lm})"
    if not cfg.window_lm or scorer.done(label, "window-lm", WINDOW_SITE):
        return
    vocab = inputs.loaded.encoder.vocab
    wl_ids = vocab.encode(inputs.lm_tokens).numpy()
    torch.manual_seed(cfg.seed)
    wlm = WindowLM(len(vocab), cfg.window_lm).fit(wl_ids, epochs=cfg.lm_epochs, seed=cfg.seed,
                                                 log=scorer.log)
    bits = wlm.bits(inputs.he_ids)
    result.extras["window_lm"] = {"order": cfg.window_lm, "train_path": inputs.lm_path,
                                  "train_tokens": len(inputs.lm_tokens),
                                  "epochs": cfg.lm_epochs, "heldout_bits": bits,
                                  "heldout_perplexity": 2.0 ** bits}
    scorer.log(f"window LM (n={cfg.window_lm}): {bits:.3f} bits/symbol on the held-out text")
    scorer.score(label, "window-lm", WINDOW_SITE, wlm.states(inputs.tr_ids),
                 wlm.states(inputs.he_ids), {"window_lm": result.extras["window_lm"]})


# -- 5. specialisation --------------------------------------------------------------------------
def add_divergence(result: StudyResult, cfg: StudyConfig, layers: list[int]) -> None:
    """With ``--units groups`` / ``bases``: per layer and role, the pairwise Jensen-Shannon
    divergence of the parts' recall profiles, in ``extras["<part>_divergence"]``."""
    if cfg.units not in SPLITS:
        return
    prefix, part = SPLITS[cfg.units]
    div = {}
    for layer in layers:
        for role in ("model", "control"):
            es = [e for e in result.entries if e.role == role and e.site.layer == layer
                  and e.site.units.startswith(prefix)]
            if len(es) > 1:
                div[f"{role}/layer{layer}"] = {
                    cfg.units: [e.site.units for e in es],
                    "js_divergence": group_divergence([e.sig.recall for e in es]).tolist()}
    result.extras[f"{part}_divergence"] = div


# -- the study ----------------------------------------------------------------------------------
def planned(cfg: StudyConfig, inputs: StudyInputs) -> int:
    """The number of signatures the study computes."""
    models = 1 + (cfg.control == "random-init")
    return models * len(inputs.sites) + bool(cfg.ngram) + bool(cfg.window_lm)


def run_study(cfg: StudyConfig, log: Log = print, checkpoint: StudyCheckpoint | None = None
              ) -> StudyResult:
    """Compute every signature of the study (no result files written here; finished
    signatures go to ``checkpoint`` when given, and are taken from it on resume).

    An interrupt (KeyboardInterrupt) once ``checkpoint`` holds a finished signature raises
    :class:`~memlens.runtime.progress.Interrupted` (unit "signatures")."""
    check_config(cfg)
    inputs = load_study(cfg, log)
    result = new_result(cfg, inputs)
    scorer = Scorer(cfg, inputs, result, checkpoint, log)
    result.extras["context"] = str(scorer.regime)  # the regime run (settings: as given)
    result.extras["decoder"] = inputs.decoder  # the decoder used ("auto" resolved)
    try:
        if not score_recurrent(scorer, recurrent_runs(cfg, inputs)):
            return result  # ranks other than 0: the comparisons need no states of the model
        if scorer.regime.kind != "stream" and (cfg.ngram or cfg.window_lm):
            log(f"the comparison LMs read the stream (their own regime), not context "
                f"{scorer.regime}")
            result.extras["comparisons_context"] = "stream"
        score_ngram(scorer)
        score_window_lm(scorer)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted) or checkpoint is None or not checkpoint.done:
            raise
        raise Interrupted(checkpoint.path, checkpoint.done, planned(cfg, inputs),
                          unit="signatures") from None
    add_divergence(result, cfg, inputs.layers)
    # trust checks (control better than the model, saturated states): TrustWarnings + flags
    result.extras["trust"] = check_trust(result.entries, result.extras["context"])
    return result


__all__ = ["Scorer", "StudyInputs", "add_divergence", "lm_text",
           "load_study", "new_result", "planned", "read_streams", "recurrent_runs",
           "run_study", "score_ngram", "score_recurrent", "score_window_lm"]
