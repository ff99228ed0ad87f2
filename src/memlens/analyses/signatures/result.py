"""The result of a signature study and its directory (written atomically: complete or absent).

OUT/result.json   {"kind": "signatures", "memlens_version", "model", "corpus", "settings",
                   "summary", "table", "plots": [{"file", "title", "caption"}]}
OUT/table.csv     the same table as CSV
OUT/recall.npz    per signature i: ``recall_i`` and ``support_i`` (K+1 x C), ``symbols``;
                  ``index`` lists "i: model | layer | readout | units"
OUT/result.json   also "trust_warning" (a warning box of the report) when a trust check fires
                  (:mod:`.trust`: the control decodes better than the model, saturated
                  states); the flags are in summary["trust"]
OUT/*.png         signature curves, recall heatmap, comparison plots; with ``--units groups``
                  or ``bases`` also groups.png / bases.png (one curve per part) and
                  group_divergence-*.png / basis_divergence-*.png (pairwise JS divergence)

This module holds the data (:class:`Entry`, :class:`StudyResult`) and what is derived from
it (table, summary, arrays, plots); it computes nothing (:mod:`.study` does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memlens.analyses.signatures import plots
from memlens.analyses.signatures.config import StudyConfig
from memlens.analyses.signatures.signature import Signature
from memlens.analyses.signatures.sites import SPLITS
from memlens.analyses.signatures.table import (
    MEMORY_SPAN_DEFINITION,
    SERIES,
    control_better,
    num,
    signature_rows,
)
from memlens.analyses.signatures.trust import trust_flags, trust_messages, trust_section
from memlens.protocol import Site
from memlens.runtime.result import Result


@dataclass
class Entry:
    """One signature of a study: which model (label, role) and which site."""

    label: str
    role: str       # "model", "control", "ngram" or "window-lm"
    site: Site
    sig: Signature

    @property
    def key(self) -> str:
        """What identifies the entry in a study (:func:`entry_key`)."""
        return entry_key(self.label, self.site)


def entry_key(label: str, site: Site) -> str:
    """``"label | layer | readout | units"``: a signature of a study (model label and site)."""
    return f"{label} | {site.layer} | {site.readout} | {site.units}"


# the site of the non-recurrent comparisons (n-gram window, window LM)
WINDOW_SITE = Site(-1, "window", "all")


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
        return table_rows(self)

    def series(self) -> list[dict]:
        return SERIES

    def settings_info(self) -> dict:
        return self.config.settings()

    def summary(self) -> dict:
        return {"signatures": summary_rows(self), **self.extras,
                "trust": trust_flags(self.entries),
                "memory_span_definition": MEMORY_SPAN_DEFINITION}

    def trust_messages(self) -> list[str]:
        """The trust warnings of the study, one line each (:mod:`.trust`)."""
        return trust_messages(self.entries, self.extras.get("context", "stream"))

    def extra(self) -> dict:
        section = trust_section(trust_flags(self.entries), self.trust_messages())
        return {"trust_warning": section} if section else {}

    def arrays(self) -> dict:
        return recall_arrays(self)

    def figures(self, out) -> list[dict]:
        return make_plots(self, out)


def _layer(e: Entry) -> int | None:
    return None if e.site.readout == "window" else e.site.layer


def table_rows(result: StudyResult) -> list[dict]:
    """One flat row per (signature, lag), with baselines and the control beside the model."""
    controls = {e.site: e.sig for e in result.entries if e.role == "control"}
    rows = []
    for e in result.entries:
        ctrl = controls.get(e.site) if e.role == "model" else None
        rows += signature_rows(e.sig, e.label, e.role, _layer(e), e.site.readout,
                               e.site.units, ctrl)
    return rows


def summary_rows(result: StudyResult) -> list[dict]:
    """Headline numbers per signature."""
    out = []
    controls = {e.site: e.sig for e in result.entries if e.role == "control"}
    for e in result.entries:
        s = e.sig
        ctrl = controls.get(e.site) if e.role == "model" else None
        better = None if ctrl is None else [int(k) for k in control_better(s, ctrl).nonzero()[0]]
        out.append({"model": e.label, "role": e.role, "layer": e.site.layer,
                    "readout": e.site.readout, "units": e.site.units,
                    "memory_span": s.memory_span(),
                    "accuracy_lag0": float(s.accuracy[0]),
                    "accuracy_lag1": float(s.accuracy[min(1, s.max_delay)]),
                    "bits_total": float(s.bits.sum()),
                    "entropy_bits": float(s.entropy[0]),
                    "majority": float(s.majority[0]),
                    "decoder_epochs": s.epochs, "saturation": num_or_none(s.saturation),
                    "saturated_units": num_or_none(s.saturated_units),
                    "control_better_lags": better})
    return out


def num_or_none(x: float | None) -> float | None:
    """:func:`~.table.num` of ``x``, None for None."""
    return None if x is None else num(x)


def recall_arrays(result: StudyResult) -> dict[str, np.ndarray]:
    """recall.npz: ``recall_i``/``support_i`` (K+1 x C) per signature i, ``symbols``, and
    ``index`` ("i: model | layer | readout | units")."""
    arrays: dict[str, np.ndarray] = {}
    index = []
    for i, e in enumerate(result.entries):
        arrays[f"recall_{i}"] = e.sig.recall
        arrays[f"support_{i}"] = e.sig.support
        index.append(f"{i}: {e.label} | {_layer(e)} | {e.site.readout} | {e.site.units}")
    if result.entries:
        arrays["symbols"] = np.array(result.entries[0].sig.symbols)
    arrays["index"] = np.array(index)
    return arrays


# -- plots --------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


SIGNATURE_CAPTION = (
    "Left: held-out accuracy of decoding the symbol k steps back from the state "
    "(higher = remembered), with 95% bootstrap bands; right: information in bits "
    "(prior entropy minus decoder cross-entropy). The trained model is compared with "
    "its untrained random-init copy and with non-recurrent window models; grey lines "
    "are the majority-class and prior-guess baselines that a memoryless state reaches.")
RECALL_CAPTION = (
    "Each cell is the fraction of held-out occurrences of a symbol (column, most "
    "frequent first) that the decoder recovers k steps later (row); bright columns "
    "reaching high rows are symbols kept in memory for long.")
LAYERS_CAPTION = ("Accuracy and bits per lag for each layer of the model: how memory of the "
                  "input changes with depth.")


def make_plots(result: StudyResult, out: Path) -> list[dict]:
    """Write the PNGs into ``out``; return their {"file", "title", "caption"} records."""
    made = []
    entries = result.entries
    models = [e for e in entries if e.role == "model"]
    others = [e for e in entries if e.role in ("ngram", "window-lm")]
    arch = str(result.model_meta.get("arch", "model")).upper()
    grouped = result.config.units in SPLITS
    for m in (models if not grouped else models[:1]):
        same = [e for e in entries if e.role == "control" and e.site == m.site]
        name = "signature.png" if m is models[0] else f"signature-{_slug(m.site.label)}.png"
        title = f"Memory signature: {arch} {m.site.label} vs controls"
        plots.signature_curves(out / name, [(e.label, e.role, e.sig)
                                            for e in [m, *same, *others]], title)
        made.append({"file": name, "title": title, "caption": SIGNATURE_CAPTION})
    if models:
        m = models[0]
        title = f"Which symbols {arch} {m.site.label} remembers, by lag"
        plots.recall_heatmap(out / "recall_heatmap.png", m.sig, title)
        made.append({"file": "recall_heatmap.png", "title": title, "caption": RECALL_CAPTION})
    made += _beyond_window_plot(result, out, models, arch)
    layers = sorted({e.site.layer for e in models})
    if len(layers) > 1 and not grouped:
        title = f"Memory signature per layer ({arch})"
        plots.signature_curves(out / "layers.png", [(f"layer {e.site.layer} {e.site.readout}",
                                                     "layer", e.sig) for e in models], title)
        made.append({"file": "layers.png", "title": title, "caption": LAYERS_CAPTION})
    if grouped:
        made += _split_plots(result, out, models, arch)
    return made


def _beyond_window_plot(result: StudyResult, out: Path, models: list[Entry], arch: str
                        ) -> list[dict]:
    """beyond_window.png: per symbol, the model's recall past the n-gram window minus the
    window's (and the numbers in ``extras["ngram"]``)."""
    ng = [e for e in result.entries if e.role == "ngram"]
    if not models or not ng:
        return []
    order = result.extras["ngram"]["order"]
    if order - 1 > models[0].sig.max_delay:
        return []
    diff = plots.beyond_window(out / "beyond_window.png", models[0].sig, ng[0].sig,
                               order - 1, arch, ng[0].label)
    result.extras["ngram"]["recall_beyond_window_difference"] = {
        s: num(d) for s, d in zip(models[0].sig.symbols, diff)}
    return [{"file": "beyond_window.png",
             "title": f"{arch} minus {ng[0].label}: memory beyond the window",
             "caption": (f"Per symbol, the mean recall over lags {order - 1} and beyond "
                         f"of the {arch} state minus that of the {order}-gram window "
                         "state (which holds nothing past lag "
                         f"{order - 2}); positive bars are symbols the recurrent model "
                         "keeps beyond the n-gram window.")}]


