"""PNG plots of a :class:`GradientResult` (matplotlib, Agg backend).

* ``memory_vs_delay_log.png`` / ``memory_vs_delay_linear.png``: sum of singular values of the
  normalised average gradient vs delay, one line per class (overall with its bootstrap band).
* ``spectra.png``: singular-value spectra of the overall average at chosen delays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memlens.runtime.plotting import plain_text, pyplot

plt = pyplot()

MAX_LINES = 20


def _curves(result, max_classes: int = MAX_LINES - 1) -> list[tuple[str, np.ndarray]]:
    curves = [("all", result.spectrum(None).sum(axis=1))]
    ranked = sorted(result.class_names, key=lambda c: -result.count(0, c))
    for cls in ranked[:max_classes]:
        if result.count(0, cls) > 0:
            curves.append((cls, result.spectrum(cls).sum(axis=1)))
    return curves


@plain_text
def plot_memory(result, path: Path, log: bool, boot: dict | None = None) -> None:
    """Sum of singular values vs delay (log-log axes from delay 1, or linear axes)."""
    delays = np.arange(result.max_delay + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=90)
    colors = plt.get_cmap("tab20")
    for k, (name, curve) in enumerate(_curves(result)):
        sel = delays >= (1 if log and result.max_delay >= 1 else 0)
        style = {"color": "black", "lw": 2.2} if name == "all" else {"color": colors(k % 20),
                                                                       "lw": 1.2}
        ax.plot(delays[sel], curve[sel], label=name, **style)
        if name == "all" and boot is not None and np.isfinite(boot["low"]).any():
            ax.fill_between(delays[sel], boot["low"][sel], boot["high"][sel], color="grey",
                            alpha=0.3, lw=0, label="95% block bootstrap")
    if log and result.max_delay >= 1:  # with delay 0 alone there is nothing to log-scale
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("delay tau (tokens)")
    ax.set_ylabel("sum of singular values of normalised avg. gradient")
    ax.set_title(f"State-gradient memory, layer {result.layer} {result.readout} "
                 f"({'log-log' if log else 'linear'})")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@plain_text
def plot_spectra(result, path: Path, delays: list[int]) -> None:
    """Singular-value spectra (log scale) of the overall normalised average at ``delays``."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=90)
    for tau in delays:
        sv = result.singular_values(tau)
        ax.plot(np.arange(1, sv.size + 1), sv, marker=".", label=f"tau = {tau}")
    ax.set_yscale("log")
    ax.set_xlabel("index of singular value")
    ax.set_ylabel("singular value")
    ax.set_title("Singular-value spectra of the normalised average gradient")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def spectrum_delays(max_delay: int) -> list[int]:
    return sorted({d for d in (0, 1, 2, 5, 10, 20, max_delay) if d <= max_delay})


def write_plots(result, out: Path, boot: dict | None) -> list[dict]:
    """Write all PNGs into ``out``; returns the ``plots`` entries of result.json."""
    plot_memory(result, out / "memory_vs_delay_log.png", True, boot)
    plot_memory(result, out / "memory_vs_delay_linear.png", False, boot)
    delays = spectrum_delays(result.max_delay)
    plot_spectra(result, out / "spectra.png", delays)
    what = "one line per word class (class of the input word at t - tau), black = all words"
    return [
        {"file": "memory_vs_delay_log.png",
         "title": "Memory vs delay (log-log)",
         "caption": "How strongly the state still reacts to an input word tau steps back: the "
                    "sum of singular values of the normalised average gradient, on log-log "
                    f"axes from delay 1; {what}; a straight line would be a power law, a "
                    "curve bending down an exponential decay. The grey band is a 95% block "
                    "bootstrap interval for all words."},
        {"file": "memory_vs_delay_linear.png",
         "title": "Memory vs delay (linear)",
         "caption": f"The same sums of singular values on linear axes including delay 0; {what}. "
                    "Higher means the class is remembered more strongly at that delay."},
        {"file": "spectra.png",
         "title": "Singular-value spectra",
         "caption": "All singular values of the normalised average gradient (all words) at "
                    f"delays {', '.join(map(str, delays))}, log scale: a steep spectrum means "
                    "the memory is concentrated in a few directions of embedding space."},
    ]
