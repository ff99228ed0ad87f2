"""The planted-memory study: a synthetic experiment with a known answer (``memlens demo``).

What is planted: in a stream of sentences ``noun filler x (distance-1) verb``, the verb
(``is``/``are``) agrees in number with the noun ``distance`` steps earlier, so a language model
must carry the noun's number for exactly ``distance`` steps (and nothing else: fillers are
uniform noise). The input embeddings are fixed and built by hand: the number feature lives on
one low-variance coordinate (plural nouns +1, singular nouns -1), while an irrelevant
coordinate has ``irrelevant_scale`` times the spread of the other coordinates, so that the
embedding space's variance is dominated by a direction that carries no information
(DESIGN.md section 3). The planted direction is the difference of the class-mean embeddings of
plural and singular nouns.

What is measured, for a small LSTM and a GRU trained on the corpus (``memlens.train``):

* state gradients (``memlens.state_gradients``, class "noun" at the source): for each delay,
  the rank of the planted direction among the right singular vectors of the average gradient,
  in normalised and in unnormalised embedding space. Recovered memory = the first delay at
  which the planted direction no longer ranks first; and the first delay at which the state's
  reaction along the planted direction, |Gn(tau) dn|, falls (after its peak) below half of the
  peak.
* memory signatures (``memlens.memory_signature``) of the number of the noun k steps back, for
  the trained model, a random-init control (same fixed embeddings, untrained recurrent weights)
  and a trigram window (an oracle that sees exactly the last 2 tokens). Recovered memory = the
  first lag at which accuracy falls to the majority baseline (+ a margin), and the first lag
  >= 1 at which it falls to the accuracy of the random-init control (memory that training
  added; the verb repeats the number, so past the planted distance every network can read the
  number off the verb for a while).

Every output is a :class:`~memlens.results.Result` written by ``save``: per model a gradients
and a signatures result directory, and one ``planted-memory`` result (kind of its own) with the
per-delay readings as declared series, what each method recovered, and the findings as
sentences. Everything is generated in the package; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import memlens
from memlens.data import Corpus
from memlens.data.synthetic import noun_words
from memlens.data.vocab import EOS, UNK
from memlens.errors import MemlensError
from memlens.gradients import GradientResult
from memlens.models.lm import LanguageModel
from memlens.plotting import plain_text, pyplot
from memlens.results import Result
from memlens.signatures import Signature, build_symbols, random_init_copy, signature_from_states
from memlens.signatures.ngram import window_states
from memlens.signatures.result import SERIES as SIGNATURE_SERIES
from memlens.signatures.result import signature_rows

NGRAM_ORDER = 3
IRRELEVANT_COORD = 0
NUMBER_COORD = 1
NOUN_COORD = 2
STRENGTH_FRACTION = 0.5
MAX_DISTANCE = 100
SIGNATURE_RESAMPLES = 200
GRADIENT_BOOTSTRAP = 100

# method -> (definition, what a recovered value v says, what "not within 0..K" says)
METHODS: dict[str, tuple[str, str, str]] = {
    "state gradients, normalised": (
        "first delay at which the number direction no longer ranks first",
        "the number direction stops ranking first in normalised embedding space at delay {v}",
        "the number direction ranks first in normalised embedding space at every delay up to "
        "{k}"),
    "state gradients, unnormalised": (
        "first delay at which the number direction no longer ranks first",
        "the number direction stops ranking first in raw embedding space at delay {v}",
        "the number direction ranks first in raw embedding space at every delay up to {k}"),
    "state gradients, strength along the number direction": (
        f"first delay after its peak at which |Gn dn| falls below {STRENGTH_FRACTION:g} of the "
        "peak",
        f"the state's reaction along the number direction falls below {STRENGTH_FRACTION:.0%} "
        "of its peak at delay {v}",
        f"the state's reaction along the number direction stays above {STRENGTH_FRACTION:.0%} "
        "of its peak up to delay {k}"),
    "memory signature vs majority": (
        "first lag at which decoding accuracy falls to the majority baseline",
        "decoding accuracy of the number falls to the majority baseline at lag {v}",
        "decoding accuracy of the number stays above the majority baseline up to lag {k}"),
    "memory signature vs random-init control": (
        "first lag >= 1 at which decoding accuracy falls to that of the untrained copy",
        "decoding accuracy falls to that of the untrained copy at lag {v}",
        "decoding accuracy stays above that of the untrained copy up to lag {k}"),
}


@dataclass
class PlantedConfig:
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


def planted_corpus(cfg: PlantedConfig, n: int, seed: int) -> Corpus:
    """``n`` synthetic sentences; the "upos" tag stream is the number of each noun (what the
    signatures decode)."""
    c = memlens.make_synthetic(n, cfg.distance, cfg.n_nouns, cfg.n_fillers, seed=seed,
                               eos=False)
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


# -- measurements and recovery rules -----------------------------------------------------------
def planted_ranks(result: GradientResult, direction: np.ndarray, cls: str = "noun"
                  ) -> dict[str, np.ndarray]:
    """Rank (1 = first) of ``direction`` among the right singular vectors, per delay.

    "normalised": of Gn(tau) = Gbar(tau) D with dn = Z d / |Z d|; "unnormalised": of Gbar(tau)
    with d / |d|. Also the alignment |v_1 . d| of the first singular vector and the
    "strength" |Gn(tau) dn| of the state's reaction along the planted direction (proportional
    to |Gbar(tau) d|: the same curve in either space).
    """
    d_raw = direction / np.linalg.norm(direction)
    d_norm = result.normalization.Z @ direction
    d_norm = d_norm / np.linalg.norm(d_norm)
    out: dict[str, list] = {"normalised": [], "unnormalised": [], "align_normalised": [],
                            "align_unnormalised": [], "strength": []}
    for tau in range(result.max_delay + 1):
        raw_vt = np.linalg.svd(np.nan_to_num(result.mean(tau, cls)), full_matrices=True)[2]
        for key, vt, d in (("normalised", result.right_singular_vectors(tau, cls), d_norm),
                           ("unnormalised", raw_vt, d_raw)):
            proj = np.abs(vt @ d)
            out[key].append(int(np.argmax(proj)) + 1)
            out[f"align_{key}"].append(float(proj[0]))
        out["strength"].append(float(np.linalg.norm(result.normalized_mean(tau, cls) @ d_norm)))
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
def _save(fig, path: Path) -> None:
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def _planted_line(ax, distance: int) -> None:
    ax.axvline(distance, color="k", ls=":", lw=1, label=f"planted distance {distance}")


# -- the results -------------------------------------------------------------------------------
@dataclass(repr=False)
class PlantedGradients(GradientResult):
    """A gradients result plus where the planted number direction ranks at each delay (noun
    rows gain ``rank_number_*`` and ``strength_number``; two plots of its own)."""

    planted: int = 0
    arch: str = ""
    number_direction: np.ndarray | None = None
    ranks: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, result: GradientResult, direction: np.ndarray, planted: int, arch: str
           ) -> PlantedGradients:
        """``result`` (from ``memlens.state_gradients``) with the planted direction's ranks."""
        base = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        out = cls(**base, planted=planted, arch=arch.upper(), number_direction=direction,
                  ranks=planted_ranks(result, direction))
        out.directions = {"number": direction}
        out.settings = {**out.settings, "classes": out.class_names,
                        "bootstrap": GRADIENT_BOOTSTRAP,
                        "direction": "number = mean(plural nouns) - mean(singular nouns)"}
        return out

    def recovery(self) -> dict[str, int]:
        """Recovered memory lengths by the three gradient readings."""
        return {"normalised": first_delay_not_first(self.ranks["normalised"]),
                "unnormalised": first_delay_not_first(self.ranks["unnormalised"]),
                "strength": first_delay_weak(self.ranks["strength"])}

    def rows(self) -> list[dict]:
        rows = [dict(r) for r in super().rows()]
        for row in rows:
            if row["class"] == "noun":
                tau = row["delay"]
                row["rank_number_normalised"] = int(self.ranks["normalised"][tau])
                row["rank_number_unnormalised"] = int(self.ranks["unnormalised"][tau])
                row["strength_number"] = float(self.ranks["strength"][tau])
        return rows

    def summary(self) -> dict:
        sv = self.spectrum("noun")
        rec = self.recovery()
        return {"condition_number_Z": self.normalization.condition,
                "sum_sv_noun_delay0": float(np.nansum(sv[0])),
                f"sum_sv_noun_delay{self.planted}": float(np.nansum(sv[self.planted])),
                "number_ranks_first_until_normalised": rec["normalised"],
                "number_ranks_first_until_unnormalised": rec["unnormalised"],
                "number_strength_below_half_at": rec["strength"]}

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "direction": self.number_direction,
                **{f"rank_{k}": v for k, v in self.ranks.items()}}

    @plain_text
    def figures(self, out: Path) -> list[dict[str, str]]:
        plt, arch, ranks = pyplot(), self.arch, self.ranks
        delays = np.arange(self.max_delay + 1)
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for cls in [None, *self.class_names]:
            ax.plot(delays, np.nansum(self.spectrum(cls), axis=1), marker="o", ms=3,
                    label="all words" if cls is None else f"source: {cls}")
        _planted_line(ax, self.planted)
        ax.set(xlabel="delay tau (steps back)", ylabel="sum of singular values (normalised)",
               yscale="log", title=f"{arch}: memory strength by delay")
        ax.legend(fontsize=7)
        _save(fig, out / "sum_sv.png")
        fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.8))
        for key, ls in (("normalised", "-"), ("unnormalised", "--")):
            a1.plot(delays, ranks[key], ls, marker="o", ms=4, label=key)
            a2.plot(delays, ranks[f"align_{key}"], ls, marker="o", ms=4, label=key)
        a3.plot(delays, ranks["strength"], marker="o", ms=4, color="C2")
        a3.axhline(STRENGTH_FRACTION * np.nanmax(ranks["strength"]), color="grey", lw=1,
                   label=f"{STRENGTH_FRACTION:g} x peak")
        a3.set(ylabel="|Gn dn|", title="strength along the number direction")
        for ax in (a1, a2, a3):
            _planted_line(ax, self.planted)
            ax.set_xlabel("delay tau (steps back from the noun)")
            ax.legend(fontsize=7)
        a1.set(ylabel="rank of the number direction", title="1 = strongest direction")
        a1.invert_yaxis()
        a1.yaxis.get_major_locator().set_params(integer=True)
        a2.set(ylabel="|v_1 . number direction|", ylim=(0, 1.02),
               title="alignment of the first singular vector")
        fig.suptitle(f"{arch}: where the planted number direction ranks", fontsize=10)
        _save(fig, out / "planted_rank.png")
        return [
            {"file": "sum_sv.png", "title": f"{arch}: memory strength by delay",
             "caption": "Sum of the singular values of the average state gradient at each "
             "delay, in normalised embedding space, for all source words and per word role. "
             "It says how strongly the state still reacts to a word that many steps back; the "
             "dotted line is the planted distance."},
            {"file": "planted_rank.png", "title": f"{arch}: rank of the planted number direction",
             "caption": "Left: among the directions of embedding space that reach the state "
             "most strongly (right singular vectors, strongest = 1), where the planted number "
             "direction ranks, when the source word is a noun. While it is 1 the network's "
             "memory of that noun is mostly its number. Middle: how closely the strongest "
             "direction lines up with the number direction (1 = exactly). Solid: normalised "
             "embedding space; dashed: raw space. Right: how strongly the state still reacts "
             "to the noun's number itself (|Gn dn|); where it drops below the grey line the "
             "number is mostly forgotten."}]


