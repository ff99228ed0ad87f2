"""The planted study's figures: per model its gradients, signatures and ablation plots, and
the study's own ``three_views.png`` (per model the three views against delay).

Each ``*_figures`` function draws into ``out`` and returns the figure records
(``file``, ``title``, ``caption``) that the result's ``figures`` method hands to the report;
the methods wrap them in :func:`memlens.runtime.plotting.plain_text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memlens.analyses.ablation.result import LN2
from memlens.runtime.plotting import pyplot
from memlens.runtime.result import Result
from memlens.studies.planted.rules import ABLATION_TOLERANCE_BITS, DOMINANCE, STRENGTH_FRACTION

# the figures read the planted results (studies/planted/results.py, which calls them) by
# duck typing, annotated with their base class, so that the two modules do not import each other

ABLATION_LABELS = {"swap": "swap in another verb's context", "drop": "drop (zero state)"}


def save_figure(fig, path: Path) -> None:
    """Lay out ``fig``, write it to ``path`` as PNG (90 dpi) and close it."""
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def planted_line(ax, distance: int) -> None:
    """The dotted vertical line at the planted distance."""
    ax.axvline(distance, color="k", ls=":", lw=1, label=f"planted distance {distance}")


# -- gradients ---------------------------------------------------------------------------------
def gradient_figures(res: Result, out: Path) -> list[dict[str, str]]:
    """``sum_sv.png`` (memory strength by delay) and ``planted_rank.png`` (rank, relative
    memory and strength of the number direction) of one model's gradients result."""
    _sum_sv_plot(res, out / "sum_sv.png")
    _planted_rank_plot(res, out / "planted_rank.png")
    arch = res.arch
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


def _sum_sv_plot(res: Result, path: Path) -> None:
    """Sum of singular values per delay, for all source words and per class (log scale)."""
    plt = pyplot()
    delays = np.arange(res.max_delay + 1)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for cls in [None, *res.class_names]:
        ax.plot(delays, np.nansum(res.spectrum(cls), axis=1), marker="o", ms=3,
                label="all words" if cls is None else f"source: {cls}")
    planted_line(ax, res.planted)
    ax.set(xlabel="delay tau (steps back)", ylabel="sum of singular values (normalised)",
           yscale="log", title=f"{res.arch}: memory strength by delay")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _planted_rank_plot(res: Result, path: Path) -> None:
    """Three panels per delay: rank of the number direction, its relative memory (both
    spaces) and the strength |Gn dn| against ``STRENGTH_FRACTION`` of its peak."""
    plt, ranks = pyplot(), res.ranks
    delays = np.arange(res.max_delay + 1)
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.8))
    for key, ls in (("normalised", "-"), ("unnormalised", "--")):
        a1.plot(delays, ranks[key], ls, marker="o", ms=4, label=key)
        a2.plot(delays, ranks[f"relmem_{key}"], ls, marker="o", ms=4, label=key)
    a3.plot(delays, ranks["strength"], marker="o", ms=4, color="C2")
    a3.axhline(STRENGTH_FRACTION * np.nanmax(ranks["strength"]), color="grey", lw=1,
               label=f"{STRENGTH_FRACTION:g} x peak")
    a3.set(ylabel="|Gn dn|", title="strength along the number direction")
    for ax in (a1, a2, a3):
        planted_line(ax, res.planted)
        ax.set_xlabel("delay tau (steps back from the noun)")
        ax.legend(fontsize=7)
    a1.set(ylabel="rank of the number direction", title="1 = strongest direction")
    a1.invert_yaxis()
    a1.yaxis.get_major_locator().set_params(integer=True)
    a2.axhline(DOMINANCE, color="grey", lw=1, label=f"{DOMINANCE:g} (dominant)")
    a2.legend(fontsize=7)
    a2.set(ylabel="|G d| / sigma_1", ylim=(0, 1.02),
           title="relative memory of the number direction")
    fig.suptitle(f"{res.arch}: where the planted number direction ranks", fontsize=10)
    save_figure(fig, path)


