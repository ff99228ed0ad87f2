"""Is memory decay exponential or a power law? Two-parameter fits in log space."""

from __future__ import annotations

import numpy as np


def fit_decay(delays: np.ndarray, values: np.ndarray, start: int = 1) -> dict:
    """Least-squares fits in log space of an exponential and a power law, both two-parameter.

    exponential: log y = a - tau / lambda          (linear in tau)
    power law:   log y = a - b log tau             (linear in log tau)
    Returns the parameters, the residual sum of squares (log space) and R^2 of each, and which
    law fits better (lower RSS with the same number of parameters).
    """
    mask = (delays >= start) & (values > 0)
    tau, logy = delays[mask], np.log(values[mask])
    total = float(((logy - logy.mean()) ** 2).sum())
    out = {"delays": [int(tau.min()), int(tau.max())], "points": int(mask.sum())}
    for name, x in (("exponential", tau), ("power", np.log(tau))):
        design = np.stack([np.ones_like(x), x], axis=1)
        coef, *_ = np.linalg.lstsq(design, logy, rcond=None)
        rss = float(((design @ coef - logy) ** 2).sum())
        out[name] = {"intercept": float(coef[0]), "slope": float(coef[1]), "rss": rss,
                     "r2": 1.0 - rss / total if total > 0 else float("nan")}
    out["exponential"]["decay_length"] = (-1.0 / out["exponential"]["slope"]
                                          if out["exponential"]["slope"] < 0 else float("inf"))
    out["power"]["exponent"] = -out["power"]["slope"]
    out["better"] = "power" if out["power"]["rss"] < out["exponential"]["rss"] else "exponential"
    return out
