"""The gradients result directory, written by the one result writer (``Result.save``).

result.json keys: kind ("gradients"), memlens_version, model, corpus, settings, summary
(headline numbers), table (one flat dict per (delay, class) row), series (plot declarations),
plots ([{file, title, caption}]), plus probe / performance.
gradients.npz: mean (S x H x E, overall), class_mean (C x S x H x E), counts (S),
class_counts (C x S), classes, singular_values (S x min(H,E), normalised), class_singular_values,
sum_sv_se / sum_sv_ci_low / sum_sv_ci_high (S), D, Z, mu, class_embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memlens.analyses.gradients.result import GradientResult


def write_result(result: GradientResult, out: str | Path, model_info: dict, corpus_info: dict,
                 extra_settings: dict | None = None, resamples: int = 200,
                 directions: dict[str, np.ndarray] | None = None,
                 overwrite: bool = False) -> Path:
    """Attach descriptions, settings and directions to ``result`` and save it to ``out``."""
    result.model_meta = {**result.model_meta, **model_info}
    result.corpus_meta = {**result.corpus_meta, **corpus_info}
    result.settings = {**result.settings, **(extra_settings or {}), "bootstrap": int(resamples)}
    result.directions = dict(directions or {})
    return result.save(out, overwrite=overwrite)
