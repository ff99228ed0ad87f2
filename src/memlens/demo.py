"""The synthetic experiment with a known answer, end to end: ``memlens demo``.

What is planted: in a stream of sentences ``noun filler x (distance-1) verb``, the verb
(``is``/``are``) agrees in number with the noun ``distance`` steps earlier, so a language model
must carry the noun's number for exactly ``distance`` steps (and nothing else: fillers are
uniform noise). The input embeddings are fixed and built by hand: the number feature lives on
one low-variance coordinate (plural nouns +1, singular nouns -1), while an irrelevant
coordinate has ``irrelevant_scale`` times the spread of the other coordinates, so that the
embedding space's variance is dominated by a direction that carries no information
(DESIGN.md section 3). The planted direction is the difference of the class-mean embeddings of
plural and singular nouns.

What is measured, for a small LSTM and a GRU trained on the corpus:

* state gradients (class "noun" at the source): for each delay, the rank of the planted
  direction among the right singular vectors of the average gradient, in normalised and in
  unnormalised embedding space. Recovered memory = the first delay at which the planted
  direction no longer ranks first; and the first delay at which the state's reaction along the
  planted direction, |Gn(tau) dn|, falls (after its peak) below half of the peak.
* memory signatures of the number of the noun k steps back (decoded from the state), for the
  trained model, a random-init control (same fixed embeddings, untrained recurrent weights)
  and a trigram window (an oracle that sees exactly the last 2 tokens). Recovered memory =
  the first lag at which accuracy falls to the majority baseline (+ a margin), and the first
  lag >= 1 at which it falls to the accuracy of the random-init control (memory that training
  added; the verb repeats the number, so past the planted distance every network can read the
  number off the verb for a while).

Everything is generated in the package; nothing is downloaded.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from memlens.data import Corpus, make_synthetic
from memlens.data.synthetic import noun_words
from memlens.data.vocab import EOS, UNK
from memlens.errors import MemlensError
from memlens.io import atomic_dir, write_atomic, write_json
from memlens.models.lm import LanguageModel
from memlens.plotting import plain_text, pyplot
from memlens.report import ReportSection, build_report

NGRAM_ORDER = 3
IRRELEVANT_COORD = 0
NUMBER_COORD = 1
NOUN_COORD = 2
STRENGTH_FRACTION = 0.5
MAX_DISTANCE = 100


@dataclass
class DemoConfig:
    """Sizes of the synthetic experiment (defaults: the full demo, <= 3 minutes on 2 cores)."""

    out: str = "memlens-demo"
    distance: int = 5
    sentences: int = 6000          # language-model training sentences
    decoder_sentences: int = 500   # sentences for training the signature decoders
    heldout_sentences: int = 300   # held-out sentences (signature scores, state gradients)
    gradient_sentences: int = 250  # sentences streamed through the state-gradient engine
    epochs: int = 6
    emb: int = 16
    hidden: int = 32
    archs: tuple[str, ...] = ("lstm", "gru")
    n_nouns: int = 10
    n_fillers: int = 40
    irrelevant_scale: float = 10.0
    margin: float = 0.05           # accuracy above the baseline that still counts as memory
    seed: int = 0
    progress: bool | None = None

    def check(self) -> None:
        """Refuse sizes the experiment cannot run with."""
        if self.distance < 1:
            raise MemlensError(f"--distance must be at least 1, got {self.distance}")
        if self.distance > MAX_DISTANCE:
            raise MemlensError(f"--distance must be at most {MAX_DISTANCE} (the demo's corpus "
                               f"and lags grow with it), got {self.distance}")
        for key in ("sentences", "decoder_sentences", "heldout_sentences",
                    "gradient_sentences", "epochs", "emb", "hidden"):
            if getattr(self, key) < 1:
                raise MemlensError(f"demo {key} must be positive, got {getattr(self, key)}")
        if self.emb < 2:
            raise MemlensError("the demo needs --emb >= 2 (irrelevant and number coordinates)")
        if self.emb >= 2 * self.n_nouns + self.n_fillers + 4:
            raise MemlensError("the demo's vocabulary must be larger than the embedding size")
        for arch in self.archs:
            if arch not in ("lstm", "gru", "rnn"):
                raise MemlensError(f"demo architecture {arch!r}: choose lstm, gru or rnn")

    @property
    def max_delay(self) -> int:
        """Delays/lags analysed: up to twice the planted distance."""
        return 2 * self.distance + 1


@dataclass
class DemoResult:
    """Paths written and the planted-vs-recovered summary."""

    out: Path
    report: Path
    planted: int
    recovered: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def matches(self) -> list[dict[str, Any]]:
        """Trained-model rows whose recovered memory length is within one step of the planted
        one."""
        return [r for r in self.recovered if r["within_one_step"] and r["role"] == "trained"]


# -- corpus and embeddings ---------------------------------------------------------------------
def planted_embeddings(words: list[str], emb: int, n_nouns: int, scale: float, seed: int
                       ) -> np.ndarray:
    """Fixed embedding table (one row per word in ``words``) with the planted geometry.

    Coordinate 0: irrelevant, spread ``scale`` (random per word). Coordinate 1: number
    (+1 plural nouns, -1 singular nouns, 0 otherwise, plus a little noise). Coordinate 2:
    "is a noun" (+1 for every noun; the same for both numbers, so it is not part of the
    planted direction). Others: N(0, 1). The singular and plural forms of a noun (``cat3``,
    ``cats3``) differ only in the number coordinate.
    """
    rng = np.random.default_rng(seed)
    nouns = noun_words(n_nouns)
    table = rng.normal(0.0, 1.0, (len(words), emb))
    table[:, IRRELEVANT_COORD] = rng.normal(0.0, scale, len(words))
    table[:, NUMBER_COORD] = rng.normal(0.0, 0.1, len(words))
    if emb > NOUN_COORD:
        table[:, NOUN_COORD] = rng.normal(0.0, 0.1, len(words))
    # cat_i and cats_i are one lemma in two numbers: they share every other coordinate
    row = {w: i for i, w in enumerate(words)}
    for sg, pl in zip(nouns["sg"], nouns["pl"]):
        if sg in row and pl in row:
            keep = [c for c in range(emb) if c != NUMBER_COORD]
            table[row[pl], keep] = table[row[sg], keep]
    for i, w in enumerate(words):
        if emb > NOUN_COORD and (w in nouns["pl"] or w in nouns["sg"]):
            table[i, NOUN_COORD] += 1.0
        if w in nouns["pl"]:
            table[i, NUMBER_COORD] += 1.0
        elif w in nouns["sg"]:
            table[i, NUMBER_COORD] -= 1.0
    return table


def _corpus(cfg: DemoConfig, n: int, seed: int) -> Corpus:
    c = make_synthetic(n, cfg.distance, cfg.n_nouns, cfg.n_fillers, seed=seed, eos=False)
    # the signatures decode the "upos" tag stream: here the number of each noun
    c.tags["upos"] = list(c.tags["number"])
    return c


def planted_direction(model: LanguageModel, n_nouns: int) -> np.ndarray:
    """Mean embedding of plural nouns minus mean embedding of singular nouns (raw space)."""
    table = model.encoder.embedding.weight.detach().double().cpu().numpy()
    nouns = noun_words(n_nouns)
    idx = {k: [model.vocab.stoi[w] for w in nouns[k] if w in model.vocab.stoi] for k in nouns}
    if not idx["pl"] or not idx["sg"]:
        raise MemlensError("the training corpus lacks singular or plural nouns")
    return table[idx["pl"]].mean(0) - table[idx["sg"]].mean(0)


# -- measurements ------------------------------------------------------------------------------
def planted_ranks(result, direction: np.ndarray, cls: str = "noun") -> dict[str, np.ndarray]:
    """Rank (1 = first) of ``direction`` among the right singular vectors, per delay.

    "normalised": of Gn(tau) = Gbar(tau) D with dn = Z d / |Z d|; "unnormalised": of Gbar(tau)
    with d / |d|. Also the alignment |v_1 . d| of the first singular vector and the
    "strength" |Gn(tau) dn| of the state's reaction along the planted direction (proportional
    to |Gbar(tau) d|: the same curve in either space).
    """
    from memlens.gradients import metrics

    d_raw = direction / np.linalg.norm(direction)
    d_norm = metrics.unit_direction(direction, result.normalization.Z)
    out: dict[str, list] = {"normalised": [], "unnormalised": [], "align_normalised": [],
                            "align_unnormalised": [], "strength": []}
    for tau in range(result.max_delay + 1):
        for key, mat, d in (("normalised", result.normalized_mean(tau, cls), d_norm),
                            ("unnormalised", result.mean(tau, cls), d_raw)):
            vt = metrics.right_singular_vectors(mat)
            proj = np.abs(vt @ d)
            out[key].append(int(np.argmax(proj)) + 1)
            out[f"align_{key}"].append(float(proj[0]))
        gn = result.normalized_mean(tau, cls)
        out["strength"].append(float(np.linalg.norm(gn @ d_norm)))
    return {k: np.array(v) for k, v in out.items()}


def first_delay_not_first(ranks: np.ndarray) -> int:
    """First delay at which the rank is not 1 (len(ranks) if it ranks first throughout)."""
    bad = np.nonzero(ranks != 1)[0]
    return int(bad[0]) if bad.size else len(ranks)


def first_delay_weak(strength: np.ndarray, fraction: float = STRENGTH_FRACTION) -> int:
    """First delay after the peak of ``strength`` at which it falls below ``fraction`` of the
    peak (len if never). An LSTM's cell can build a memory up over a few steps before it
    decays, so the search starts at the peak, not at delay 0."""
    if not strength.size or not np.isfinite(strength).any():
        return len(strength)
    top = int(np.nanargmax(strength))
    weak = np.nonzero(strength[top:] < fraction * strength[top])[0]
    return top + int(weak[0]) if weak.size else len(strength)


def first_lag_at_baseline(accuracy: np.ndarray, baseline: np.ndarray, margin: float,
                          accuracy_low: np.ndarray | None = None) -> int:
    """First lag whose accuracy is within ``margin`` of the baseline, or whose bootstrap
    interval (lower end ``accuracy_low``) reaches the baseline, i.e. no longer significantly
    above it (len if never)."""
    at_base = accuracy <= baseline + margin
    if accuracy_low is not None:
        at_base |= accuracy_low <= baseline
    low = np.nonzero(at_base)[0]
    return int(low[0]) if low.size else len(accuracy)


# -- plots -------------------------------------------------------------------------------------
def _plt():
    return pyplot()


def _save(fig, path: Path) -> None:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_atomic(path, lambda p: p.write_bytes(buf.getvalue()))


def _planted_line(ax, distance: int) -> None:
    ax.axvline(distance, color="k", ls=":", lw=1, label=f"planted distance {distance}")


# -- one model ---------------------------------------------------------------------------------
def _model_info(model: LanguageModel, path: str) -> dict[str, Any]:
    c = model.config
    return {"path": path, "arch": c["arch"], "layers": c["layers"], "emb": c["emb"],
            "hidden": c["hidden"], "unit": c["unit"]}


def _corpus_info(corpus: Corpus, n_sentences: int, cfg: DemoConfig) -> dict[str, Any]:
    return {"path": corpus.path, "tokens": len(corpus), "sentences": n_sentences,
            "planted_distance": cfg.distance, "sample": " ".join(corpus.tokens[:3 * (
                cfg.distance + 1)])}


@plain_text
def _gradients_dir(out: Path, model: LanguageModel, ckpt: str, corpus: Corpus,
                   cfg: DemoConfig, direction: np.ndarray, version: str) -> dict[str, Any]:
    from memlens import state_gradients

    state = "cell" if model.config["arch"] == "lstm" else "hidden"
    ids = model.vocab.encode(corpus.tokens)
    res = state_gradients(model, ids, cfg.max_delay, state=state, layer=-1,
                          classes=corpus.tags["role"], progress=bool(cfg.progress))
    ranks = planted_ranks(res, direction)
    table = res.table(n_boot=100, directions={"number": direction})
    for row in table:
        if row["class"] == "noun":
            tau = row["delay"]
            row["rank_number_normalised"] = int(ranks["normalised"][tau])
            row["rank_number_unnormalised"] = int(ranks["unnormalised"][tau])
            row["strength_number"] = float(ranks["strength"][tau])
    rec_n = first_delay_not_first(ranks["normalised"])
    rec_u = first_delay_not_first(ranks["unnormalised"])
    rec_s = first_delay_weak(ranks["strength"])
    arch = model.config["arch"].upper()
    delays = np.arange(cfg.max_delay + 1)
    plt = _plt()
    with atomic_dir(out) as tmp:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for cls in [None, *res.class_names]:
            spec = res.spectrum(cls)
            ax.plot(delays, np.nansum(spec, axis=1), marker="o", ms=3,
                    label="all words" if cls is None else f"source: {cls}")
        _planted_line(ax, cfg.distance)
        ax.set(xlabel="delay tau (steps back)", ylabel="sum of singular values (normalised)",
               yscale="log", title=f"{arch}: memory strength by delay")
        ax.legend(fontsize=7)
        _save(fig, tmp / "sum_sv.png")
        fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.8))
        for key, ls in (("normalised", "-"), ("unnormalised", "--")):
            a1.plot(delays, ranks[key], ls, marker="o", ms=4, label=key)
            a2.plot(delays, ranks[f"align_{key}"], ls, marker="o", ms=4, label=key)
        a3.plot(delays, ranks["strength"], marker="o", ms=4, color="C2")
        a3.axhline(STRENGTH_FRACTION * np.nanmax(ranks["strength"]), color="grey", lw=1,
                   label=f"{STRENGTH_FRACTION:g} x peak")
        a3.set(ylabel="|Gn dn|", title="strength along the number direction")
        for ax in (a1, a2, a3):
            _planted_line(ax, cfg.distance)
            ax.set_xlabel("delay tau (steps back from the noun)")
            ax.legend(fontsize=7)
        a1.set(ylabel="rank of the number direction", title="1 = strongest direction")
        a1.invert_yaxis()
        a1.yaxis.get_major_locator().set_params(integer=True)
        a2.set(ylabel="|v_1 . number direction|", ylim=(0, 1.02),
               title="alignment of the first singular vector")
        fig.suptitle(f"{arch}: where the planted number direction ranks", fontsize=10)
        _save(fig, tmp / "planted_rank.png")
        np.savez_compressed(tmp / "gradients.npz", means_noun=res.means("noun"),
                            means_all=res.means(None), spectrum=res.spectrum(None),
                            spectrum_noun=res.spectrum("noun"), D=res.normalization.D,
                            Z=res.normalization.Z, direction=direction,
                            rank_normalised=ranks["normalised"],
                            rank_unnormalised=ranks["unnormalised"])
        sv0 = res.spectrum("noun")
        result = {
            "kind": "gradients", "memlens_version": version,
            "model": _model_info(model, ckpt),
            "corpus": _corpus_info(corpus, cfg.gradient_sentences, cfg),
            "settings": {**res.settings, "classes": res.class_names,
                         "direction": "number = mean(plural nouns) - mean(singular nouns)"},
            "summary": {"condition_number_Z": res.normalization.condition,
                        "sum_sv_noun_delay0": float(np.nansum(sv0[0])),
                        f"sum_sv_noun_delay{cfg.distance}": float(np.nansum(sv0[cfg.distance])),
                        "number_ranks_first_until_normalised": rec_n,
                        "number_ranks_first_until_unnormalised": rec_u,
                        "number_strength_below_half_at": rec_s},
            "table": table,
            "plots": [
                {"file": "sum_sv.png", "title": f"{arch}: memory strength by delay",
                 "caption": "Sum of the singular values of the average state gradient at each "
                 "delay, in normalised embedding space, for all source words and per word "
                 "role. It says how strongly the state still reacts to a word that many "
                 "steps back; the dotted line is the planted distance."},
                {"file": "planted_rank.png",
                 "title": f"{arch}: rank of the planted number direction",
                 "caption": "Left: among the directions of embedding space that reach the "
                 "state most strongly (right singular vectors, strongest = 1), where the "
                 "planted number direction ranks, when the source word is a noun. While it "
                 "is 1 the network's memory of that noun is mostly its number. Right: how "
                 "closely the strongest direction lines up with the number direction "
                 "(1 = exactly). Solid: normalised embedding space; dashed: raw space. "
                 "Right: how strongly the state still reacts to the noun's number itself "
                 "(|Gn dn|); where it drops below the grey line the number is mostly "
                 "forgotten."}],
        }
        write_json(tmp / "result.json", result)
    return {"normalised": rec_n, "unnormalised": rec_u, "strength": rec_s}


def _sig_rows(label: str, sig, layer, readout: str, control=None) -> list[dict[str, Any]]:
    rows = []
    for k in range(len(sig.accuracy)):
        rows.append({"model": label, "layer": layer, "readout": readout, "units": "all",
                     "lag": k, "accuracy": float(sig.accuracy[k]),
                     "ci_low": float(sig.acc_low[k]), "ci_high": float(sig.acc_high[k]),
                     "bits": float(sig.bits[k]), "majority": float(sig.majority[k]),
                     "prior": float(sig.prior[k]),
                     "control_accuracy": None if control is None else float(
                         control.accuracy[k])})
    return rows


@plain_text
def _signatures_dir(out: Path, model: LanguageModel, ckpt: str, dec_c: Corpus, held_c: Corpus,
                    cfg: DemoConfig, version: str) -> dict[str, int]:
    from memlens.signatures import memory_signature, random_init_copy, signature_from_states
    from memlens.signatures.ngram import window_states
    from memlens.signatures.symbols import build_symbols

    K, resamples = cfg.max_delay, 200
    sig = memory_signature(model, dec_c, held_c, K, layer=-1, readout="hidden",
                           symbols="upos", seed=cfg.seed, resamples=resamples)
    control = random_init_copy(model, seed=cfg.seed + 1)
    with torch.no_grad():  # same fixed embeddings: only the recurrent weights are untrained
        control.encoder.embedding.weight.copy_(model.encoder.embedding.weight)
    ctrl = memory_signature(control, dec_c, held_c, K, layer=-1, readout="hidden",
                            symbols="upos", seed=cfg.seed, resamples=resamples)
    V = len(model.vocab)
    tr_ids = model.vocab.encode(dec_c.tokens).numpy()
    he_ids = model.vocab.encode(held_c.tokens).numpy()
    sym = build_symbols("upos", "word", tr_ids, dec_c.tags["upos"], model.vocab.itos)
    ngram = signature_from_states(window_states(tr_ids, NGRAM_ORDER, V),
                                  sym.classes(tr_ids, dec_c.tags["upos"]),
                                  window_states(he_ids, NGRAM_ORDER, V),
                                  sym.classes(he_ids, held_c.tags["upos"]), K, sym,
                                  seed=cfg.seed, resamples=resamples)
    arch = model.config["arch"].upper()
    rec = {name: first_lag_at_baseline(s.accuracy, s.majority, cfg.margin, s.acc_low)
           for name, s in (("trained", sig), ("random-init", ctrl), ("trigram", ngram))}
    # memory that training added: lags >= 1 where the trained model beats its untrained copy
    # (at lag 0 every network reads its current input)
    rec["trained_vs_control"] = 1 + first_lag_at_baseline(sig.accuracy[1:], ctrl.accuracy[1:],
                                                          cfg.margin, sig.acc_low[1:])
    lags = np.arange(K + 1)
    plt = _plt()
    with atomic_dir(out) as tmp:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for name, s, ls in ((f"trained {arch}", sig, "-"), ("random-init control", ctrl, "--"),
                            (f"{NGRAM_ORDER}-gram window", ngram, "-.")):
            ax.plot(lags, s.accuracy, ls, marker="o", ms=3, label=name)
            ax.fill_between(lags, s.acc_low, s.acc_high, alpha=0.15)
        ax.plot(lags, sig.majority, color="grey", lw=1, label="majority baseline")
        _planted_line(ax, cfg.distance)
        ax.set(xlabel="lag k (steps back)", ylabel="accuracy: number of the noun k back",
               ylim=(0, 1.02), title=f"{arch}: memory signature of noun number")
        ax.legend(fontsize=7)
        _save(fig, tmp / "signature.png")
        np.savez_compressed(tmp / "signatures.npz", accuracy=sig.accuracy, bits=sig.bits,
                            majority=sig.majority, control_accuracy=ctrl.accuracy,
                            ngram_accuracy=ngram.accuracy, recall=sig.recall)
        table = (_sig_rows(f"trained {arch}", sig, -1, "hidden", ctrl)
                 + _sig_rows("random-init control", ctrl, -1, "hidden")
                 + _sig_rows(f"{NGRAM_ORDER}-gram window", ngram, None, "window"))
        result = {
            "kind": "signatures", "memlens_version": version,
            "model": _model_info(model, ckpt),
            "corpus": {**_corpus_info(held_c, cfg.heldout_sentences, cfg),
                       "decoder_training_tokens": len(dec_c)},
            "settings": {"max_lag": K, "layer": -1, "readout": "hidden", "decoder": "linear",
                         "symbols": "number of the noun (sg/pl); other positions excluded",
                         "control": "same model, recurrent weights untrained (seeded), same "
                         "fixed embeddings", "ngram_order": NGRAM_ORDER,
                         "bootstrap_resamples": resamples, "margin": cfg.margin},
            "summary": {"accuracy_lag0": float(sig.accuracy[0]),
                        f"accuracy_lag{cfg.distance}": float(sig.accuracy[cfg.distance]),
                        "majority": float(sig.majority[0]),
                        "first_lag_at_baseline_trained": rec["trained"],
                        "first_lag_at_baseline_control": rec["random-init"],
                        "first_lag_at_baseline_ngram": rec["trigram"],
                        "first_lag_at_control_trained": rec["trained_vs_control"]},
            "table": table,
            "plots": [{"file": "signature.png",
                       "title": f"{arch}: memory signature of noun number",
                       "caption": "How often a linear decoder reading the hidden state recovers "
                       "whether the noun k steps back was singular or plural (only positions "
                       "k steps after a noun count; chance is about one half). The trained "
                       "model against an untrained copy (random networks also retain some "
                       "input) and a trigram window, which by construction sees only the "
                       "last two tokens. Where a line meets the grey majority line, that "
                       "memory has run out; the dotted line is the planted distance. From "
                       "that lag on the verb (is/are), which repeats the number, is in view, "
                       "so every model, even the untrained one and the trigram, reads the "
                       "number again for a few steps."}],
        }
        write_json(tmp / "result.json", result)
    return rec


# -- the whole demo ----------------------------------------------------------------------------
def _train(cfg: DemoConfig, arch: str, train_c: Corpus, valid_c: Corpus, workdir: Path,
           out: Path, log: Callable[[str], None]) -> LanguageModel:
    from memlens.train import TrainConfig, train

    words = [UNK, EOS] + sorted(set(train_c.tokens))
    table = planted_embeddings(words, cfg.emb, cfg.n_nouns, cfg.irrelevant_scale, cfg.seed)
    emb_file = workdir / "planted_embeddings.txt"
    emb_file.write_text("".join(w + " " + " ".join(f"{x:.6f}" for x in row) + "\n"
                                for w, row in zip(words, table)))
    tc = TrainConfig(train="", out=str(out), arch=arch, emb=cfg.emb, hidden=cfg.hidden,
                     epochs=cfg.epochs, optimizer="adam", lr=0.01, dropout=0.0, batch=20,
                     bptt=35, pretrained=str(emb_file), seed=cfg.seed, device="cpu",
                     vocab_size=None, progress=cfg.progress)
    return train(tc, train_corpus=train_c, valid_corpus=valid_c, log=log)


def run_demo(cfg: DemoConfig | None = None, log: Callable[[str], None] = print) -> DemoResult:
    """Run the synthetic experiment and write ``cfg.out``/report.html (see module docstring)."""
    from memlens import __version__

    cfg = cfg or DemoConfig()
    cfg.check()
    start = time.time()
    out = Path(cfg.out)
    with atomic_dir(out) as tmp:  # complete or absent: an interrupted demo leaves nothing
        work = tmp / ".work"
        work.mkdir()
        stages = ["corpus"] + [f"{s} {a}" for a in cfg.archs
                               for s in ("train", "gradients", "signatures")] + ["report"]
        bar = tqdm(total=len(stages), desc="memlens demo", unit="stage",
                   disable=None if cfg.progress is None else not cfg.progress)

        timings: dict[str, float] = {}
        clock = [time.time()]

        def stage(i: int) -> None:
            if i > 0:
                timings[stages[i - 1]] = round(time.time() - clock[0], 2)
            clock[0] = time.time()
            bar.set_description(f"demo: {stages[i]}")

        def quiet(msg: str) -> None:
            if cfg.progress:
                tqdm.write(msg)

        stage(0)
        s = cfg.seed
        train_c = _corpus(cfg, cfg.sentences, s + 1)
        valid_c = _corpus(cfg, max(50, cfg.sentences // 10), s + 2)
        dec_c = _corpus(cfg, cfg.decoder_sentences, s + 3)
        held_c = _corpus(cfg, cfg.heldout_sentences, s + 4)
        grad_c = _corpus(cfg, cfg.gradient_sentences, s + 4)
        bar.update(1)
        i = 1
        recovered: list[dict[str, Any]] = []
        dirs: list[Path] = []
        stats: dict[str, dict[str, Any]] = {}
        for arch in cfg.archs:
            stage(i)
            ckpt = tmp / f"{arch}.pt"
            model = _train(cfg, arch, train_c, valid_c, work, ckpt, quiet)
            best = min(model.history, key=lambda r: r.get("valid_loss", r["train_loss"]))
            stats[arch] = {"valid_ppl": best["valid_ppl"], "epoch": best["epoch"]}
            bar.update(1)
            i += 1
            stage(i)
            direction = planted_direction(model, cfg.n_nouns)
            g = _gradients_dir(tmp / f"gradients-{arch}", model, ckpt.name, grad_c, cfg,
                               direction, __version__)
            dirs.append(tmp / f"gradients-{arch}")
            bar.update(1)
            i += 1
            stage(i)
            r = _signatures_dir(tmp / f"signatures-{arch}", model, ckpt.name, dec_c, held_c,
                                cfg, __version__)
            dirs.append(tmp / f"signatures-{arch}")
            bar.update(1)
            i += 1
            A = arch.upper()
            for method, value, note in (
                    ("state gradients, normalised", g["normalised"],
                     "first delay at which the number direction no longer ranks first"),
                    ("state gradients, unnormalised", g["unnormalised"],
                     "first delay at which the number direction no longer ranks first"),
                    ("state gradients, strength along the number direction", g["strength"],
                     f"first delay after its peak at which |Gn dn| falls below "
                     f"{STRENGTH_FRACTION:g} of the peak"),
                    ("memory signature vs majority", r["trained"],
                     "first lag at which decoding accuracy falls to the majority baseline"),
                    ("memory signature vs random-init control", r["trained_vs_control"],
                     "first lag >= 1 at which decoding accuracy falls to that of the "
                     "untrained copy")):
                recovered.append({"model": A, "role": "trained", "method": method,
                                  "planted": cfg.distance,
                                  "recovered": value, "difference": value - cfg.distance,
                                  "within_one_step": abs(value - cfg.distance) <= 1,
                                  "definition": note})
            for name in ("random-init", "trigram"):
                recovered.append({"model": f"{A} {name} control" if name != "trigram"
                                  else f"{NGRAM_ORDER}-gram window (oracle: memory "
                                  f"{NGRAM_ORDER - 1})",
                                  "role": "control" if name != "trigram" else "oracle",
                                  "method": "memory signature vs majority",
                                  "planted": cfg.distance,
                                  "recovered": r[name], "difference": r[name] - cfg.distance,
                                  "within_one_step": None,  # a reference, not a method
                                  "definition": "first lag at which decoding accuracy falls "
                                  "to the majority baseline"})
        stage(i)
        section = _planted_section(cfg, recovered, stats)
        findings = _findings(cfg, recovered)
        seconds = time.time() - start
        write_json(tmp / "demo.json", {"config": {k: v for k, v in asdict(cfg).items()},
                                       "planted": cfg.distance, "recovered": recovered,
                                       "training": stats, "stage_seconds": timings,
                                       "seconds_before_report": seconds})
        build_report(dirs, tmp / "report.html", title="memlens demo: a planted memory",
                              findings=findings, sections=[section])
        bar.update(1)
        bar.close()
        shutil.rmtree(work)
    report = out / "report.html"
    seconds = time.time() - start
    log(f"wrote {report} ({seconds:.0f} s)")
    return DemoResult(out, report, cfg.distance, recovered, seconds)


def _planted_section(cfg: DemoConfig, recovered: list[dict[str, Any]],
                     stats: dict[str, dict[str, Any]]) -> ReportSection:
    models = ", ".join(f"{a.upper()} (validation perplexity {s['valid_ppl']:.2f})"
                       for a, s in stats.items())
    matched = [r for r in recovered if r["within_one_step"] and r["role"] == "trained"]
    verdict = ("Recovered within one step of the planted distance by: "
               + "; ".join(f"{r['model']} {r['method']} ({r['recovered']})" for r in matched)
               + "." if matched else
               "No method recovered the planted distance within one step in this run.")
    paras = [
        f"Planted memory: the number (singular or plural) of a noun decides the verb exactly "
        f"{cfg.distance} steps later, with {cfg.distance - 1} random filler words between; "
        f"nothing else in the text needs remembering. A model therefore has to carry the "
        f"feature 'number' for {cfg.distance} steps. Sentences follow each other directly, so "
        f"one step after the verb (delay {cfg.distance + 1}) a new noun replaces the old one.",
        f"Embedding space: fixed embeddings of size {cfg.emb}; the number lives on one "
        f"coordinate with small spread, while an irrelevant coordinate has "
        f"{cfg.irrelevant_scale:g} times the spread of the others. The planted direction is "
        f"the mean plural-noun embedding minus the mean singular-noun embedding.",
        f"Models trained on {cfg.sentences} sentences: {models}.",
        "State gradients recover a memory length as the first delay at which the planted "
        "direction stops ranking first among the right singular vectors of the noun-source "
        "gradient (normalised and raw embedding space), and as the first delay at which the "
        f"state's reaction along the planted direction falls below {STRENGTH_FRACTION:g} of "
        "its peak (searching from the peak on); memory signatures as the first lag "
        f"at which the decoding accuracy of the noun's number falls to the majority baseline "
        f"(within {cfg.margin:g}, or no longer significantly above it by the 95% bootstrap "
        "interval), or to the accuracy of the untrained copy of the same "
        "network (the memory that training added). The verb repeats the noun's number, so "
        f"from lag {cfg.distance} on the number can also be read off the verb, which any "
        "network (even an untrained one) keeps for a few steps: against the majority "
        "baseline the signature therefore runs on past the planted distance, while against "
        "the untrained copy it ends where the model stops needing the noun. "
        "A memory that holds through the last needed step "
        f"(delay {cfg.distance - 1}) and is dropped when the next noun arrives gives "
        f"{cfg.distance} to {cfg.distance + 1}. Delays and lags 0..{cfg.max_delay} are "
        f"analysed; a recovered value of {cfg.max_delay + 1} means the memory had not ended "
        "by then.",
        verdict,
    ]
    return ReportSection("What was planted, and what each method recovered", paras, recovered)


def _findings(cfg: DemoConfig, recovered: list[dict[str, Any]]) -> list[str]:
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in recovered:
        by_model.setdefault(r["model"], []).append(r)
    out = []
    for model, rows in by_model.items():
        parts = ", ".join(f"{r['method']} {_steps(r['recovered'], cfg)}"
                          + (" (match)" if r["within_one_step"] and r["role"] == "trained"
                             else "") for r in rows)
        out.append(f"{model}: {parts}; planted {cfg.distance}.")
        m = {r["method"]: r["recovered"] for r in rows}
        n, u = m.get("state gradients, normalised"), m.get("state gradients, unnormalised")
        if n is not None and u is not None and n != u:
            out.append(f"{model}: normalisation changes where the number direction ranks "
                       f"(it stops ranking first at delay {n} normalised, {u} unnormalised).")
    return out


def _steps(value: int, cfg: DemoConfig) -> str:
    return f"beyond {cfg.max_delay}" if value > cfg.max_delay else str(value)


__all__ = ["DemoConfig", "DemoResult", "first_delay_not_first", "first_delay_weak",
           "first_lag_at_baseline", "planted_direction", "planted_embeddings", "planted_ranks",
           "run_demo"]
