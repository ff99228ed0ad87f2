"""PNG plots of memory signatures (matplotlib, Agg backend).

The plots read per-lag arrays only: a "signature" here is anything with the arrays of
:class:`SignatureArrays` (a :class:`~memlens.analyses.signatures.signature.Signature` has
them), so this module imports nothing of the analysis.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from memlens.runtime.plotting import plain_text, pyplot

plt = pyplot()


class SignatureArrays(Protocol):
    """The arrays the plots read: per lag (K+1) accuracy with its interval, bits with its
    interval, the majority / prior baselines and the entropy H(X); recall and support
    (K+1 x C) and the C symbol names."""

    accuracy: np.ndarray
    acc_low: np.ndarray
    acc_high: np.ndarray
    bits: np.ndarray
    bits_low: np.ndarray
    bits_high: np.ndarray
    majority: np.ndarray
    prior: np.ndarray
    entropy: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    symbols: list[str]

STYLES = {"model": ("C0", "-"), "control": ("C3", "--"), "ngram": ("C2", "-."),
          "window-lm": ("C1", ":")}


def display(symbol: str) -> str:
    """Printable label for a symbol (space, end of line, special tokens)."""
    return {" ": "␣", "<eos>": "eos", "<unk>": "unk", "<other>": "other"}.get(symbol, symbol)


@plain_text
def signature_curves(path: Path, entries: Sequence[tuple[str, str, SignatureArrays]], title: str
                     ) -> None:
    """Accuracy and bits per lag for several (label, role, signature), with 95% bands,
    majority and prior baselines of the first entry."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (label, role, sig) in enumerate(entries):
        color, ls = STYLES.get(role, (f"C{i % 10}", "-"))  # parts (groups, bases): one colour each
        lags = np.arange(len(sig.accuracy))
        ax1.plot(lags, sig.accuracy, ls, color=color, label=label, marker=".")
        ax1.fill_between(lags, sig.acc_low, sig.acc_high, color=color, alpha=0.2)
        ax2.plot(lags, sig.bits, ls, color=color, label=label, marker=".")
        ax2.fill_between(lags, sig.bits_low, sig.bits_high, color=color, alpha=0.2)
    base = entries[0][2]
    lags = np.arange(len(base.accuracy))
    ax1.plot(lags, base.majority, color="grey", ls="--", lw=1, label="majority class")
    ax1.plot(lags, base.prior, color="grey", ls=":", lw=1, label="prior (unigram) guess")
    ax2.plot(lags, base.entropy, color="grey", ls="--", lw=1, label="H(X) (all information)")
    ax1.set(xlabel="lag k (symbols back)", ylabel="held-out accuracy of x[t-k] from s[t]",
            ylim=(0, 1.02))
    ax2.set(xlabel="lag k (symbols back)", ylabel="bits: H(X) - CE_k", ylim=(0, None))
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@plain_text
def recall_heatmap(path: Path, sig: SignatureArrays, title: str, top: int = 40) -> None:
    """Lag x symbol recall for the ``top`` most frequent held-out symbols."""
    support = sig.support[0]
    order = np.argsort(-support)[:top]
    order = order[support[order] > 0]
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(order) + 2), 4.5))
    im = ax.imshow(np.nan_to_num(sig.recall[:, order]), aspect="auto", origin="lower",
                   vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([display(sig.symbols[i]) for i in order], fontsize=7)
    ax.set(xlabel="symbol x[t-k] (most frequent first)", ylabel="lag k", title=title)
    fig.colorbar(im, ax=ax, label="recall")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@plain_text
def beyond_window(path: Path, model: SignatureArrays, window: SignatureArrays, first_lag: int,
                  label: str, window_label: str, top: int = 30) -> np.ndarray:
    """Per-symbol mean recall over lags >= first_lag: model minus window baseline (bars).

    Returns the difference for every symbol (NaN where unsupported)."""
    lags = slice(first_lag, None)
    with warnings.catch_warnings():  # symbols absent from the held-out text give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        diff = np.nanmean(model.recall[lags], axis=0) - np.nanmean(window.recall[lags], axis=0)
    support = model.support[0]
    order = np.argsort(-support)[:top]
    order = order[support[order] > 0]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(order) + 2), 3.5))
    ax.bar(range(len(order)), np.nan_to_num(diff[order]), color="C0")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([display(model.symbols[i]) for i in order], fontsize=7)
    ax.set(ylabel=f"recall difference, lags {first_lag}+",
           title=f"{label} minus {window_label}: symbols kept beyond the window")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return diff


@plain_text
def divergence_matrix(path: Path, matrix: np.ndarray, labels: Sequence[str], title: str
                      ) -> None:
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(labels), 0.8 + 0.6 * len(labels)))
    im = ax.imshow(matrix, vmin=0, cmap="magma")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] < matrix.max() / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="Jensen-Shannon divergence (bits)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