@dataclass(repr=False)
class PlantedSignatures(Result):
    """Memory signatures of the noun's number: the trained model, its random-init control
    and a trigram window, as one "signatures" result (rows as ``memlens signatures`` writes)."""

    kind = "signatures"
    arrays_file = "signatures.npz"

    trained: Signature
    control: Signature
    window: Signature
    arch: str
    planted: int
    margin: float
    model_meta: dict = field(default_factory=dict)
    corpus_meta: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def labelled(self) -> list[tuple[str, Signature]]:
        return [(f"trained {self.arch}", self.trained), ("random-init control", self.control),
                (f"{NGRAM_ORDER}-gram window", self.window)]

    def recovery(self) -> dict[str, int]:
        """First lag at the majority baseline per signature, and (``trained_vs_control``) the
        first lag >= 1 at which the trained model falls to its untrained copy (at lag 0 every
        network reads its current input)."""
        rec = {name: first_lag_at_baseline(s.accuracy, s.majority, self.margin, s.acc_low)
               for name, s in (("trained", self.trained), ("random-init", self.control),
                               ("trigram", self.window))}
        rec["trained_vs_control"] = 1 + first_lag_at_baseline(
            self.trained.accuracy[1:], self.control.accuracy[1:], self.margin,
            self.trained.acc_low[1:])
        return rec

    def rows(self) -> list[dict]:
        (lt, t), (lc, c), (lw, w) = self.labelled()
        return (signature_rows(t, lt, "model", -1, "hidden", "all", c)
                + signature_rows(c, lc, "control", -1, "hidden", "all")
                + signature_rows(w, lw, "ngram", None, "window", "all"))

    def series(self) -> list[dict]:
        return SIGNATURE_SERIES

    def summary(self) -> dict:
        rec, d = self.recovery(), self.planted
        return {"accuracy_lag0": float(self.trained.accuracy[0]),
                f"accuracy_lag{d}": float(self.trained.accuracy[d]),
                "majority": float(self.trained.majority[0]),
                "first_lag_at_baseline_trained": rec["trained"],
                "first_lag_at_baseline_control": rec["random-init"],
                "first_lag_at_baseline_ngram": rec["trigram"],
                "first_lag_at_control_trained": rec["trained_vs_control"]}

    def arrays(self) -> dict[str, np.ndarray]:
        t = self.trained
        return {"accuracy": t.accuracy, "bits": t.bits, "majority": t.majority,
                "control_accuracy": self.control.accuracy,
                "ngram_accuracy": self.window.accuracy, "recall": t.recall}

    @plain_text
    def figures(self, out: Path) -> list[dict[str, str]]:
        plt, arch = pyplot(), self.arch
        lags = np.arange(self.trained.max_lag + 1)
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for (name, s), ls in zip(self.labelled(), ("-", "--", "-.")):
            ax.plot(lags, s.accuracy, ls, marker="o", ms=3, label=name)
            ax.fill_between(lags, s.acc_low, s.acc_high, alpha=0.15)
        ax.plot(lags, self.trained.majority, color="grey", lw=1, label="majority baseline")
        _planted_line(ax, self.planted)
        ax.set(xlabel="lag k (steps back)", ylabel="accuracy: number of the noun k back",
               ylim=(0, 1.02), title=f"{arch}: memory signature of noun number")
        ax.legend(fontsize=7)
        _save(fig, out / "signature.png")
        return [{"file": "signature.png", "title": f"{arch}: memory signature of noun number",
                 "caption": "How often a linear decoder reading the hidden state recovers "
                 "whether the noun k steps back was singular or plural (only positions k steps "
                 "after a noun count; chance is about one half). The trained model against an "
                 "untrained copy (random networks also retain some input) and a trigram "
                 "window, which by construction sees only the last two tokens. Where a line "
                 "meets the grey majority line, that memory has run out; the dotted line is "
                 "the planted distance. From that lag on the verb (is/are), which repeats the "
                 "number, is in view, so every model, even the untrained one and the trigram, "
                 "reads the number again for a few steps."}]


