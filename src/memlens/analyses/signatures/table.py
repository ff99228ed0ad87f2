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
None), decoder, train_states, heldout_states.
"""

from __future__ import annotations

import math
from typing import Any

MEMORY_SPAN_DEFINITION = "last lag with held-out accuracy above majority + 0.05 (-1: none)"


def num(x: Any) -> float | None:
    """A float rounded to 6 decimals for the table (NaN -> None)."""
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def signature_rows(s: Any, label: str, role: str, layer: int | None, readout: str,
                   units: str, control: Any = None) -> list[dict]:
    """One flat row per lag k = 0..K of signature ``s`` (a control's accuracy and bits beside
    it when ``control`` is given); see the module docstring for the columns."""
    rows = []
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

__all__ = ["MEMORY_SPAN_DEFINITION", "SERIES", "num", "signature_rows"]
