"""The table of a memory signature: one flat row per lag, and the series it declares.

Plain data only: a row is built from any object with the per-lag arrays of a
:class:`~memlens.analyses.signatures.signature.Signature` (``accuracy``, ``acc_low``, ...,
each of length K+1), so the Result classes (:class:`Signature`, the study's
:class:`~memlens.analyses.signatures.result.StudyResult`, the planted study's signatures)
share it without importing each other.

Columns per lag k: model, role, layer, readout, units, lag, accuracy with its 95% interval
(ci_low, ci_high), bits with its interval, bits_fraction = bits / H(X), cross_entropy_bits,
temperature (the decoder's calibration temperature, or None), entropy_bits H(X), majority,
prior, control_accuracy / control_bits (the random-init control beside the model, else
None), control_better (True where the control decodes better than the model,
:func:`control_better`; None without a control), saturation and saturated_units (of the
signature's held-out states; None where not applicable), decoder, train_states,
heldout_states.

The control decodes better than the model at lag k when the difference is both clear and
large: its 95% bootstrap interval lies entirely above the model's (control ci_low[k] > model
ci_high[k]) and its accuracy exceeds the model's by more than ``CONTROL_MARGIN`` (0.05);
without intervals (``--bootstrap 0``) the margin alone decides.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MEMORY_SPAN_DEFINITION = "last lag with held-out accuracy above majority + 0.05 (-1: none)"
CONTROL_MARGIN = 0.05  # how much better (accuracy) the control must be to count
CONTROL_BETTER_DEFINITION = ("the random-init control's accuracy exceeds the model's by more "
                             f"than {CONTROL_MARGIN} and its 95% interval lies above the "
                             "model's (control ci_low > model ci_high; without intervals the "
                             "margin alone)")


def control_better(s: Any, control: Any) -> np.ndarray:
    """Per lag k (bool, length K+1): does ``control`` decode better than ``s``? True when
    control.accuracy[k] > s.accuracy[k] + ``CONTROL_MARGIN`` (a difference that matters) and
    control.acc_low[k] > s.acc_high[k] (disjoint 95% intervals, the control's above: not
    sampling noise); where either interval is missing (NaN), the margin alone. Lags past the
    shorter signature are False."""
    n = min(len(s.accuracy), len(control.accuracy))
    lo, hi = np.asarray(control.acc_low[:n], float), np.asarray(s.acc_high[:n], float)
    acc_c, acc_m = np.asarray(control.accuracy[:n], float), np.asarray(s.accuracy[:n], float)
    with np.errstate(invalid="ignore"):
        apart = np.isnan(lo) | np.isnan(hi) | (lo > hi)
    better = apart & (acc_c > acc_m + CONTROL_MARGIN)
    return np.concatenate([better, np.zeros(len(s.accuracy) - n, dtype=bool)])


def num(x: Any) -> float | None:
    """A float rounded to 6 decimals for the table (NaN -> None)."""
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def signature_rows(s: Any, label: str, role: str, layer: int | None, readout: str,
                   units: str, control: Any = None) -> list[dict]:
    """One flat row per lag k = 0..K of signature ``s`` (a control's accuracy and bits beside
    it when ``control`` is given); see the module docstring for the columns."""
    rows = []
    better = control_better(s, control) if control else None
    sat, sat_units = getattr(s, "saturation", None), getattr(s, "saturated_units", None)
    for k in range(len(s.accuracy)):
        rows.append({
            "model": label, "role": role, "layer": layer, "readout": readout, "units": units,
            "lag": k, "accuracy": num(s.accuracy[k]), "ci_low": num(s.acc_low[k]),
            "ci_high": num(s.acc_high[k]), "bits": num(s.bits[k]),
            "bits_ci_low": num(s.bits_low[k]), "bits_ci_high": num(s.bits_high[k]),
            "bits_fraction": num(s.bits_fraction[k]),
            "cross_entropy_bits": num(s.cross_entropy[k]),
            "temperature": None if s.temperature is None else num(s.temperature[k]),
            "entropy_bits": num(s.entropy[k]), "majority": num(s.majority[k]),
            "prior": num(s.prior[k]),
            "control_accuracy": num(control.accuracy[k]) if control else None,
            "control_bits": num(control.bits[k]) if control else None,
            "control_better": bool(better[k]) if better is not None else None,
            "saturation": None if sat is None else num(sat),
            "saturated_units": None if sat_units is None else num(sat_units),
            "decoder": s.decoder, "train_states": s.n_train, "heldout_states": s.n_heldout,
        })
    return rows


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

__all__ = ["CONTROL_BETTER_DEFINITION", "CONTROL_MARGIN", "MEMORY_SPAN_DEFINITION", "SERIES",
           "control_better", "num", "signature_rows"]