@dataclass(repr=False)
class PlantedResult(Result):
    """The study's own result (kind "planted-memory"): one row per (model, delay) with every
    reading of the planted memory, declared as series; what each method recovered; findings.

    It draws no PNGs of its own (each model's curves are plotted in its gradients and
    signatures result directories); a report shows its series as tables and its prose
    sections (``findings``, ``planted``) as text.
    """

    kind = "planted-memory"

    config: PlantedConfig
    curves: list[dict[str, Any]] = field(default_factory=list)
    recovered: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    corpus_meta: dict = field(default_factory=dict)
    dirs: list[Path] = field(default_factory=list)

    @property
    def matches(self) -> list[dict[str, Any]]:
        """Trained-model rows whose recovered memory length is within one step of the planted
        one."""
        return [r for r in self.recovered if r["within_one_step"] and r["role"] == "trained"]

    def rows(self) -> list[dict[str, Any]]:
        return self.curves

    def series(self) -> list[dict[str, Any]]:
        d = self.config.distance
        return [
            {"name": "strength", "title": "Reaction along the planted number direction",
             "x": "delay", "y": "strength_of_peak", "group": ["model"],
             "xlabel": "delay tau (steps back from the noun)",
             "ylabel": "|Gn dn| / its peak", "log_y": False,
             "caption": f"How strongly the state still reacts to the noun's number, as a "
                        f"fraction of its peak; the memory counts as over once this falls "
                        f"below {STRENGTH_FRACTION:g} after the peak (planted: {d} steps)."},
            {"name": "rank", "title": "Rank of the planted number direction (normalised space)",
             "x": "delay", "y": "rank_normalised", "group": ["model"],
             "xlabel": "delay tau", "ylabel": "rank (1 = strongest direction)", "log_y": False,
             "caption": "Where the number direction ranks among the directions of normalised "
                        "embedding space that reach the state most strongly."},
            {"name": "added", "title": "Decoding accuracy that training added",
             "x": "lag", "y": "accuracy_over_control", "group": ["model"],
             "xlabel": "lag k", "ylabel": "accuracy minus that of the untrained copy",
             "log_y": False,
             "caption": f"How much better the trained network decodes the number of the noun "
                        f"k steps back than its untrained copy; planted: {d} steps."},
        ]

    def figures(self, out: Path) -> list[dict[str, str]]:
        """None: the curves are drawn in each model's gradients and signatures directory."""
        return []

    def settings_info(self) -> dict[str, Any]:
        settings = dataclasses.asdict(self.config)
        for key in ("out", "progress"):
            settings.pop(key)
        return {**settings, "max_delay": self.config.max_delay, "ngram_order": NGRAM_ORDER,
                "strength_fraction": STRENGTH_FRACTION}

    def model_info(self) -> dict[str, Any]:
        c = self.config
        return {"path": ", ".join(f"{a}.pt" for a in c.archs), "emb": c.emb, "hidden": c.hidden,
                "embeddings": "fixed, planted geometry (see the description)",
                "epochs": c.epochs}

    def summary(self) -> dict[str, Any]:
        trained = [r for r in self.recovered if r["role"] == "trained"]
        out: dict[str, Any] = {"planted_distance": self.config.distance,
                               "delays_analysed": self.config.max_delay,
                               "readings": len(trained),
                               "readings_within_one_step": len(self.matches)}
        for arch, stats in self.training.items():
            out[f"valid_perplexity_{arch}"] = stats["valid_ppl"]
        return out

    def extra(self) -> dict[str, Any]:
        return {"findings": {"title": "Findings", "items": findings(self.config,
                                                                    self.recovered)},
                "planted": {"title": "What was planted, and what each method recovered",
                            "paragraphs": description(self.config, self.recovered,
                                                      self.training),
                            "table": self.recovered},
                "stage_seconds": self.stage_seconds}


