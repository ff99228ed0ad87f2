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

What is measured, for a small LSTM and a GRU trained on the corpus (``memlens.train``), three
ways; every reading gives the first delay / lag / distance at which the memory is *over*
(held through d - 1 for planted distance d: the state that predicts the verb):

* state gradients (``memlens.state_gradients``, class "noun" at the source): the strength
  |Gn(tau) dn| of the state's reaction along the planted direction; recovered = 1 + the last
  delay at which it is at least half its peak (:func:`end_of_strength`). Beside it, as
  contrasts, the relative memory |G d| / sigma_1 in normalised and raw embedding space;
  1 + the last delay at which it is >= 0.9 (:func:`end_of_dominance`);
* memory signatures (``memlens.memory_signature``) of the number of the noun k steps back, for
  the trained model, a random-init control (same fixed embeddings, untrained recurrent weights)
  and a trigram window (an oracle that sees exactly the last 2 tokens). Recovered = the first
  lag >= 1 at which accuracy falls to that of the random-init control (memory that training
  added); as a contrast, the first lag at which it falls to the majority baseline (the verb
  repeats the number, so past the planted distance every network can read the number off the
  verb for a while);
* context ablation (``memlens.context_ablation`` through the LM's next-token head) at the verb
  positions: the tokens farther than k before the verb are swapped for those before another
  verb (``swap``) or dropped (``drop``, from a zero state: a contrast); recovered = the
  effective context, the smallest k from which the verb's loss rises by at most half a bit
  (:class:`PlantedAblation`).

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
from memlens.ablation import ContextAblationResult
from memlens.ablation.result import LN2, effective_context
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
ABLATION_BOOTSTRAP = 200
ABLATION_TOLERANCE_BITS = 0.5  # half of the one bit (sg/pl) that the planted feature carries

DOMINANCE = 0.9  # relative memory |Gn dn| / sigma_1 at which the number direction dominates

# What each reading is. role "trained": a reading of the memory *length* of a trained model,
# expected to recover the planted distance; "contrast": a reading shown beside them because it
# does not measure that length (a ratio that says *what* dominates, a baseline the verb
# re-supplies, a cold start), with the reason. Recovered value v: the first delay / lag /
# distance at which the memory is over (held through v - 1); K + 1 = not over by K; None =
# the direction never dominates.
METHODS: dict[str, dict[str, str]] = {
    "state gradients: strength along the number direction": {
        "view": "state gradients", "role": "trained",
        "definition": f"1 + the last delay at which |Gn(tau) dn|, the state's reaction along "
                      f"the number direction, is at least {STRENGTH_FRACTION:g} of its peak"},
    "memory signature vs random-init control": {
        "view": "memory signatures", "role": "trained",
        "definition": "first lag >= 1 at which decoding accuracy of the noun's number falls "
                      "to that of the untrained copy (within the margin, or the interval "
                      "reaches it)"},
    "context ablation: swap the context beyond k": {
        "view": "context ablation", "role": "trained",
        "definition": f"effective context: smallest distance k from which replacing the tokens "
                      f"farther than k before the verb by those before another verb raises "
                      f"the verb's loss by at most {ABLATION_TOLERANCE_BITS:g} bit"},
    "state gradients: number direction dominant, normalised space": {
        "view": "state gradients", "role": "contrast",
        "definition": f"1 + the last delay at which the number direction keeps relative memory "
                      f"|Gn dn| / sigma_1 >= {DOMINANCE:g} (None: it never does)"},
    "state gradients: number direction dominant, raw space": {
        "view": "state gradients", "role": "contrast",
        "definition": f"the same in raw embedding space: 1 + the last delay at which "
                      f"|Gbar d| / sigma_1(Gbar) >= {DOMINANCE:g}"},
    "memory signature vs majority baseline": {
        "view": "memory signatures", "role": "contrast",
        "definition": "first lag at which decoding accuracy of the noun's number falls to the "
                      "majority baseline (within the margin, or the interval reaches it)"},
    "context ablation: drop the context beyond k": {
        "view": "context ablation", "role": "contrast",
        "definition": f"effective context under truncation (the last k tokens, read from a "
                      f"zero state): smallest k from which the verb's loss rises by at most "
                      f"{ABLATION_TOLERANCE_BITS:g} bit"},
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
    ablation_targets: int = 150    # verbs (held-out sentences) scored by context ablation
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
                    "gradient_sentences", "ablation_targets", "epochs", "emb", "hidden"):
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
    with d / |d|. Also, in both spaces, the alignment |v_1 . d| of the first singular vector
    and the relative memory |G d| / sigma_1(G) (``relmem_*``), and the "strength" |Gn(tau) dn|
    of the state's reaction along the planted direction (Gn dn = Gbar d / |Z d|: the same
    curve up to one constant in either space). Arrays of length max_delay + 1.
    """
    d_raw = direction / np.linalg.norm(direction)
    d_norm = result.normalization.Z @ direction
    d_norm = d_norm / np.linalg.norm(d_norm)
    out: dict[str, list] = {"normalised": [], "unnormalised": [], "align_normalised": [],
                            "align_unnormalised": [], "relmem_normalised": [],
                            "relmem_unnormalised": [], "strength": []}
    for tau in range(result.max_delay + 1):
        raw = np.nan_to_num(result.mean(tau, cls))
        norm = np.nan_to_num(result.normalized_mean(tau, cls))
        for key, m, d in (("normalised", norm, d_norm), ("unnormalised", raw, d_raw)):
            _, sv, vt = np.linalg.svd(m, full_matrices=True)
            proj = np.abs(vt @ d)
            out[key].append(int(np.argmax(proj)) + 1)
            out[f"align_{key}"].append(float(proj[0]))
            out[f"relmem_{key}"].append(float(np.linalg.norm(m @ d) / sv[0]) if sv[0] > 0
                                        else float("nan"))
        out["strength"].append(float(np.linalg.norm(result.normalized_mean(tau, cls) @ d_norm)))
    return {k: np.array(v) for k, v in out.items()}


def first_delay_not_first(ranks: np.ndarray) -> int:
    """First delay at which the rank is not 1 (len(ranks) if it ranks first throughout).
    Kept for comparison: at delay 0 a noun's identity dominates the state's reaction, so this
    reading gives 0 whatever the memory length (the demo no longer uses it)."""
    bad = np.nonzero(ranks != 1)[0]
    return int(bad[0]) if bad.size else len(ranks)


def end_of_dominance(relmem: np.ndarray, threshold: float = DOMINANCE) -> int | None:
    """1 + the last delay at which ``relmem`` >= ``threshold`` (the planted direction is, up
    to 1 - threshold, the strongest direction reaching the state); ``len(relmem)`` if it still
    dominates at the last delay, None if it never dominates."""
    hit = np.nonzero(np.nan_to_num(relmem) >= threshold)[0]
    return int(hit[-1]) + 1 if hit.size else None


def first_delay_weak(strength: np.ndarray, fraction: float = STRENGTH_FRACTION) -> int:
    """First delay after the peak of ``strength`` at which it falls below ``fraction`` of the
    peak (len if never). An LSTM's cell can build a memory up over a few steps before it
    decays, so the search starts at the peak, not at delay 0."""
    if not strength.size or not np.isfinite(strength).any():
        return len(strength)
    top = int(np.nanargmax(strength))
    weak = np.nonzero(strength[top:] < fraction * strength[top])[0]
    return top + int(weak[0]) if weak.size else len(strength)


def end_of_strength(strength: np.ndarray, fraction: float = STRENGTH_FRACTION) -> int:
    """1 + the last delay at which ``strength`` is at least ``fraction`` of its peak: the
    memory is over once it never again reaches half its peak strength. (A state can react to
    a word strongly at first, weaker for a while and strongly again just before it uses it,
    as a GRU does for long distances; the first fall below half would end its memory early.)
    ``len(strength)`` if it is still that strong at the last delay; 0 if there is no finite
    value."""
    if not strength.size or not np.isfinite(strength).any():
        return 0
    strong = np.nonzero(np.nan_to_num(strength) >= fraction * np.nanmax(strength))[0]
    return int(strong[-1]) + 1


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

    def recovery(self) -> dict[str, int | None]:
        """Recovered memory lengths by the gradient readings: ``strength`` (the length), and
        the end of the number direction's dominance in ``normalised`` and ``unnormalised``
        (raw) embedding space."""
        return {"normalised": end_of_dominance(self.ranks["relmem_normalised"]),
                "unnormalised": end_of_dominance(self.ranks["relmem_unnormalised"]),
                "strength": end_of_strength(self.ranks["strength"])}

    def rows(self) -> list[dict]:
        rows = [dict(r) for r in super().rows()]
        for row in rows:
            if row["class"] == "noun":
                tau = row["delay"]
                row["rank_number_normalised"] = int(self.ranks["normalised"][tau])
                row["rank_number_unnormalised"] = int(self.ranks["unnormalised"][tau])
                row["relmem_number_normalised"] = float(self.ranks["relmem_normalised"][tau])
                row["relmem_number_unnormalised"] = float(
                    self.ranks["relmem_unnormalised"][tau])
                row["strength_number"] = float(self.ranks["strength"][tau])
        return rows

    def summary(self) -> dict:
        sv = self.spectrum("noun")
        rec = self.recovery()
        return {"condition_number_Z": self.normalization.condition,
                "sum_sv_noun_delay0": float(np.nansum(sv[0])),
                f"sum_sv_noun_delay{self.planted}": float(np.nansum(sv[self.planted])),
                "number_dominant_until_normalised": rec["normalised"],
                "number_dominant_until_unnormalised": rec["unnormalised"],
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
            a2.plot(delays, ranks[f"relmem_{key}"], ls, marker="o", ms=4, label=key)
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
        a2.axhline(DOMINANCE, color="grey", lw=1, label=f"{DOMINANCE:g} (dominant)")
        a2.legend(fontsize=7)
        a2.set(ylabel="|G d| / sigma_1", ylim=(0, 1.02),
               title="relative memory of the number direction")
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
             "direction ranks, when the source word is a noun. Middle: its relative memory, "
             "how strongly the state reacts along it compared with the strongest direction "
             f"(1 = it is the strongest; above {DOMINANCE:g} it dominates). Solid: normalised "
             "embedding space; dashed: raw space, where the low-variance number direction "
             "looks dominant even after the memory has faded. Right: how strongly the state "
             "still reacts to the noun's number itself (|Gn dn|); where it drops below the "
             "grey line the number is mostly forgotten."}]


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


ABLATION_LABELS = {"swap": "swap in another verb's context", "drop": "drop (zero state)"}


@dataclass(repr=False)
class PlantedAblation(ContextAblationResult):
    """Context ablation of one trained model at the verb positions (an "ablation" result).

    The targets are the verbs; the loss is the model's ordinary next-token loss there. At
    distance k everything farther than k tokens before the verb is destroyed in two ways:
    ``swap`` puts the far part of *another* verb's window in its place (real text of the same
    stream at the same offsets, so the sentence structure is intact and the state stays warmed
    up: only the information is gone) and ``drop`` truncates the context to the last k tokens,
    read from a zero state. The tolerance is absolute, ``tolerance_bits`` (half a bit: half of
    the one bit the planted sg/pl feature carries), not a fraction of the unperturbed loss
    (nearly 0 at the verb). Recovered distance = the effective context: the smallest k from
    which the increase stays within the tolerance. The noun that decides the verb lies at
    distance ``planted``, so a model that uses it, and nothing farther, gives exactly
    ``planted``.
    """

    planted: int = 0
    arch: str = ""
    tolerance_bits: float = 0.5

    @classmethod
    def of(cls, result: ContextAblationResult, planted: int, arch: str,
           tolerance_bits: float) -> PlantedAblation:
        """``result`` (from ``memlens.context_ablation``) with the planted distance."""
        base = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        out = cls(**base, planted=planted, arch=arch.upper(), tolerance_bits=tolerance_bits)
        out.settings = {**out.settings, "targets_are": "the verb positions",
                        "tolerance_bits": tolerance_bits}
        return out

    @property
    def tolerance_nats(self) -> float:
        return self.tolerance_bits * LN2

    def recovery(self) -> dict[str, int]:
        """Per perturbation: the smallest distance k from which the loss increase at the verb
        stays within the tolerance (``len(distances) + 1`` when it never does)."""
        inc, never = self.increase, max(self.distances) + 1
        out = {}
        for i, p in enumerate(self.perturbations):
            k = effective_context(self.distances, inc[i], self.tolerance_nats)
            out[p] = never if k is None else int(k)
        return out

    def rows(self) -> list[dict]:
        rows = super().rows()
        for row in rows:
            row["perturbation"] = ABLATION_LABELS.get(row["perturbation"], row["perturbation"])
            for key in ("low", "high"):
                v = row[f"increase_{key}"]
                row[f"increase_{key}_bits"] = None if v is None else v / LN2
        return rows

    def series(self) -> list[dict]:
        return [{"name": "increase", "title": f"{self.arch}: loss increase at the verb",
                 "x": "distance", "y": "increase_bits", "group": ["perturbation"],
                 "low": "increase_low_bits", "high": "increase_high_bits",
                 "xlabel": "distance k (tokens before the verb kept intact)",
                 "ylabel": "loss increase at the verb (bits)",
                 "caption": f"How much worse the model predicts the verb when everything "
                            f"farther than k tokens back is swapped for another verb's context "
                            f"or dropped; 95% block-bootstrap bands. The noun that decides the "
                            f"verb is {self.planted} tokens back."}]

    def summary(self) -> dict:
        out = super().summary()
        out["effective_context"] = self.recovery()
        out["effective_context_definition"] = (
            f"smallest measured k such that the loss increase at the verb is at most "
            f"{self.tolerance_bits:g} bits at k and every larger measured k")
        out["tolerance_bits"] = self.tolerance_bits
        return out

    @plain_text
    def figures(self, out: Path) -> list[dict[str, str]]:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        lo, hi = self.intervals()
        for i, p in enumerate(self.perturbations):
            line, = ax.plot(self.distances, self.increase[i] / LN2, marker="o", ms=3,
                            label=ABLATION_LABELS.get(p, p))
            ax.fill_between(self.distances, lo[i] / LN2, hi[i] / LN2, alpha=0.15,
                            color=line.get_color(), linewidth=0)
        ax.axhline(self.tolerance_bits, color="grey", lw=1,
                   label=f"tolerance {self.tolerance_bits:g} bit")
        _planted_line(ax, self.planted)
        ax.set(xlabel="distance k (tokens before the verb kept intact)",
               ylabel="loss increase at the verb (bits)",
               title=f"{self.arch}: context ablation at the verb")
        ax.legend(fontsize=7)
        _save(fig, out / "increase.png")
        return [{"file": "increase.png", "title": f"{self.arch}: context ablation at the verb",
                 "caption": "How much worse the model predicts the verb (is/are) when the "
                 "context farther than k tokens back is destroyed: swapped for the same "
                 "stretch before another verb (real text, same sentence structure, unrelated "
                 "noun) or dropped (the model reads only the last k tokens, from a zero "
                 "state it never met in the middle of a stream in training). Where a curve "
                 "stays below the grey line the model no longer needs the context beyond k; "
                 "the dotted line is the planted distance."}]


@dataclass(repr=False)
class PlantedResult(Result):
    """The study's own result (kind "planted-memory"): one row per (model, delay) with every
    reading of the planted memory, declared as series; what each method recovered; findings.

    It declares a ``verdict`` (see :meth:`memlens.results.Result.verdict`), which a report
    shows first: planted vs recovered per method and model with match yes/no, one figure with
    the three views per model (``three_views.png``) and the findings as sentences. Each model's
    own curves are also plotted in its gradients, signatures and ablation result directories.
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
        """Trained-model length readings within one step of the planted distance."""
        return [r for r in self.recovered if r["match"] and r["role"] == "trained"]

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
                        f"fraction of its peak; the memory is over after the last delay at "
                        f"which it reaches {STRENGTH_FRACTION:g} (planted: {d} steps)."},
            {"name": "relmem", "title": "Relative memory of the number direction (normalised)",
             "x": "delay", "y": "relmem_normalised", "group": ["model"],
             "xlabel": "delay tau", "ylabel": "|Gn dn| / sigma_1", "log_y": False,
             "caption": f"How strongly the state reacts along the number direction compared "
                        f"with the strongest direction of normalised embedding space (1: it "
                        f"is the strongest; {DOMINANCE:g} and above: it dominates)."},
            {"name": "added", "title": "Decoding accuracy that training added",
             "x": "lag", "y": "accuracy_over_control", "group": ["model"],
             "xlabel": "lag k", "ylabel": "accuracy minus that of the untrained copy",
             "log_y": False,
             "caption": f"How much better the trained network decodes the number of the noun "
                        f"k steps back than its untrained copy; planted: {d} steps."},
            {"name": "ablation", "title": "Loss increase at the verb (swap beyond k)",
             "x": "delay", "y": "ablation_swap_bits", "group": ["model"],
             "xlabel": "distance k (tokens before the verb kept)", "ylabel": "bits",
             "log_y": False,
             "caption": f"How much worse the verb is predicted when the context farther than "
                        f"k tokens back is swapped for another verb's; the noun is {d} back."},
        ]

    @plain_text
    def figures(self, out: Path) -> list[dict[str, str]]:
        """``three_views.png``: per model (rows) the three views (columns) against delay."""
        plt, d, cfg = pyplot(), self.config.distance, self.config
        models = list(dict.fromkeys(r["model"] for r in self.curves))
        if not models:
            return []
        fig, axes = plt.subplots(len(models), 3, figsize=(13, 3.3 * len(models)),
                                 squeeze=False)
        rec = {(r["model"], r["method"]): r["recovered"] for r in self.recovered}
        for row, model in zip(axes, models):
            c = [r for r in self.curves if r["model"] == model]
            x = np.array([r["delay"] for r in c])

            def col(key: str, rows=c) -> np.ndarray:
                return np.array([np.nan if r.get(key) is None else r[key] for r in rows],
                                dtype=float)

            a1, a2, a3 = row
            a1.plot(x, col("strength_of_peak"), "-o", ms=3, color="C2",
                    label="strength |Gn dn| / peak")
            a1.plot(x, col("relmem_normalised"), "-s", ms=3, color="C0",
                    label="relative memory, normalised")
            a1.plot(x, col("relmem_unnormalised"), "--", color="C0", alpha=0.6,
                    label="relative memory, raw space")
            a1.axhline(STRENGTH_FRACTION, color="C2", lw=0.8, ls=":")
            a1.axhline(DOMINANCE, color="C0", lw=0.8, ls=":")
            a1.set(ylim=(0, 1.05), ylabel="fraction",
                   title=f"{model}: state gradients (number direction)")
            a2.plot(x, col("accuracy"), "-o", ms=3, color="C3", label=f"trained {model}")
            a2.plot(x, col("control_accuracy"), "--", color="C7", label="untrained copy")
            a2.plot(x, col("majority"), color="grey", lw=0.8, label="majority baseline")
            a2.set(ylim=(0.3, 1.02), ylabel="accuracy",
                   title=f"{model}: memory signature (noun's number)")
            swap, lo, hi = col("ablation_swap_bits"), col("ablation_swap_low_bits"), \
                col("ablation_swap_high_bits")
            a3.plot(x, swap, "-o", ms=3, color="C1", label="swap beyond k")
            a3.fill_between(x, lo, hi, color="C1", alpha=0.2, linewidth=0)
            a3.plot(x, col("ablation_drop_bits"), "--", color="C5", alpha=0.7,
                    label="drop beyond k (zero state)")
            a3.axhline(ABLATION_TOLERANCE_BITS, color="grey", lw=0.8, ls=":",
                       label=f"tolerance {ABLATION_TOLERANCE_BITS:g} bit")
            a3.set(ylim=(-0.2, max(4.0, float(np.nanmax(swap)) + 0.3) if np.isfinite(
                swap).any() else 4.0), ylabel="loss increase at the verb (bits)",
                title=f"{model}: context ablation at the verb")
            a3.set_xlim(left=-0.5)
            for ax, method, xl in (
                    (a1, "state gradients: strength along the number direction",
                     "delay tau (steps after the noun)"),
                    (a2, "memory signature vs random-init control", "lag k (steps back)"),
                    (a3, "context ablation: swap the context beyond k",
                     "distance k (tokens before the verb kept)")):
                _planted_line(ax, d)
                v = rec.get((model, method))
                if v is not None and v <= cfg.max_delay:
                    ax.axvline(v, color="C1" if ax is a3 else "C2" if ax is a1 else "C3",
                               lw=2, alpha=0.35, label=f"recovered {v}")
                ax.set_xlabel(xl)
                ax.legend(fontsize=7)
                ax.grid(alpha=0.3)
        fig.suptitle(f"The planted memory ({d} steps) seen three ways", fontsize=11)
        _save(fig, out / "three_views.png")
        return [{"file": "three_views.png",
                 "title": f"The three views of the planted memory ({d} steps), per model",
                 "caption": f"Left, state gradients of a noun's number: the state's reaction "
                 f"along the number direction as a fraction of its peak (green; the memory is "
                 f"over after the last delay at which it reaches {STRENGTH_FRACTION:g}) and "
                 f"its relative memory, the number direction against the strongest direction "
                 f"(blue; solid: normalised embedding space, dashed: raw space). Middle, "
                 f"memory signature: how well a linear decoder reads the number of the noun "
                 f"k steps back out of the state, for the trained model and its untrained "
                 f"copy. Right, context ablation: how much worse the verb is predicted when "
                 f"the context farther than k tokens back is swapped for another verb's "
                 f"(orange, with 95% band) or dropped. Dotted black line: the planted "
                 f"distance; thick line: what the reading of that panel recovered."}]

    def settings_info(self) -> dict[str, Any]:
        settings = dataclasses.asdict(self.config)
        for key in ("out", "progress"):
            settings.pop(key)
        return {**settings, "max_delay": self.config.max_delay, "ngram_order": NGRAM_ORDER,
                "strength_fraction": STRENGTH_FRACTION, "dominance": DOMINANCE,
                "ablation_tolerance_bits": ABLATION_TOLERANCE_BITS}

    def model_info(self) -> dict[str, Any]:
        c = self.config
        return {"path": ", ".join(f"{a}.pt" for a in c.archs), "emb": c.emb, "hidden": c.hidden,
                "embeddings": "fixed, planted geometry (see the description)",
                "epochs": c.epochs}

    def summary(self) -> dict[str, Any]:
        trained = [r for r in self.recovered if r["role"] == "trained"]
        out: dict[str, Any] = {"planted_distance": self.config.distance,
                               "delays_analysed": self.config.max_delay,
                               "length_readings": len(trained),
                               "length_readings_within_one_step": len(self.matches)}
        for arch, stats in self.training.items():
            out[f"valid_perplexity_{arch}"] = stats["valid_ppl"]
        return out

    def verdict(self) -> dict[str, Any]:
        cfg = self.config
        trained = [r for r in self.recovered if r["role"] == "trained"]
        n_ok = sum(bool(r["match"]) for r in trained)
        lead = (f"A noun's number decides the verb {cfg.distance} steps later. "
                f"{n_ok} of the {len(trained)} length readings of the trained models "
                f"(state gradients, memory signatures, context ablation; one per view and "
                f"model) recover that distance within one step.")
        table = [{"model": r["model"], "view": METHODS.get(r["method"], {}).get("view", ""),
                  "method": r["method"], "role": r["role"], "planted": r["planted"],
                  "recovered": recovered_text(r["recovered"], cfg.max_delay),
                  "match": r["match"]} for r in self.recovered]
        return {"title": f"Verdict: planted {cfg.distance} steps, recovered by each view",
                "paragraphs": [lead, "Role: trained = a reading of the memory length of a "
                               "trained model; contrast = a reading shown beside it because "
                               "it does not measure that length (the findings say why); "
                               "control and oracle = reference models (the oracle's match is "
                               f"against its own window, {NGRAM_ORDER - 1}; the control has "
                               "no known answer)."],
                "table": table, "figures": ["three_views.png"],
                "findings": findings(cfg, self.recovered, self.curves)}

    def extra(self) -> dict[str, Any]:
        return {"planted": {"title": "What was planted, and how each method reads it",
                            "paragraphs": description(self.config, self.training),
                            "table": [{"method": m, **v} for m, v in METHODS.items()]},
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


def measure_ablation(model: LanguageModel, ckpt: str, corpus: Corpus, cfg: PlantedConfig
                     ) -> PlantedAblation:
    """Context ablation of ``model`` at the verbs of ``corpus`` (``memlens.context_ablation``
    through the model's next-token head): distances 1..max_delay, a window of max_delay + 1
    tokens, the far tokens swapped for another verb's or dropped (see
    :class:`PlantedAblation`)."""
    L = cfg.max_delay + 1
    roles = corpus.tags["role"]
    verbs = [t for t, r in enumerate(roles) if r == "verb" and t >= L]
    if not verbs:
        raise MemlensError("the ablation corpus has no verb with a full context window")
    if len(verbs) > cfg.ablation_targets:  # evenly spaced over the stream
        verbs = [verbs[i] for i in np.linspace(0, len(verbs) - 1, cfg.ablation_targets)
                 .round().astype(int)]
    ids = model.vocab.encode(corpus.tokens).numpy()
    res = memlens.context_ablation(model, ids, distances=list(range(1, cfg.max_delay + 1)),
                                   perturbation=["swap", "drop"], context=L, targets=verbs,
                                   bootstrap=ABLATION_BOOTSTRAP, blocks=20, seed=cfg.seed,
                                   batch_size=1024)
    out = PlantedAblation.of(res, cfg.distance, model.config["arch"], ABLATION_TOLERANCE_BITS)
    out.model_meta = {**_model_info(model, ckpt), **out.model_meta}
    out.corpus_meta = {**_corpus_info(corpus, cfg.heldout_sentences, cfg),
                       "targets": f"{len(verbs)} verbs"}
    return out


def recovered_rows(arch: str, g: dict[str, int | None], s: dict[str, int],
                   a: dict[str, int], cfg: PlantedConfig) -> list[dict[str, Any]]:
    """What each reading recovered for one model: its length readings (role "trained"), the
    contrasts, then the references (random-init control, trigram window), as records with
    ``model``, ``role``, ``method``, ``planted``, ``recovered``, ``expected`` and ``match``
    (within one step of ``expected``; None for the control, which has no known answer)."""
    values = {
        "state gradients: strength along the number direction": g["strength"],
        "memory signature vs random-init control": s["trained_vs_control"],
        "context ablation: swap the context beyond k": a["swap"],
        "state gradients: number direction dominant, normalised space": g["normalised"],
        "state gradients: number direction dominant, raw space": g["unnormalised"],
        "memory signature vs majority baseline": s["trained"],
        "context ablation: drop the context beyond k": a["drop"],
    }
    rows = []
    for method, value in values.items():
        rows.append(_row(arch, METHODS[method]["role"], method, value, cfg))
    rows.append(_row(f"{arch} random-init control", "control",
                     "memory signature vs majority baseline", s["random-init"], cfg, None))
    rows.append(_row(f"{NGRAM_ORDER}-gram window (oracle: memory {NGRAM_ORDER - 1})", "oracle",
                     "memory signature vs majority baseline", s["trigram"], cfg,
                     NGRAM_ORDER - 1))
    return rows


def _row(model: str, role: str, method: str, value: int | None, cfg: PlantedConfig,
         expected: int | None | str = "planted") -> dict[str, Any]:
    """One record of ``recovered``. ``match``: within one step of ``expected`` (the planted
    distance; the window for the n-gram oracle; None, no match at all, for the control)."""
    exp = cfg.distance if expected == "planted" else expected
    match = None if exp is None else value is not None and abs(value - int(exp)) <= 1
    return {"model": model, "role": role, "method": method, "planted": cfg.distance,
            "recovered": value, "expected": exp, "match": match,
            "difference": None if value is None else value - cfg.distance,
            "definition": METHODS[method]["definition"]}


def curve_rows(g: PlantedGradients, s: PlantedSignatures, a: PlantedAblation
               ) -> list[dict[str, Any]]:
    """One row per delay/lag/distance of one model: every reading of the planted memory
    (ablation columns in bits at distance k = delay; none at 0)."""
    peak = float(np.nanmax(g.ranks["strength"])) or 1.0
    inc, (lo, hi) = a.increase / LN2, a.intervals()
    col = {p: i for i, p in enumerate(a.perturbations)}
    at = {k: j for j, k in enumerate(a.distances)}
    rows = []
    for tau in range(g.max_delay + 1):
        acc, ctrl = float(s.trained.accuracy[tau]), float(s.control.accuracy[tau])
        row = {"model": g.arch, "delay": tau, "lag": tau,
               "rank_normalised": int(g.ranks["normalised"][tau]),
               "rank_unnormalised": int(g.ranks["unnormalised"][tau]),
               "relmem_normalised": float(g.ranks["relmem_normalised"][tau]),
               "relmem_unnormalised": float(g.ranks["relmem_unnormalised"][tau]),
               "strength": float(g.ranks["strength"][tau]),
               "strength_of_peak": float(g.ranks["strength"][tau]) / peak,
               "accuracy": acc, "control_accuracy": ctrl,
               "window_accuracy": float(s.window.accuracy[tau]),
               "majority": float(s.trained.majority[tau]),
               "accuracy_over_control": acc - ctrl}
        for p in ("swap", "drop"):
            j = at.get(tau)
            ok = j is not None and p in col
            row[f"ablation_{p}_bits"] = float(inc[col[p], j]) if ok else None
            if p == "swap":
                row["ablation_swap_low_bits"] = float(lo[col[p], j] / LN2) if ok else None
                row["ablation_swap_high_bits"] = float(hi[col[p], j] / LN2) if ok else None
        rows.append(row)
    return rows


def run_planted(cfg: PlantedConfig | None = None, log: Callable[[str], None] = print
                ) -> PlantedResult:
    """Run the study and save every result under ``cfg.out``: ``{arch}.pt``,
    ``gradients-{arch}/``, ``signatures-{arch}/``, ``ablation-{arch}/`` and
    ``planted-memory/``. The returned result's ``dirs`` lists the saved result directories
    (its own first)."""
    cfg = cfg or PlantedConfig()
    cfg.check()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = ["corpus"] + [f"{s} {a}" for a in cfg.archs
                           for s in ("train", "gradients", "signatures", "ablation")]
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
            ab = measure_ablation(model, ckpt.name, held_c, cfg)
            result.dirs.append(ab.save(out / f"ablation-{arch}"))
            done(f"ablation {arch}")
            result.recovered += recovered_rows(arch.upper(), g.recovery(), sg.recovery(),
                                               ab.recovery(), cfg)
            result.curves += curve_rows(g, sg, ab)
    bar.close()
    result.dirs.insert(0, result.save(out / "planted-memory"))
    return result


# -- prose -------------------------------------------------------------------------------------
def recovered_text(value: int | None, max_delay: int) -> str:
    """A recovered value as a reader sees it: "5", "not over by 11", "never dominant"."""
    if value is None:
        return "never dominant"
    return str(value) if value <= max_delay else f"not over by {max_delay}"


def _both(rows: dict[str, Any], say: Callable[[Any], str]) -> str:
    """"5 for both models", or "5 for the LSTM and 6 for the GRU"."""
    vals = list(rows.values())
    if len(vals) > 1 and all(v == vals[0] for v in vals):
        return f"{say(vals[0])} for {'both' if len(vals) == 2 else 'all'} models"
    parts = [f"{say(v)} for the {m}" for m, v in rows.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def findings(cfg: PlantedConfig, recovered: Sequence[dict[str, Any]],
             curves: Sequence[dict[str, Any]] = ()) -> list[str]:
    """The findings as sentences: one per view for the length readings, one per contrast
    saying what it shows instead, and the references (``curves``: the per-delay rows, for
    the size of the effects quoted)."""
    d, K = cfg.distance, cfg.max_delay
    by: dict[str, dict[str, int | None]] = {}
    for r in recovered:
        if r["role"] in ("trained", "contrast"):
            by.setdefault(r["method"], {})[r["model"]] = r["recovered"]

    def at(v: int | None) -> str:
        return "never" if v is None else f"at {v}" if v <= K else f"only beyond {K}"

    def tokens(v: int | None) -> str:
        return f"{v} tokens" if v is not None and v <= K else f"more than {K} tokens"

    out = []
    trained = [r for r in recovered if r["role"] == "trained"]
    ok = [r for r in trained if r["match"]]
    if len(ok) == len(trained):
        out.append(f"All three views find the planted memory: every length reading recovers "
                   f"the planted {d} steps within one step, for every trained model.")
    else:
        miss = sorted({f"{r['model']} ({r['method']})" for r in trained if not r["match"]})
        out.append(f"{len(ok)} of {len(trained)} length readings recover the planted {d} "
                   f"steps within one step; these miss it: {'; '.join(miss)}.")
    m = by.get("state gradients: strength along the number direction", {})
    if m:
        out.append(f"State gradients: the state's reaction along the noun's number direction "
                   f"stays at half its peak or more while the verb is still to come and "
                   f"collapses once the verb has been read; the memory is over "
                   f"{_both(m, at)} (planted {d}).")
    m = by.get("memory signature vs random-init control", {})
    if m:
        out.append(f"Memory signatures: the trained networks decode the noun's number better "
                   f"than their untrained copies until the verb; the advantage ends "
                   f"{_both(m, at)} (planted {d}).")
    m = by.get("context ablation: swap the context beyond k", {})
    if m:
        out.append(f"Context ablation: swapping everything farther than k tokens before the "
                   f"verb for the same stretch before another verb costs "
                   f"{_swap_cost(curves, cfg)} bits at the verb while the noun is among the "
                   f"swapped tokens and almost nothing once it is kept; the effective context "
                   f"is {_both(m, tokens)} (planted {d}).")
    n = by.get("state gradients: number direction dominant, normalised space", {})
    if n:
        out.append(_normalisation_sentence(n, curves, cfg))
    m = by.get("memory signature vs majority baseline", {})
    if m:
        out.append(f"Against the majority baseline the signature runs on past the planted "
                   f"distance (it ends {_both(m, at)}; analysed up to lag {K}): from lag {d} "
                   f"on the verb, which "
                   f"repeats the number, is in view, and any network keeps it for a few "
                   f"steps; the untrained copy is the baseline that isolates what training "
                   f"added.")
    m = by.get("context ablation: drop the context beyond k", {})
    if m:
        out.append(f"Dropping the context instead of swapping it (reading only the last k "
                   f"tokens, from a zero state) overstates the context used "
                   f"({_both(m, tokens)}): the models were trained on an unbroken stream and "
                   f"need a few tokens to recover from a zero state.")
    for row in recovered:
        if row["role"] == "oracle":
            out.append(f"Oracle check: the {row['model']} reads the number back for "
                       f"{row['recovered']} lags, its window, as it must.")
            break
    return out


def _normalisation_sentence(dominance: dict[str, int | None], curves: Sequence[dict[str, Any]],
                            cfg: PlantedConfig) -> str:
    """What normalisation changes, in plain words, with the numbers of this run."""
    K = cfg.max_delay

    def dom(v: int | None) -> str:
        return ("never" if v is None else f"last at delay {v - 1}" if v <= K else
                f"still at delay {K}")

    start = {r["model"]: (r["relmem_normalised"], r["relmem_unnormalised"])
             for r in curves if r["delay"] == 0}
    late = [r["relmem_unnormalised"] for r in curves
            if r["delay"] > 0 and r["strength_of_peak"] < 0.25]
    text = ("Normalisation changes what looks dominant. In raw embedding space the number "
            "lives on a low-variance coordinate, so a unit step along it is a large step "
            "compared with how words differ, and the network's strong weights on it make it "
            "look dominant")
    if start:
        text += (" from the start: its relative memory at delay 0 is " + _both(
            {m: v[1] for m, v in start.items()}, lambda x: f"{x:.2f}")
            + " in raw space, against " + _both({m: v[0] for m, v in start.items()},
                                                lambda x: f"{x:.2f}")
            + " in normalised space, where the noun's other features dominate")
    text += (". In normalised space (every direction scaled to its spread over the "
             "vocabulary) the number direction dominates (relative memory >= "
             f"{DOMINANCE:g}) {_both(dominance, dom)}")
    if late:
        text += (f"; in raw space it keeps a relative memory of {min(late):.2f} to "
                 f"{max(late):.2f} even after its strength has fallen below a quarter of the "
                 "peak")
    return text + (". Such ratios say what is remembered, not for how long: when everything "
                   "fades together they stay put, so the length is read from the strength.")


def _swap_cost(curves: Sequence[dict[str, Any]], cfg: PlantedConfig) -> str:
    """The range of the swap ablation's loss increase (bits) at distances below the planted
    one, over the models: "2.9 to 4.1", or "over a bit" without curves."""
    cost = [r["ablation_swap_bits"] for r in curves if r.get("ablation_swap_bits") is not None
            and 1 <= r["delay"] < cfg.distance]
    if not cost:
        return "over a bit"
    lo, hi = f"{min(cost):.1f}", f"{max(cost):.1f}"
    return f"about {lo}" if lo == hi else f"{lo} to {hi}"


def description(cfg: PlantedConfig, training: dict[str, dict[str, Any]]) -> list[str]:
    """What was planted and how each view reads a memory length."""
    models = ", ".join(f"{a.upper()} (validation perplexity {s['valid_ppl']:.2f})"
                       for a, s in training.items())
    d = cfg.distance
    return [
        f"Planted memory: the number (singular or plural) of a noun decides the verb exactly "
        f"{d} steps later, with {d - 1} random filler words between; "
        f"nothing else in the text needs remembering. A model therefore has to carry the "
        f"feature 'number' for {d} steps. Sentences follow each other directly, so "
        f"one step after the verb (delay {d + 1}) a new noun replaces the old one.",
        f"Embedding space: fixed embeddings of size {cfg.emb}; the number lives on one "
        f"coordinate with small spread, while an irrelevant coordinate has "
        f"{cfg.irrelevant_scale:g} times the spread of the others. The planted direction is "
        f"the mean plural-noun embedding minus the mean singular-noun embedding.",
        f"Models trained on {cfg.sentences} sentences: {models}.",
        f"Every length reading gives the first delay, lag or distance at which the memory is "
        f"over: the number must be held through delay {d - 1} (the state that predicts the "
        f"verb), so a model that holds it exactly as long as needed gives {d}; one that "
        f"drops it only when the next noun arrives gives {d + 1}. Delays, lags and "
        f"distances 1..{cfg.max_delay} are analysed; 'not over by {cfg.max_delay}' means "
        f"the memory had not ended by then.",
        "State gradients read the strength of the state's reaction along the number "
        "direction (the same curve in raw and normalised space); the relative memory, the "
        "number direction against the strongest direction, is shown beside it in both "
        "spaces. Memory signatures read the decoding accuracy of the noun's number against "
        "an untrained copy of the same network (and, for contrast, against the majority "
        "baseline). Context ablation scores the verbs: the targets are the verb positions, "
        "each read with a window of "
        f"{cfg.max_delay + 1} tokens; at distance k the tokens farther than k are swapped "
        "for those at the same offsets before another verb of the stream (real text, "
        "sentence structure kept, a different noun), and for contrast dropped.",
    ]


__all__ = ["DOMINANCE", "METHODS", "PlantedAblation", "PlantedConfig", "PlantedGradients",
           "PlantedResult", "PlantedSignatures", "description", "end_of_dominance",
           "end_of_strength", "findings", "first_delay_not_first", "first_delay_weak",
           "first_lag_at_baseline", "measure_ablation", "measure_gradients",
           "measure_signatures", "planted_corpus", "planted_direction", "planted_embeddings",
           "planted_ranks", "recovered_text", "run_planted"]
