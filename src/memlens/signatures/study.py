"""A full signature study as run by ``memlens signatures``: model, controls, comparisons.

Steps: validate every option (so that bad input fails before any output exists); extract the
states of all requested views in one streaming pass per model; train and score the joint
decoders per view; add the random-init control, the n-gram window state and the fixed-window
neural LM when asked; write the result directory atomically (see :mod:`.result`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from memlens.data import load_corpus
from memlens.errors import MemlensError
from memlens.models.encoder import as_encoder
from memlens.models.layers import FactorizedLSTMLayer, GroupedLSTMLayer
from memlens.models.loading import load_model
from memlens.results import Result
from memlens.signatures.ngram import KneserNeyLM, window_states
from memlens.signatures.signature import (
    Signature,
    check_lag,
    group_divergence,
    random_init_copy,
    signature_from_states,
    to_ids,
)
from memlens.signatures.states import View, check_view, extract_states
from memlens.signatures.symbols import build_symbols, parse_symbols
from memlens.signatures.window_lm import WindowLM


@dataclass
class StudyConfig:
    """Options of ``memlens signatures`` (see its --help)."""

    model: str
    corpus: str
    out: str
    heldout: str | None = None
    format: str = "text"
    layers: str = "all"
    readout: str | None = None
    units: str = "all"
    max_delay: int = 20
    decoder: str = "linear"
    symbols: str | None = None
    control: str = "random-init"
    ngram: int = 0
    window_lm: int = 0
    lm_train: str | None = None
    lm_max_tokens: int | None = 300000
    lm_epochs: int = 2
    train_tokens: int | None = None
    heldout_tokens: int | None = None
    blocks: int = 20
    bootstrap: int = 1000
    seed: int = 0
    vocab: str | None = None
    unit: str | None = None
    device: str = "cpu"


@dataclass
class Entry:
    """One signature: which model (label, role) and which view."""

    label: str
    role: str
    view: View
    sig: Signature


@dataclass(repr=False)
class StudyResult(Result):
    """The signatures of a study (model, controls, comparison LMs) as one result: one table
    row per (signature, lag); saved as result.json, table.csv, recall.npz and PNGs."""

    kind = "signatures"
    arrays_file = "recall.npz"

    config: StudyConfig
    model_meta: dict
    corpus_meta: dict
    entries: list[Entry] = field(default_factory=list)
    extras: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        from memlens.signatures.result import table_rows

        return table_rows(self)

    def series(self) -> list[dict]:
        from memlens.signatures.result import SERIES

        return SERIES

    def settings_info(self) -> dict:
        settings = dataclasses.asdict(self.config)
        settings.pop("out", None)
        return settings

    def summary(self) -> dict:
        return {"signatures": summary_rows(self), **self.extras,
                "memory_span_definition": "last lag with held-out accuracy above majority + "
                                          "0.05 (-1: none)"}

    def arrays(self) -> dict:
        from memlens.signatures.result import recall_arrays

        return recall_arrays(self)

    def figures(self, out) -> list[dict]:
        from memlens.signatures.result import make_plots

        return make_plots(self, out)


def parse_layers(spec: str, num_layers: int, encoder) -> list[int]:
    if spec == "all":
        return list(range(num_layers))
    try:
        wanted = [int(s) for s in spec.split(",")]
    except ValueError:
        raise MemlensError(f"bad --layers {spec!r}: use all or comma-separated layer indices"
                           ) from None
    return sorted({encoder.resolve_layer(i) for i in wanted})


# unit modes that split a layer into parts compared by a pairwise divergence:
# mode -> (unit spec prefix of one part, name of the part)
SPLITS = {"groups": ("group:", "group"), "bases": ("basis:", "basis")}


def expand_units(encoder, layer: int, units: str) -> list[str]:
    """``groups`` -> one ``group:g`` per group of a grouped layer; otherwise [units].

    ``bases`` -> the whole factor space of a factorised layer, then one ``basis:j`` per
    basis j = 0..r-1 (see :mod:`.states` for what a basis carries)."""
    if units == "bases":
        lay = encoder.layers[layer]
        if not isinstance(lay, FactorizedLSTMLayer):
            raise MemlensError(f"--units bases: layer {layer} is not a factorised LSTM "
                               f"({type(lay).__name__})")
        return ["factor"] + [f"basis:{j}" for j in range(lay.rank)]
    if units != "groups":
        return [units]
    lay = encoder.layers[layer]
    if not isinstance(lay, GroupedLSTMLayer):
        raise MemlensError(f"--units groups: layer {layer} is not a grouped LSTM")
    return [f"group:{g}" for g in range(lay.groups)]


def run_study(cfg: StudyConfig, log=print) -> StudyResult:
    """Compute every signature of the study (no files written here)."""
    # ---- validation: everything that can fail on user input, before any heavy work --------
    if cfg.control not in ("random-init", "none"):
        raise MemlensError(f"unknown --control {cfg.control!r}: choose random-init or none")
    if cfg.ngram < 0 or cfg.ngram == 1 or cfg.window_lm < 0 or cfg.window_lm == 1:
        raise MemlensError("--ngram and --window-lm need an order >= 2 (0 = off)")
    loaded = load_model(cfg.model, cfg.vocab, cfg.device, cfg.unit)
    model, encoder, unit = loaded.model, loaded.encoder, loaded.unit
    if encoder.input_kind != "tokens":
        raise MemlensError("memlens signatures reads text corpora: for a model with continuous "
                           "inputs use memlens.memory_signature with labels=")
    if encoder.vocab is None:
        raise MemlensError(f"the model {cfg.model} has no vocabulary: give --vocab FILE (its "
                           "symbols, one per line in id order)")
    parse_symbols(cfg.symbols, unit)
    layers = parse_layers(cfg.layers, encoder.num_layers, encoder)
    views = [check_view(encoder, layer, cfg.readout, u)
             for layer in layers for u in expand_units(encoder, layer, cfg.units)]
    corpus = load_corpus(cfg.corpus, cfg.format, unit)
    if cfg.heldout:
        held = load_corpus(cfg.heldout, cfg.format, unit)
        tr_tokens, tr_tags = corpus.tokens, corpus.tags.get("upos")
        he_tokens, he_tags = held.tokens, held.tags.get("upos")
        if cfg.train_tokens:
            tr_tokens = tr_tokens[: cfg.train_tokens]
            tr_tags = tr_tags[: cfg.train_tokens] if tr_tags else None
        if cfg.heldout_tokens:
            he_tokens = he_tokens[: cfg.heldout_tokens]
            he_tags = he_tags[: cfg.heldout_tokens] if he_tags else None
    else:  # one file: decoder-training part first, held-out part after it
        n = len(corpus.tokens)
        n_tr = cfg.train_tokens or int(n * 0.8)
        n_he = cfg.heldout_tokens or n - n_tr
        if n_tr + n_he > n:
            raise MemlensError(f"--train-tokens {n_tr} + --heldout-tokens {n_he} exceed the "
                               f"corpus ({n} tokens)")
        tags = corpus.tags.get("upos")
        tr_tokens, he_tokens = corpus.tokens[:n_tr], corpus.tokens[n_tr:n_tr + n_he]
        tr_tags = tags[:n_tr] if tags else None
        he_tags = tags[n_tr:n_tr + n_he] if tags else None
    check_lag(cfg.max_delay, len(tr_tokens), len(he_tokens))
    tr_ids, _, itos = to_ids(model, tr_tokens, "training text")
    he_ids, _, _ = to_ids(model, he_tokens, "held-out text")
    sym = build_symbols(cfg.symbols, unit, tr_ids, tr_tags, itos)
    tr_cls, he_cls = sym.classes(tr_ids, tr_tags), sym.classes(he_ids, he_tags)
    if not (he_cls >= 0).any():
        raise MemlensError("the held-out text has no symbol known to the decoders (only "
                           "unknown or untagged tokens)")
    lm_tokens = None
    if cfg.ngram or cfg.window_lm:
        lm_path = cfg.lm_train or loaded.extra.get("train", {}).get("train")
        if lm_path and Path(lm_path).exists():
            lm_tokens = load_corpus(lm_path, cfg.format, unit).tokens
        else:
            lm_path, lm_tokens = cfg.corpus + " (decoder-training part)", tr_tokens
        if cfg.lm_max_tokens:
            lm_tokens = lm_tokens[: cfg.lm_max_tokens]

    arch = loaded.arch
    result = StudyResult(cfg, loaded.info,
                         {"path": cfg.corpus, "tokens": len(tr_tokens),
                          "heldout_path": cfg.heldout or f"{cfg.corpus} (tokens after the "
                          "training part)", "heldout_tokens": len(he_tokens),
                          "oov_rate": encoder.vocab.oov_rate(he_tokens)})
    result.extras["symbols"] = {"kind": sym.kind, "classes": sym.size}
    dec = dict(decoder=cfg.decoder, seed=cfg.seed, blocks=cfg.blocks, resamples=cfg.bootstrap)

    def score(label: str, role: str, view: View, tr_x, he_x) -> None:
        t0 = time.time()
        sig = signature_from_states(tr_x, tr_cls, he_x, he_cls, cfg.max_delay, sym, **dec)
        result.entries.append(Entry(label, role, view, sig))
        log(f"{label} {view.label}: lag0 {sig.accuracy[0]:.3f}, lag1 "
            f"{sig.accuracy[min(1, cfg.max_delay)]:.3f}, memory span {sig.memory_span()} "
            f"({time.time() - t0:.0f}s, {sig.epochs} epochs)")

    # ---- the model and its random-init control ----------------------------------------------
    runs = [(arch, "model", model)]
    if cfg.control == "random-init":
        runs.append((f"{arch} (random init)", "control", random_init_copy(model, cfg.seed)))
    for label, role, net in runs:
        enc = as_encoder(net)
        tr_states = extract_states(enc, tr_ids, views)
        he_states = extract_states(enc, he_ids, views)
        for v in views:
            score(label, role, v, tr_states[v], he_states[v])
        del tr_states, he_states

    # ---- non-recurrent comparisons -------------------------------------------------------------
    win_view = View(-1, "window", "all")
    if cfg.ngram:
        lm = KneserNeyLM(cfg.ngram).fit(lm_tokens)
        ev = lm.evaluate(he_tokens)
        result.extras["ngram"] = {"order": cfg.ngram, "smoothing": "interpolated Kneser-Ney",
                                  "train_path": lm_path, "train_tokens": len(lm_tokens),
                                  "heldout_bits": ev["bits"],
                                  "heldout_perplexity": ev["perplexity"]}
        log(f"{cfg.ngram}-gram KN LM: {ev['bits']:.3f} bits/symbol, perplexity "
            f"{ev['perplexity']:.2f} on the held-out text")
        v = len(encoder.embedding.weight)
        score(f"{cfg.ngram}-gram window", "ngram", win_view,
              window_states(tr_ids, cfg.ngram, v), window_states(he_ids, cfg.ngram, v))
    if cfg.window_lm:
        wl_ids = encoder.vocab.encode(lm_tokens).numpy()
        torch.manual_seed(cfg.seed)
        wlm = WindowLM(len(encoder.vocab), cfg.window_lm).fit(wl_ids, epochs=cfg.lm_epochs,
                                                            seed=cfg.seed, log=log)
        bits = wlm.bits(he_ids)
        result.extras["window_lm"] = {"order": cfg.window_lm, "train_path": lm_path,
                                      "train_tokens": len(lm_tokens), "epochs": cfg.lm_epochs,
                                      "heldout_bits": bits, "heldout_perplexity": 2.0 ** bits}
        log(f"window LM (n={cfg.window_lm}): {bits:.3f} bits/symbol on the held-out text")
        score(f"window LM (n={cfg.window_lm})", "window-lm", win_view, wlm.states(tr_ids),
              wlm.states(he_ids))

    # ---- group / basis specialisation ----------------------------------------------------------
    if cfg.units in SPLITS:
        prefix, part = SPLITS[cfg.units]
        div = {}
        for layer in layers:
            for role in ("model", "control"):
                es = [e for e in result.entries if e.role == role and e.view.layer == layer
                      and e.view.units.startswith(prefix)]
                if len(es) > 1:
                    div[f"{role}/layer{layer}"] = {
                        cfg.units: [e.view.units for e in es],
                        "js_divergence": group_divergence([e.sig.recall for e in es]).tolist()}
        result.extras[f"{part}_divergence"] = div
    return result


def summary_rows(result: StudyResult) -> list[dict]:
    """Headline numbers per signature."""
    out = []
    for e in result.entries:
        s = e.sig
        out.append({"model": e.label, "role": e.role, "layer": e.view.layer,
                    "readout": e.view.readout, "units": e.view.units,
                    "memory_span": s.memory_span(),
                    "accuracy_lag0": float(s.accuracy[0]),
                    "accuracy_lag1": float(s.accuracy[min(1, s.max_lag)]),
                    "bits_total": float(s.bits.sum()),
                    "entropy_bits": float(s.entropy[0]),
                    "majority": float(s.majority[0]),
                    "decoder_epochs": s.epochs})
    return out