# -- the study ---------------------------------------------------------------------------------
def _train(cfg: PlantedConfig, arch: str, train_c: Corpus, valid_c: Corpus, workdir: Path,
           out: Path, log: Callable[[str], None]) -> LanguageModel:
    words = [UNK, EOS] + sorted(set(train_c.tokens))
    table = planted_embeddings(words, cfg.emb, cfg.n_nouns, cfg.irrelevant_scale, cfg.seed)
    emb_file = workdir / "planted_embeddings.txt"
    emb_file.write_text("".join(w + " " + " ".join(f"{x:.6f}" for x in row) + "\n"
                                for w, row in zip(words, table)))
    tc = memlens.TrainConfig(train="", out=str(out), arch=arch, emb=cfg.emb, hidden=cfg.hidden,
                             epochs=cfg.epochs, optimizer="adam", lr=0.01, dropout=0.0,
                             batch=20, bptt=35, pretrained=str(emb_file), seed=cfg.seed,
                             device="cpu", vocab_size=None, progress=cfg.progress)
    return memlens.train(tc, train_corpus=train_c, valid_corpus=valid_c, log=log)


def _model_info(model: LanguageModel, path: str) -> dict[str, Any]:
    c = model.config
    return {"path": path, "arch": c["arch"], "layers": c["layers"], "emb": c["emb"],
            "hidden": c["hidden"], "unit": c["unit"]}


