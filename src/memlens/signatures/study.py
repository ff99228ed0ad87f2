"""A full signature study as run by ``memlens signatures``: model, controls, comparisons.

Steps: validate every option (so that bad input fails before any output exists); extract the
states of all requested views in one streaming pass per model; train and score the joint
decoders per view; add the random-init control, the n-gram window state and the fixed-window
neural LM when asked; write the result directory atomically (see :mod:`.result`).

Several processes: inside a torch.distributed process group (``torchrun ... -m memlens
signatures``) every rank extracts the states of its contiguous shard of each stream, after a
warm-up of ``warmup`` positions (:func:`memlens.distributed.extract_states_sharded`); the
shards are all-gathered and rank 0 alone trains and scores the decoders and the comparisons.

Progress: with a ``progress`` directory (``memlens signatures`` uses ``.<OUT>.partial/``
beside OUT) every finished signature is saved there as it completes (``entry-<i>.npz`` plus
its SHA-256 in ``state.json``, with a fingerprint of the options and of the model and corpus
files). A run interrupted at any moment resumes from the finished signatures and gives the
same result as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from memlens import distributed
from memlens.errors import MemlensError
from memlens.io import write_atomic, write_json
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
from memlens.signatures.states import View, check_view
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
    warmup: int | None = None
    world_size: int = 1


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


# a symbol count from which the joint decoder's cost is worth a hint (word types)
LARGE_SYMBOL_SET = 1000

PROGRESS_FORMAT = "memlens-signatures-partial"
_ARRAYS = ("accuracy", "acc_low", "acc_high", "bits", "bits_low", "bits_high", "bits_fraction",
           "cross_entropy", "entropy", "majority", "prior", "recall", "support", "temperature")


def _sha256_file(path: str | Path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


class StudyProgress:
    """Finished signatures of a study, saved in a directory as they complete (see module
    docstring). ``resume=False`` starts afresh (removing only files it wrote earlier)."""

    def __init__(self, path: str | Path, cfg: StudyConfig, resume: bool):
        self.path = Path(path)
        h = hashlib.sha256(json.dumps({k: v for k, v in dataclasses.asdict(cfg).items()
                                       if k != "out"}, sort_keys=True).encode())
        for f in (cfg.model, cfg.corpus, cfg.heldout, cfg.lm_train):
            if f and Path(f).is_file():
                _sha256_file(f, h)
        self.fingerprint = h.hexdigest()
        self.state: dict = {"format": PROGRESS_FORMAT, "fingerprint": self.fingerprint,
                            "entries": {}, "extras": {}}
        if resume:
            self._load()
        else:
            self.discard()
        self.path.mkdir(parents=True, exist_ok=True)

    def _bad(self, why: str) -> MemlensError:
        return MemlensError(f"signature progress in {self.path} is damaged or was edited "
                            f"({why}): delete it or run without --resume")

    def _load(self) -> None:
        f = self.path / "state.json"
        if not f.is_file():
            raise MemlensError(f"nothing to resume: no saved progress in {self.path} (run "
                               "without --resume)")
        try:
            state = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            raise self._bad("unreadable state.json") from None
        if not isinstance(state, dict) or state.get("format") != PROGRESS_FORMAT or \
                not isinstance(state.get("entries"), dict) or \
                not isinstance(state.get("extras"), dict):
            raise self._bad("not a progress file")
        if state.get("fingerprint") != self.fingerprint:
            raise MemlensError(f"saved progress in {self.path} was made with a different "
                               "model, corpus or options: delete it or run without --resume")
        self.state = state

    def files(self) -> list[Path]:
        """The files this progress directory holds that memlens wrote."""
        return [self.path / "state.json", *sorted(self.path.glob("entry-*.npz"))]

    def discard(self) -> None:
        """Remove the files memlens wrote here (and the directory when it is then empty)."""
        if not self.path.is_dir():
            return
        for f in self.files():
            f.unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:
            pass

    def get(self, key: str, max_lag: int) -> tuple[Signature, dict] | None:
        """The saved signature (and extras) for ``key``, validated; None if not done yet."""
        rec = self.state["entries"].get(key)
        if rec is None:
            return None
        f = self.path / f"entry-{rec.get('index')}.npz"
        if not f.is_file() or _sha256_file(f).hexdigest() != rec.get("sha256"):
            raise self._bad(f"{f.name} is missing or its digest does not match")
        try:
            with np.load(f, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays.pop("meta")))
        except (OSError, ValueError, KeyError):
            raise self._bad(f"{f.name} is unreadable") from None
        n = max_lag + 1
        symbols = [str(x) for x in arrays.pop("symbols")]
        for k in _ARRAYS:
            a = arrays.get(k)
            if k == "temperature" and a is not None and a.size == 0:
                arrays[k] = None
                continue
            want = (n, len(symbols)) if k in ("recall", "support") else (n,)
            if a is None or a.shape != want:
                raise self._bad(f"{f.name}: {k} has the wrong shape")
        sig = Signature(**{k: arrays[k] for k in _ARRAYS}, symbols=symbols, **meta["sig"])
        return sig, meta["extras"]

    def put(self, key: str, sig: Signature, extras: dict) -> None:
        """Save one finished signature (atomically), then the index that names it."""
        index = len(self.state["entries"])
        f = self.path / f"entry-{index}.npz"
        arrays = {k: (np.zeros(0) if getattr(sig, k) is None else getattr(sig, k))
                  for k in _ARRAYS}
        meta = {"sig": {"n_train": sig.n_train, "n_heldout": sig.n_heldout,
                        "decoder": sig.decoder, "epochs": int(sig.epochs), "info": sig.info},
                "extras": extras}

        def writer(p: Path) -> None:
            with open(p, "wb") as fh:
                np.savez(fh, symbols=np.array(sig.symbols, dtype=str),
                         meta=np.array(json.dumps(meta)), **arrays)

        write_atomic(f, writer)
        self.state["entries"][key] = {"index": index,
                                      "sha256": _sha256_file(f).hexdigest()}
        write_json(self.path / "state.json", self.state)


def run_study(cfg: StudyConfig, log=print, progress: StudyProgress | None = None
              ) -> StudyResult:
    """Compute every signature of the study (no result files written here; finished
    signatures go to ``progress`` when given, and are taken from it on resume)."""
    # ---- validation: everything that can fail on user input, before any heavy work --------
    if cfg.control not in ("random-init", "none"):
        raise MemlensError(f"unknown --control {cfg.control!r}: choose random-init or none")
    if cfg.ngram < 0 or cfg.ngram == 1 or cfg.window_lm < 0 or cfg.window_lm == 1:
        raise MemlensError("--ngram and --window-lm need an order >= 2 (0 = off)")
    for name in ("train_tokens", "heldout_tokens", "lm_max_tokens"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise MemlensError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if cfg.blocks < 2:
        raise MemlensError(f"--blocks must be at least 2 (bootstrap intervals over blocks), "
                           f"got {cfg.blocks}")
    if cfg.bootstrap < 0:
        raise MemlensError(f"--bootstrap must be >= 0 (0: no intervals), got {cfg.bootstrap}")
    if cfg.lm_epochs < 1:
        raise MemlensError(f"--lm-epochs must be positive, got {cfg.lm_epochs}")
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
    corpus = loaded.read_corpus(cfg.corpus, cfg.format)
    if cfg.heldout:
        held = loaded.read_corpus(cfg.heldout, cfg.format)
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
    if cfg.decoder == "linear" and sym.size >= LARGE_SYMBOL_SET:
        log(f"{sym.size} symbols: the joint decoder's cost grows with the number of symbols; "
            "--decoder linear-fast fits the same softmax several times faster (README, "
            "'Large symbol sets')")
    lm_tokens = None
    if cfg.ngram or cfg.window_lm:
        lm_path = cfg.lm_train or loaded.extra.get("train", {}).get("train")
        if lm_path and Path(lm_path).exists():
            lm_tokens = loaded.read_corpus(lm_path, cfg.format).tokens
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

    def key(label: str, view: View) -> str:
        return f"{label} | {view.layer} | {view.readout} | {view.units}"

    def done(label: str, role: str, view: View) -> bool:
        """Take a finished signature (and its extras) from the saved progress."""
        saved = progress.get(key(label, view), cfg.max_delay) if progress else None
        if saved is None:
            return False
        result.entries.append(Entry(label, role, view, saved[0]))
        result.extras.update(saved[1])
        log(f"{label} {view.label}: taken from the saved progress")
        return True

    def score(label: str, role: str, view: View, tr_x, he_x, extras: dict | None = None
              ) -> None:
        t0 = time.time()
        sig = signature_from_states(tr_x, tr_cls, he_x, he_cls, cfg.max_delay, sym, **dec)
        result.entries.append(Entry(label, role, view, sig))
        if progress is not None:
            progress.put(key(label, view), sig, extras or {})
        log(f"{label} {view.label}: lag0 {sig.accuracy[0]:.3f}, lag1 "
            f"{sig.accuracy[min(1, cfg.max_delay)]:.3f}, memory span {sig.memory_span()} "
            f"({time.time() - t0:.0f}s, {sig.epochs} epochs)")

    # ---- the model and its random-init control ----------------------------------------------
    group = distributed.current()
    rank0 = group is None or group.rank == 0
    warmup = distributed.default_warmup(cfg.max_delay) if cfg.warmup is None else cfg.warmup
    runs = [(arch, "model", model)]
    if cfg.control == "random-init":
        runs.append((f"{arch} (random init)", "control", random_init_copy(model, cfg.seed)))
    for label, role, net in runs:
        todo = [v for v in views if not done(label, role, v)]
        if group is not None:  # rank 0 alone knows the saved progress
            todo = [views[i] for i in distributed.broadcast_object(
                group, [views.index(v) for v in todo])]
        if not todo:
            continue
        enc = as_encoder(net)
        tr_states = distributed.extract_states_sharded(enc, tr_ids, todo, warmup, group)
        he_states = distributed.extract_states_sharded(enc, he_ids, todo, warmup, group)
        with distributed.agreed(group, "while rank 0 trained the decoders"):
            for v in todo if rank0 else ():
                score(label, role, v, tr_states[v], he_states[v])
        del tr_states, he_states
    if not rank0:  # the comparisons need no states of the model: rank 0 computes them
        return result
    result.entries.sort(key=lambda e: (e.role != "model", views.index(e.view)))

    # ---- non-recurrent comparisons -------------------------------------------------------------
    win_view = View(-1, "window", "all")
    if cfg.ngram and not done(f"{cfg.ngram}-gram window", "ngram", win_view):
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
              window_states(tr_ids, cfg.ngram, v), window_states(he_ids, cfg.ngram, v),
              {"ngram": result.extras["ngram"]})
    if cfg.window_lm and not done(f"window LM (n={cfg.window_lm})", "window-lm", win_view):
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
              wlm.states(he_ids), {"window_lm": result.extras["window_lm"]})

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