# per --units mode that splits a layer: (caption of the per-part curves, caption of the
# divergence heatmaps)
_SPLIT_CAPTIONS = {
    "groups": (
        ("Accuracy and bits per lag for the units of each group of the grouped LSTM; curves "
         "that differ show groups keeping different amounts of history."),
        ("Pairwise Jensen-Shannon divergence between the groups' lag x symbol recall "
         "profiles: 0 means the groups remember the same symbols for the same time, larger "
         "values mean the groups specialise.")),
    "bases": (
        ("Accuracy and bits per lag decoded from each basis j of the factorised recurrent "
         "kernel W_hh = B A alone, i.e. from the coefficient (A h)_j with which basis column "
         "b_j of B enters the gates (one number per step), beside the whole rank-r factor "
         "space A h; curves that differ show bases carrying different history."),
        ("Pairwise Jensen-Shannon divergence between the bases' lag x symbol recall "
         "profiles: 0 means two bases remember the same symbols for the same time, larger "
         "values mean the bases of the factorised kernel carry different history.")),
}


def _split_plots(result: StudyResult, out: Path, models: list[Entry], arch: str
                 ) -> list[dict]:
    """Per-part curves (groups.png / bases.png) and divergence heatmaps of a split layer."""
    mode = result.config.units
    part = SPLITS[mode][1]
    curves_caption, div_caption = _SPLIT_CAPTIONS[mode]
    many = len({e.site.layer for e in models}) > 1  # label curves by layer too
    title = f"Memory signature per {part} ({arch})"
    plots.signature_curves(out / f"{mode}.png", [
        (e.site.label if many else e.site.units, "model" if e.site.units == "factor" else part,
         e.sig) for e in models], title)
    made = [{"file": f"{mode}.png", "title": title, "caption": curves_caption}]
    for key, d in result.extras.get(f"{part}_divergence", {}).items():
        fname = f"{part}_divergence-{_slug(key)}.png"
        t = f"{part.capitalize()} specialisation ({key})"
        plots.divergence_matrix(out / fname, np.array(d["js_divergence"]), d[mode], t)
        made.append({"file": fname, "title": t, "caption": div_caption})
    return made


def write_result(result: StudyResult, out: str | Path, overwrite: bool = False) -> Path:
    """Write the complete result directory atomically (``result.save``); return its path."""
    return result.save(out, overwrite=overwrite)


__all__ = ["WINDOW_SITE", "Entry", "StudyResult", "entry_key", "make_plots", "recall_arrays",
           "summary_rows", "table_rows", "write_result"]
