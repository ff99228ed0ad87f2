"""Known-answer tests for the exponential vs power-law decay fit."""

import numpy as np
import pytest

from memlens.analyses.decay import fit_decay


def test_recovers_a_power_law():
    tau = np.arange(0, 51, dtype=float)
    fit = fit_decay(tau, 3.0 * np.clip(tau, 1, None) ** -0.7)
    assert fit["better"] == "power"
    assert fit["power"]["exponent"] == pytest.approx(0.7)
    assert fit["power"]["r2"] == pytest.approx(1.0)


def test_recovers_an_exponential():
    tau = np.arange(0, 51, dtype=float)
    fit = fit_decay(tau, 2.0 * np.exp(-tau / 6.0))
    assert fit["better"] == "exponential"
    assert fit["exponential"]["decay_length"] == pytest.approx(6.0)
    assert fit["points"] == 50
