"""What each reading of the planted memory is, and the rules that turn a curve into a
recovered length (expected vs found).

Every reading gives the first delay / lag / distance at which the memory is *over* (held
through d - 1 for planted distance d: the state that predicts the verb). :data:`METHODS`
declares each reading: its view, its role ("trained": a length reading of a trained model,
expected to recover the planted distance; "contrast": shown beside them because it does not
measure that length) and its definition. :func:`recovered_rows` applies them: one record per
reading with ``match`` = within one step of what was expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memlens.analyses.gradients import GradientResult
from memlens.studies.planted.config import NGRAM_ORDER, PlantedConfig

STRENGTH_FRACTION = 0.5
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


# -- the readings of a gradients result along the planted direction ---------------------------
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


# -- recovery rules: a curve -> the first delay / lag at which the memory is over -------------
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


# -- expected vs found -------------------------------------------------------------------------
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


__all__ = ["ABLATION_TOLERANCE_BITS", "DOMINANCE", "METHODS", "STRENGTH_FRACTION",
           "end_of_dominance", "end_of_strength", "first_delay_not_first", "first_delay_weak",
           "first_lag_at_baseline", "planted_ranks", "recovered_rows"]
