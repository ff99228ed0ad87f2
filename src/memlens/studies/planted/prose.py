"""The planted study in sentences: the findings (what each view recovered, what each contrast
shows instead) and the description of what was planted and how each view reads it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from memlens.studies.planted.config import PlantedConfig
from memlens.studies.planted.rules import DOMINANCE


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


def _at(v: int | None, K: int) -> str:
    """Where a memory ends: "at 5", "only beyond 11", "never"."""
    return "never" if v is None else f"at {v}" if v <= K else f"only beyond {K}"


def _tokens(v: int | None, K: int) -> str:
    """An effective context: "5 tokens", "more than 11 tokens"."""
    return f"{v} tokens" if v is not None and v <= K else f"more than {K} tokens"


# -- findings ----------------------------------------------------------------------------------
def findings(cfg: PlantedConfig, recovered: Sequence[dict[str, Any]],
             curves: Sequence[dict[str, Any]] = ()) -> list[str]:
    """The findings as sentences: one per view for the length readings, one per contrast
    saying what it shows instead, and the references (``curves``: the per-delay rows, for
    the size of the effects quoted)."""
    by: dict[str, dict[str, int | None]] = {}
    for r in recovered:
        if r["role"] in ("trained", "contrast"):
            by.setdefault(r["method"], {})[r["model"]] = r["recovered"]
    return ([_overall_sentence(recovered, cfg.distance)] + _length_sentences(by, curves, cfg)
            + _contrast_sentences(by, curves, cfg) + _oracle_sentence(recovered))


def _overall_sentence(recovered: Sequence[dict[str, Any]], d: int) -> str:
    """How many of the trained models' length readings recover the planted distance."""
    trained = [r for r in recovered if r["role"] == "trained"]
    ok = [r for r in trained if r["match"]]
    if len(ok) == len(trained):
        return (f"All three views find the planted memory: every length reading recovers "
                f"the planted {d} steps within one step, for every trained model.")
    miss = sorted({f"{r['model']} ({r['method']})" for r in trained if not r["match"]})
    return (f"{len(ok)} of {len(trained)} length readings recover the planted {d} "
            f"steps within one step; these miss it: {'; '.join(miss)}.")


def _length_sentences(by: dict[str, dict[str, int | None]], curves: Sequence[dict[str, Any]],
                      cfg: PlantedConfig) -> list[str]:
    """One sentence per view on its length reading (``by``: method -> model -> recovered)."""
    d, K = cfg.distance, cfg.max_delay
    out = []
    m = by.get("state gradients: strength along the number direction", {})
    if m:
        out.append(f"State gradients: the state's reaction along the noun's number direction "
                   f"stays at half its peak or more while the verb is still to come and "
                   f"collapses once the verb has been read; the memory is over "
                   f"{_both(m, lambda v: _at(v, K))} (planted {d}).")
    m = by.get("memory signature vs random-init control", {})
    if m:
        out.append(f"Memory signatures: the trained networks decode the noun's number better "
                   f"than their untrained copies until the verb; the advantage ends "
                   f"{_both(m, lambda v: _at(v, K))} (planted {d}).")
    m = by.get("context ablation: swap the context beyond k", {})
    if m:
        out.append(f"Context ablation: swapping everything farther than k tokens before the "
                   f"verb for the same stretch before another verb costs "
                   f"{_swap_cost(curves, cfg)} bits at the verb while the noun is among the "
                   f"swapped tokens and almost nothing once it is kept; the effective context "
                   f"is {_both(m, lambda v: _tokens(v, K))} (planted {d}).")
    return out


def _contrast_sentences(by: dict[str, dict[str, int | None]],
                        curves: Sequence[dict[str, Any]], cfg: PlantedConfig) -> list[str]:
    """One sentence per contrast, saying what it shows instead of the memory length."""
    d, K = cfg.distance, cfg.max_delay
    out = []
    n = by.get("state gradients: number direction dominant, normalised space", {})
    if n:
        out.append(_normalisation_sentence(n, curves, cfg))
    m = by.get("memory signature vs majority baseline", {})
    if m:
        out.append(f"Against the majority baseline the signature runs on past the planted "
                   f"distance (it ends {_both(m, lambda v: _at(v, K))}; analysed up to lag "
                   f"{K}): from lag {d} "
                   f"on the verb, which "
                   f"repeats the number, is in view, and any network keeps it for a few "
                   f"steps; the untrained copy is the baseline that isolates what training "
                   f"added.")
    m = by.get("context ablation: drop the context beyond k", {})
    if m:
        out.append(f"Dropping the context instead of swapping it (reading only the last k "
                   f"tokens, from a zero state) overstates the context used "
                   f"({_both(m, lambda v: _tokens(v, K))}): the models were trained on an "
                   f"unbroken stream and need a few tokens to recover from a zero state.")
    return out


def _oracle_sentence(recovered: Sequence[dict[str, Any]]) -> list[str]:
    """The n-gram oracle's check (its window), when there is one."""
    for row in recovered:
        if row["role"] == "oracle":
            return [f"Oracle check: the {row['model']} reads the number back for "
                    f"{row['recovered']} lags, its window, as it must."]
    return []


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


# -- description -------------------------------------------------------------------------------
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


__all__ = ["description", "findings", "recovered_text"]