def _corpus_info(corpus: Corpus, n_sentences: int, cfg: PlantedConfig) -> dict[str, Any]:
    return {"path": corpus.path, "tokens": len(corpus), "sentences": n_sentences,
            "planted_distance": cfg.distance, "sample": " ".join(corpus.tokens[:3 * (
                cfg.distance + 1)])}


def measure_gradients(model: LanguageModel, ckpt: str, corpus: Corpus, cfg: PlantedConfig
                      ) -> PlantedGradients:
    """State gradients of ``model`` on ``corpus`` with the planted direction's ranks."""
    readout = "cell" if model.config["arch"] == "lstm" else "hidden"
    res = memlens.state_gradients(model, model.vocab.encode(corpus.tokens), cfg.max_delay,
                                  readout=readout, layer=-1, labels=corpus.tags["role"],
                                  bootstrap=GRADIENT_BOOTSTRAP, progress=bool(cfg.progress))
    out = PlantedGradients.of(res, planted_direction(model, cfg.n_nouns), cfg.distance,
                              model.config["arch"])
    out.model_meta = _model_info(model, ckpt)
    out.corpus_meta = _corpus_info(corpus, cfg.gradient_sentences, cfg)
    return out


def measure_signatures(model: LanguageModel, ckpt: str, dec_c: Corpus, held_c: Corpus,
                       cfg: PlantedConfig) -> PlantedSignatures:
    """Signatures of the noun's number: trained model, random-init control, trigram window."""
    K, opts = cfg.max_delay, {"layer": -1, "readout": "hidden", "symbols": "upos",
                              "seed": cfg.seed, "bootstrap": SIGNATURE_RESAMPLES}
    sig = memlens.memory_signature(model, dec_c, held_c, K, **opts)
    control = random_init_copy(model, seed=cfg.seed + 1)
    with torch.no_grad():  # same fixed embeddings: only the recurrent weights are untrained
        control.encoder.embedding.weight.copy_(model.encoder.embedding.weight)
    ctrl = memlens.memory_signature(control, dec_c, held_c, K, **opts)
    V = len(model.vocab)
    tr_ids = model.vocab.encode(dec_c.tokens).numpy()
    he_ids = model.vocab.encode(held_c.tokens).numpy()
    sym = build_symbols("upos", "word", tr_ids, dec_c.tags["upos"], model.vocab.itos)
    window = signature_from_states(window_states(tr_ids, NGRAM_ORDER, V),
                                   sym.classes(tr_ids, dec_c.tags["upos"]),
                                   window_states(he_ids, NGRAM_ORDER, V),
                                   sym.classes(he_ids, held_c.tags["upos"]), K, sym,
                                   seed=cfg.seed, resamples=SIGNATURE_RESAMPLES)
    settings = {"max_delay": K, "layer": -1, "readout": "hidden", "decoder": "linear",
                "symbols": "number of the noun (sg/pl); other positions excluded",
                "control": "same model, recurrent weights untrained (seeded), same fixed "
                           "embeddings", "ngram_order": NGRAM_ORDER,
                "bootstrap_resamples": SIGNATURE_RESAMPLES, "margin": cfg.margin}
    return PlantedSignatures(sig, ctrl, window, model.config["arch"].upper(), cfg.distance,
                             cfg.margin, _model_info(model, ckpt),
                             {**_corpus_info(held_c, cfg.heldout_sentences, cfg),
                              "decoder_training_tokens": len(dec_c)}, settings)


