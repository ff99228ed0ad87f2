"""The result directory of ``memlens signatures`` (written atomically: complete or absent).

OUT/result.json   {"kind": "signatures", "memlens_version", "model", "corpus", "settings",
                   "summary", "table", "plots": [{"file", "title", "caption"}]}
OUT/table.csv     the same table as CSV
OUT/recall.npz    per signature i: ``recall_i`` and ``support_i`` (K+1 x C), ``symbols``;
                  ``index`` lists "i: model | layer | readout | units"
OUT/*.png         signature curves, recall heatmap, comparison plots
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from memlens.signatures import plots
from memlens.signatures.study import Entry, StudyResult


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def _layer(e: Entry):
    return None if e.view.readout == "window" else e.view.layer


def signature_rows(s, label: str, role: str, layer, readout: str, units: str,
                   control=None) -> list[dict]:
    """One flat row per lag of signature ``s`` (a control's accuracy and bits beside it)."""
    rows = []
    for k in range(s.max_lag + 1):
        rows.append({
            "model": label, "role": role, "layer": layer, "readout": readout, "units": units,
            "lag": k, "accuracy": _num(s.accuracy[k]), "ci_low": _num(s.acc_low[k]),
            "ci_high": _num(s.acc_high[k]), "bits": _num(s.bits[k]),
            "bits_ci_low": _num(s.bits_low[k]), "bits_ci_high": _num(s.bits_high[k]),
            "bits_fraction": _num(s.bits_fraction[k]),
            "cross_entropy_bits": _num(s.cross_entropy[k]),
            "temperature": None if s.temperature is None else _num(s.temperature[k]),
            "entropy_bits": _num(s.entropy[k]), "majority": _num(s.majority[k]),
            "prior": _num(s.prior[k]),
            "control_accuracy": _num(control.accuracy[k]) if control else None,
            "control_bits": _num(control.bits[k]) if control else None,
            "decoder": s.decoder, "train_states": s.n_train, "heldout_states": s.n_heldout,
        })
    return rows


def table_rows(result: StudyResult) -> list[dict]:
    """One flat row per (signature, lag), with baselines and the control beside the model."""
    controls = {(e.view.layer, e.view.readout, e.view.units): e.sig
                for e in result.entries if e.role == "control"}
    rows = []
    for e in result.entries:
        ctrl = controls.get((e.view.layer, e.view.readout, e.view.units)) \
            if e.role == "model" else None
        rows += signature_rows(e.sig, e.label, e.role, _layer(e), e.view.readout,
                               e.view.units, ctrl)
    return rows


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def make_plots(result: StudyResult, out: Path) -> list[dict]:
    """Write the PNGs into ``out``; return their {"file", "title", "caption"} records."""
    made = []
    entries = result.entries
    models = [e for e in entries if e.role == "model"]
    others = [e for e in entries if e.role in ("ngram", "window-lm")]
    arch = str(result.model_meta.get("arch", "model")).upper()
    grouped = result.config.units == "groups"
    for m in (models if not grouped else models[:1]):
        same = [e for e in entries if e.role == "control" and e.view == m.view]
        name = "signature.png" if m is models[0] else f"signature-{_slug(m.view.label)}.png"
        title = f"Memory signature: {arch} {m.view.label} vs controls"
        plots.signature_curves(out / name, [(e.label, e.role, e.sig)
                                            for e in [m, *same, *others]], title)
        made.append({"file": name, "title": title, "caption": (
            "Left: held-out accuracy of decoding the symbol k steps back from the state "
            "(higher = remembered), with 95% bootstrap bands; right: information in bits "
            "(prior entropy minus decoder cross-entropy). The trained model is compared with "
            "its untrained random-init copy and with non-recurrent window models; grey lines "
            "are the majority-class and prior-guess baselines that a memoryless state reaches."
        )})
    if models:
        m = models[0]
        title = f"Which symbols {arch} {m.view.label} remembers, by lag"
        plots.recall_heatmap(out / "recall_heatmap.png", m.sig, title)
        made.append({"file": "recall_heatmap.png", "title": title, "caption": (
            "Each cell is the fraction of held-out occurrences of a symbol (column, most "
            "frequent first) that the decoder recovers k steps later (row); bright columns "
            "reaching high rows are symbols kept in memory for long.")})
    ng = [e for e in entries if e.role == "ngram"]
    if models and ng:
        order = result.extras["ngram"]["order"]
        if order - 1 <= models[0].sig.max_lag:
            diff = plots.beyond_window(out / "beyond_window.png", models[0].sig, ng[0].sig,
                                       order - 1, arch, ng[0].label)
            result.extras["ngram"]["recall_beyond_window_difference"] = {
                s: _num(d) for s, d in zip(models[0].sig.symbols, diff)}
            made.append({"file": "beyond_window.png",
                         "title": f"{arch} minus {ng[0].label}: memory beyond the window",
                         "caption": (
                             f"Per symbol, the mean recall over lags {order - 1} and beyond "
                             f"of the {arch} state minus that of the {order}-gram window "
                             "state (which holds nothing past lag "
                             f"{order - 2}); positive bars are symbols the recurrent model "
                             "keeps beyond the n-gram window.")})
    layers = sorted({e.view.layer for e in models})
    if len(layers) > 1 and not grouped:
        title = f"Memory signature per layer ({arch})"
        plots.signature_curves(out / "layers.png", [(f"layer {e.view.layer} {e.view.readout}",
                                                     "layer", e.sig) for e in models], title)
        made.append({"file": "layers.png", "title": title, "caption": (
            "Accuracy and bits per lag for each layer of the model: how memory of the input "
            "changes with depth.")})
    if grouped:
        title = f"Memory signature per group ({arch})"
        plots.signature_curves(out / "groups.png", [(e.view.units, "group", e.sig)
                                                    for e in models], title)
        made.append({"file": "groups.png", "title": title, "caption": (
            "Accuracy and bits per lag for the units of each group of the grouped LSTM; "
            "curves that differ show groups keeping different amounts of history.")})
        for key, d in result.extras.get("group_divergence", {}).items():
            fname = f"group_divergence-{_slug(key)}.png"
            t = f"Group specialisation ({key})"
            plots.divergence_matrix(out / fname, np.array(d["js_divergence"]), d["groups"], t)
            made.append({"file": fname, "title": t, "caption": (
                "Pairwise Jensen-Shannon divergence between the groups' lag x symbol recall "
                "profiles: 0 means the groups remember the same symbols for the same time, "
                "larger values mean the groups specialise.")})
    return made


SERIES = [
    {"name": "accuracy", "title": "Decoding accuracy by lag", "x": "lag", "y": "accuracy",
     "group": ["model", "layer", "readout", "units"], "low": "ci_low", "high": "ci_high",
     "xlabel": "lag k", "ylabel": "held-out accuracy", "log_y": False,
     "caption": "How often a decoder reading the state recovers the symbol that many steps "
                "back; compare with the majority baseline (band: 95% block bootstrap)."},
    {"name": "bits", "title": "Information about the input k steps back", "x": "lag",
     "y": "bits", "group": ["model", "layer", "readout", "units"], "low": "bits_ci_low",
     "high": "bits_ci_high", "xlabel": "lag k", "ylabel": "bits (lower bound)",
     "log_y": False,
     "caption": "Prior entropy minus the decoder's held-out cross-entropy: a lower bound on "
                "the mutual information between the state and the symbol k steps back."},
]


def recall_arrays(result: StudyResult) -> dict[str, np.ndarray]:
    """recall.npz: ``recall_i``/``support_i`` (K+1 x C) per signature i, ``symbols``, and
    ``index`` ("i: model | layer | readout | units")."""
    arrays: dict[str, np.ndarray] = {}
    index = []
    for i, e in enumerate(result.entries):
        arrays[f"recall_{i}"] = e.sig.recall
        arrays[f"support_{i}"] = e.sig.support
        index.append(f"{i}: {e.label} | {_layer(e)} | {e.view.readout} | {e.view.units}")
    if result.entries:
        arrays["symbols"] = np.array(result.entries[0].sig.symbols)
    arrays["index"] = np.array(index)
    return arrays


def write_result(result: StudyResult, out: str | Path, version: str | None = None,
                 overwrite: bool = False) -> Path:
    """Write the complete result directory atomically (``result.save``); return its path."""
    return result.save(out, overwrite=overwrite)