# -- signatures and ablation -------------------------------------------------------------------
def signature_figures(res: Result, out: Path) -> list[dict[str, str]]:
    """``signature.png``: accuracy by lag for the trained model, its untrained copy and the
    n-gram window, with bootstrap bands and the majority baseline."""
    plt, arch = pyplot(), res.arch
    lags = np.arange(res.trained.max_delay + 1)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for (name, s), ls in zip(res.labelled(), ("-", "--", "-.")):
        ax.plot(lags, s.accuracy, ls, marker="o", ms=3, label=name)
        ax.fill_between(lags, s.acc_low, s.acc_high, alpha=0.15)
    ax.plot(lags, res.trained.majority, color="grey", lw=1, label="majority baseline")
    planted_line(ax, res.planted)
    ax.set(xlabel="lag k (steps back)", ylabel="accuracy: number of the noun k back",
           ylim=(0, 1.02), title=f"{arch}: memory signature of noun number")
    ax.legend(fontsize=7)
    save_figure(fig, out / "signature.png")
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


def ablation_figures(res: Result, out: Path) -> list[dict[str, str]]:
    """``increase.png``: the loss increase at the verb (bits) by distance, per perturbation,
    with bootstrap bands and the tolerance."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    lo, hi = res.intervals()
    for i, p in enumerate(res.perturbations):
        line, = ax.plot(res.distances, res.increase[i] / LN2, marker="o", ms=3,
                        label=ABLATION_LABELS.get(p, p))
        ax.fill_between(res.distances, lo[i] / LN2, hi[i] / LN2, alpha=0.15,
                        color=line.get_color(), linewidth=0)
    ax.axhline(res.tolerance_bits, color="grey", lw=1,
               label=f"tolerance {res.tolerance_bits:g} bit")
    planted_line(ax, res.planted)
    ax.set(xlabel="distance k (tokens before the verb kept intact)",
           ylabel="loss increase at the verb (bits)",
           title=f"{res.arch}: context ablation at the verb")
    ax.legend(fontsize=7)
    save_figure(fig, out / "increase.png")
    return [{"file": "increase.png", "title": f"{res.arch}: context ablation at the verb",
             "caption": "How much worse the model predicts the verb (is/are) when the "
             "context farther than k tokens back is destroyed: swapped for the same "
             "stretch before another verb (real text, same sentence structure, unrelated "
             "noun) or dropped (the model reads only the last k tokens, from a zero "
             "state it never met in the middle of a stream in training). Where a curve "
             "stays below the grey line the model no longer needs the context beyond k; "
             "the dotted line is the planted distance."}]


# -- the study's own figure: three views per model ---------------------------------------------
THREE_VIEWS_CAPTION = (
    f"Left, state gradients of a noun's number: the state's reaction "
    f"along the number direction as a fraction of its peak (green; the memory is "
    f"over after the last delay at which it reaches {STRENGTH_FRACTION:g}) and "
    f"its relative memory, the number direction against the strongest direction "
    f"(blue; solid: normalised embedding space, dashed: raw space). Middle, "
    f"memory signature: how well a linear decoder reads the number of the noun "
    f"k steps back out of the state, for the trained model and its untrained "
    f"copy. Right, context ablation: how much worse the verb is predicted when "
    f"the context farther than k tokens back is swapped for another verb's "
    f"(orange, with 95% band) or dropped. Dotted black line: the planted "
    f"distance; thick line: what the reading of that panel recovered.")

# per panel of a row: the length reading it shows, its x label, the colour of its mark
_PANELS = (("state gradients: strength along the number direction",
            "delay tau (steps after the noun)", "C2"),
           ("memory signature vs random-init control", "lag k (steps back)", "C3"),
           ("context ablation: swap the context beyond k",
            "distance k (tokens before the verb kept)", "C1"))


def three_views_figures(res: Result, out: Path) -> list[dict[str, str]]:
    """``three_views.png``: per model (rows) the three views (columns) against delay, each
    marked with the planted distance and what its reading recovered."""
    plt, d = pyplot(), res.config.distance
    models = list(dict.fromkeys(r["model"] for r in res.curves))
    if not models:
        return []
    fig, axes = plt.subplots(len(models), 3, figsize=(13, 3.3 * len(models)), squeeze=False)
    rec = {(r["model"], r["method"]): r["recovered"] for r in res.recovered}
    for row, model in zip(axes, models):
        c = [r for r in res.curves if r["model"] == model]
        x = np.array([r["delay"] for r in c])
        a1, a2, a3 = row
        _gradient_panel(a1, x, c, model)
        _signature_panel(a2, x, c, model)
        _ablation_panel(a3, x, c, model)
        for ax, (method, xlabel, color) in zip(row, _PANELS):
            _finish_panel(ax, d, rec.get((model, method)), res.config.max_delay, xlabel, color)
    fig.suptitle(f"The planted memory ({d} steps) seen three ways", fontsize=11)
    save_figure(fig, out / "three_views.png")
    return [{"file": "three_views.png",
             "title": f"The three views of the planted memory ({d} steps), per model",
             "caption": THREE_VIEWS_CAPTION}]


def _column(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """``rows[i][key]`` as floats, NaN where it is missing or None."""
    return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)


def _gradient_panel(ax, x: np.ndarray, c: Sequence[dict[str, Any]], model: str) -> None:
    """Strength as a fraction of its peak and the relative memory in both spaces."""
    ax.plot(x, _column(c, "strength_of_peak"), "-o", ms=3, color="C2",
            label="strength |Gn dn| / peak")
    ax.plot(x, _column(c, "relmem_normalised"), "-s", ms=3, color="C0",
            label="relative memory, normalised")
    ax.plot(x, _column(c, "relmem_unnormalised"), "--", color="C0", alpha=0.6,
            label="relative memory, raw space")
    ax.axhline(STRENGTH_FRACTION, color="C2", lw=0.8, ls=":")
    ax.axhline(DOMINANCE, color="C0", lw=0.8, ls=":")
    ax.set(ylim=(0, 1.05), ylabel="fraction",
           title=f"{model}: state gradients (number direction)")


def _signature_panel(ax, x: np.ndarray, c: Sequence[dict[str, Any]], model: str) -> None:
    """Decoding accuracy: trained model, untrained copy, majority baseline."""
    ax.plot(x, _column(c, "accuracy"), "-o", ms=3, color="C3", label=f"trained {model}")
    ax.plot(x, _column(c, "control_accuracy"), "--", color="C7", label="untrained copy")
    ax.plot(x, _column(c, "majority"), color="grey", lw=0.8, label="majority baseline")
    ax.set(ylim=(0.3, 1.02), ylabel="accuracy",
           title=f"{model}: memory signature (noun's number)")


def _ablation_panel(ax, x: np.ndarray, c: Sequence[dict[str, Any]], model: str) -> None:
    """Loss increase at the verb (bits): swap with its band, drop, the tolerance."""
    swap, lo, hi = (_column(c, "ablation_swap_bits"), _column(c, "ablation_swap_low_bits"),
                    _column(c, "ablation_swap_high_bits"))
    ax.plot(x, swap, "-o", ms=3, color="C1", label="swap beyond k")
    ax.fill_between(x, lo, hi, color="C1", alpha=0.2, linewidth=0)
    ax.plot(x, _column(c, "ablation_drop_bits"), "--", color="C5", alpha=0.7,
            label="drop beyond k (zero state)")
    ax.axhline(ABLATION_TOLERANCE_BITS, color="grey", lw=0.8, ls=":",
               label=f"tolerance {ABLATION_TOLERANCE_BITS:g} bit")
    top = max(4.0, float(np.nanmax(swap)) + 0.3) if np.isfinite(swap).any() else 4.0
    ax.set(ylim=(-0.2, top), ylabel="loss increase at the verb (bits)",
           title=f"{model}: context ablation at the verb")
    ax.set_xlim(left=-0.5)


def _finish_panel(ax, distance: int, recovered: int | None, max_delay: int, xlabel: str,
                  color: str) -> None:
    """The planted line, the recovered value (when within the delays analysed), the x label,
    legend and grid."""
    planted_line(ax, distance)
    if recovered is not None and recovered <= max_delay:
        ax.axvline(recovered, color=color, lw=2, alpha=0.35, label=f"recovered {recovered}")
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


__all__ = ["ABLATION_LABELS", "ablation_figures", "gradient_figures", "planted_line",
           "save_figure", "signature_figures", "three_views_figures"]