def recovered_rows(arch: str, g: dict[str, int], s: dict[str, int], cfg: PlantedConfig
                   ) -> list[dict[str, Any]]:
    """What each method recovered for one model (trained readings, then its references)."""
    rows = []
    for method, value in zip(METHODS, (g["normalised"], g["unnormalised"], g["strength"],
                                       s["trained"], s["trained_vs_control"])):
        rows.append({"model": arch, "role": "trained", "method": method,
                     "planted": cfg.distance, "recovered": value,
                     "difference": value - cfg.distance,
                     "within_one_step": abs(value - cfg.distance) <= 1,
                     "definition": METHODS[method][0]})
    for name, model, role in (
            ("random-init", f"{arch} random-init control", "control"),
            ("trigram", f"{NGRAM_ORDER}-gram window (oracle: memory {NGRAM_ORDER - 1})",
             "oracle")):
        rows.append({"model": model, "role": role, "method": "memory signature vs majority",
                     "planted": cfg.distance, "recovered": s[name],
                     "difference": s[name] - cfg.distance,
                     "within_one_step": None,  # a reference, not a method
                     "definition": METHODS["memory signature vs majority"][0]})
    return rows


def curve_rows(g: PlantedGradients, s: PlantedSignatures) -> list[dict[str, Any]]:
    """One row per delay/lag of one model: every reading of the planted memory."""
    peak = float(np.nanmax(g.ranks["strength"])) or 1.0
    rows = []
    for tau in range(g.max_delay + 1):
        acc, ctrl = float(s.trained.accuracy[tau]), float(s.control.accuracy[tau])
        rows.append({"model": g.arch, "delay": tau, "lag": tau,
                     "rank_normalised": int(g.ranks["normalised"][tau]),
                     "rank_unnormalised": int(g.ranks["unnormalised"][tau]),
                     "strength": float(g.ranks["strength"][tau]),
                     "strength_of_peak": float(g.ranks["strength"][tau]) / peak,
                     "accuracy": acc, "control_accuracy": ctrl,
                     "window_accuracy": float(s.window.accuracy[tau]),
                     "majority": float(s.trained.majority[tau]),
                     "accuracy_over_control": acc - ctrl})
    return rows


