"""The result directory: result.json, table.csv, gradients.npz and PNG plots.

result.json keys: kind ("gradients"), memlens_version, model {path, arch, layers, emb, hidden,
unit}, corpus {path, tokens, oov_rate}, settings, summary (headline numbers), table (one flat
dict per (delay, class) row), plots ([{file, title, caption}]), plus probe / performance.
gradients.npz: mean (S x H x E, overall), class_mean (C x S x H x E), counts (S),
class_counts (C x S), classes, singular_values (S x min(H,E), normalised), class_singular_values,
sum_sv_se / sum_sv_ci_low / sum_sv_ci_high (S), D, Z, mu, class_embeddings.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from memlens.gradients.plots import write_plots
from memlens.gradients.result import GradientResult, _num
from memlens.io import atomic_dir, write_json


def summary(result: GradientResult, boot: dict) -> dict:
    spec = result.spectrum(None)
    out = {"condition_number_Z": result.normalization.condition,
           "pairs_at_delay_0": result.count(0)}
    for tau in sorted({0, 1, 5, 10, result.max_delay}):
        if tau <= result.max_delay:
            out[f"sum_sv_tau{tau}"] = _num(spec[tau].sum())
            out[f"sum_sv_tau{tau}_se"] = _num(boot["se"][tau])
    if result.probe:
        out["probe_accuracy"] = result.probe["accuracy"]
    return out


def write_result(result: GradientResult, out: str | Path, model_info: dict, corpus_info: dict,
                 extra_settings: dict | None = None, n_boot: int = 200,
                 directions: dict[str, np.ndarray] | None = None) -> Path:
    """Write the complete result directory atomically (nothing is left on failure)."""
    from memlens import __version__

    boot = result.bootstrap(n_boot)
    table = result.table(n_boot, directions)
    C = len(result.class_names)
    with atomic_dir(out) as tmp:
        plots = write_plots(result, tmp, boot)
        doc = {"kind": "gradients", "memlens_version": __version__, "model": model_info,
               "corpus": corpus_info, "settings": {**result.settings, **(extra_settings or {})},
               "summary": summary(result, boot), "table": table, "plots": plots,
               "probe": result.probe, "performance": result.stats}
        write_json(tmp / "result.json", doc)
        keys = list(dict.fromkeys(k for row in table for k in row))
        with open(tmp / "table.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            for row in table:
                w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})
        arrays = {"mean": result.means().astype(np.float32),
                  "counts": result.raw.counts, "singular_values": result.spectrum(None),
                  "sum_sv_se": boot["se"], "sum_sv_ci_low": boot["low"],
                  "sum_sv_ci_high": boot["high"], "D": result.normalization.D,
                  "Z": result.normalization.Z, "mu": result.normalization.mu,
                  "classes": np.array(result.class_names, dtype=str)}
        if C:
            arrays["class_mean"] = np.stack([result.means(c) for c in range(C)]
                                            ).astype(np.float32)
            arrays["class_counts"] = result.raw.class_counts
            arrays["class_singular_values"] = np.stack([result.spectrum(c) for c in range(C)])
            arrays["class_embeddings"] = result.class_embeddings
        np.savez_compressed(tmp / "gradients.npz", **arrays)
    return Path(out)