def run_planted(cfg: PlantedConfig | None = None, log: Callable[[str], None] = print
                ) -> PlantedResult:
    """Run the study and save every result under ``cfg.out``: ``{arch}.pt``,
    ``gradients-{arch}/``, ``signatures-{arch}/`` and ``planted-memory/``. The returned
    result's ``dirs`` lists the saved result directories (its own first)."""
    cfg = cfg or PlantedConfig()
    cfg.check()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = ["corpus"] + [f"{s} {a}" for a in cfg.archs
                           for s in ("train", "gradients", "signatures")]
    bar = tqdm(total=len(stages), desc="memlens demo", unit="stage",
               disable=None if cfg.progress is None else not cfg.progress)
    bar.set_description(f"demo: {stages[0]}")
    result = PlantedResult(cfg)
    clock = [time.time()]

    def done(stage: str) -> None:
        result.stage_seconds[stage] = round(time.time() - clock[0], 2)
        clock[0] = time.time()
        bar.update(1)
        if len(result.stage_seconds) < len(stages):
            bar.set_description(f"demo: {stages[len(result.stage_seconds)]}")

    def quiet(msg: str) -> None:
        if cfg.progress:
            tqdm.write(msg)

    s = cfg.seed
    train_c = planted_corpus(cfg, cfg.sentences, s + 1)
    valid_c = planted_corpus(cfg, max(50, cfg.sentences // 10), s + 2)
    dec_c = planted_corpus(cfg, cfg.decoder_sentences, s + 3)
    held_c = planted_corpus(cfg, cfg.heldout_sentences, s + 4)
    grad_c = planted_corpus(cfg, cfg.gradient_sentences, s + 4)
    result.corpus_meta = {"path": "synthetic (generated in memory)",
                          "training_sentences": cfg.sentences,
                          **_corpus_info(train_c, cfg.sentences, cfg)}
    done("corpus")
    with tempfile.TemporaryDirectory(prefix="memlens-demo-") as work:
        for arch in cfg.archs:
            ckpt = out / f"{arch}.pt"
            model = _train(cfg, arch, train_c, valid_c, Path(work), ckpt, quiet)
            best = min(model.history, key=lambda r: r.get("valid_loss", r["train_loss"]))
            result.training[arch] = {"valid_ppl": best["valid_ppl"], "epoch": best["epoch"]}
            done(f"train {arch}")
            g = measure_gradients(model, ckpt.name, grad_c, cfg)
            result.dirs.append(g.save(out / f"gradients-{arch}"))
            done(f"gradients {arch}")
            sg = measure_signatures(model, ckpt.name, dec_c, held_c, cfg)
            result.dirs.append(sg.save(out / f"signatures-{arch}"))
            done(f"signatures {arch}")
            result.recovered += recovered_rows(arch.upper(), g.recovery(), sg.recovery(), cfg)
            result.curves += curve_rows(g, sg)
    bar.close()
    result.dirs.insert(0, result.save(out / "planted-memory"))
    return result


# -- prose -------------------------------------------------------------------------------------
def _join(parts: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    parts = list(parts)
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _reading(row: dict[str, Any], cfg: PlantedConfig) -> str:
    """What one recovered value says, as a clause."""
    _, hit, miss = METHODS[row["method"]]
    v = row["recovered"]
    return (hit if v <= cfg.max_delay else miss).format(v=v, k=cfg.max_delay)


def findings(cfg: PlantedConfig, recovered: Sequence[dict[str, Any]]) -> list[str]:
    """The findings in sentences: per trained model, which readings recover the planted
    distance and which miss it; what the references show; where normalisation matters."""
    out = []
    models = list(dict.fromkeys(r["model"] for r in recovered if r["role"] == "trained"))
    for model in models:
        rows = [r for r in recovered if r["model"] == model and r["role"] == "trained"]
        hits = [r for r in rows if r["within_one_step"]]
        misses = [r for r in rows if not r["within_one_step"]]
        if hits:
            out.append(f"{model}: {len(hits)} of {len(rows)} readings recover the planted "
                       f"distance of {cfg.distance} steps within one step: "
                       f"{_join([_reading(r, cfg) for r in hits])}.")
        else:
            out.append(f"{model}: no reading recovers the planted distance of {cfg.distance} "
                       "steps within one step.")
        if misses:
            out.append(f"{'The other readings of the' if hits else 'The readings of the'} "
                       f"{model} miss it: {_join([_reading(r, cfg) for r in misses])}.")
        m = {r["method"]: r["recovered"] for r in rows}
        n, u = m.get("state gradients, normalised"), m.get("state gradients, unnormalised")
        if n is not None and u is not None and n != u:
            def at(v: int) -> str:
                return f"at delay {v}" if v <= cfg.max_delay else \
                    f"at no delay up to {cfg.max_delay}"

            out.append(f"{model}: normalisation changes where the number direction ranks "
                       f"(it stops ranking first {at(n)} in normalised space and {at(u)} in "
                       "raw space).")
    for r in recovered:
        if r["role"] != "trained":
            out.append(f"Reference, {r['model']}: {_reading(r, cfg)}.")
    return list(dict.fromkeys(out))  # a shared reference (the n-gram window) once


def description(cfg: PlantedConfig, recovered: Sequence[dict[str, Any]],
                training: dict[str, dict[str, Any]]) -> list[str]:
    """What was planted, how each method reads a memory length, and the verdict."""
    models = ", ".join(f"{a.upper()} (validation perplexity {s['valid_ppl']:.2f})"
                       for a, s in training.items())
    matched = [r for r in recovered if r["within_one_step"] and r["role"] == "trained"]
    verdict = ("Recovered within one step of the planted distance by: "
               + "; ".join(f"{r['model']} {r['method']} ({r['recovered']})" for r in matched)
               + "." if matched else
               "No method recovered the planted distance within one step in this run.")
    return [
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


__all__ = ["METHODS", "PlantedConfig", "PlantedGradients", "PlantedResult",
           "PlantedSignatures", "description", "findings", "first_delay_not_first",
           "first_delay_weak", "first_lag_at_baseline", "measure_gradients",
           "measure_signatures", "planted_corpus", "planted_direction", "planted_embeddings",
           "planted_ranks", "run_planted"]
