"""Issue 24 item 1: selectiveness of the spectrum, against a hand computation on a linear RNN
h_t = A h_{t-1} + B x_t, whose state gradient at delay tau is A^tau B at every position."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from memlens import state_gradients, wrap
from memlens.analyses.gradients import metrics
from memlens.core.errors import MemlensError
from memlens.models import StepLayer
from memlens.protocol import Site
from memlens.results import load_result
from memlens.runtime.options import as_options

V, E, H, K = 9, 3, 4, 3


def linear_model(A: np.ndarray, B: np.ndarray, W: np.ndarray):
    At, Bt = torch.tensor(A), torch.tensor(B)

    def step(x, state):
        return (state[0] @ At.T.to(x.dtype) + x @ Bt.T.to(x.dtype),)

    layer = StepLayer(step=step, init_state=lambda b, device, dtype: (
        torch.zeros(b, H, device=device, dtype=dtype),), input_size=E,
        readouts={"h": lambda s: s[0]})
    emb = nn.Embedding(V, E)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(W))
    return wrap(emb, [layer])


@pytest.fixture(scope="module")
def known():
    rng = np.random.default_rng(0)
    A = 0.5 * rng.normal(size=(H, H)) / np.sqrt(H)
    B = rng.normal(size=(H, E))
    W = rng.normal(size=(V, E)).astype(np.float32).astype(np.float64)  # the table is float32
    model = linear_model(A, B, W)
    ids = torch.randint(0, V, (120,), generator=torch.Generator().manual_seed(1))
    labels = ["x" if i < 4 else "y" for i in ids.tolist()]
    r = state_gradients(model, ids, K, site=Site(0, "h"), classes=labels,
                        options=as_options(dtype="float64", blocks=6, bootstrap=40))
    return A, B, W, r


def hand(sigma: np.ndarray) -> tuple[float, float, float]:
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum())), sigma[0] / sigma.sum(), sigma[:5].sum() / \
        sigma.sum()


def test_selectiveness_formulas():
    assert np.allclose(metrics.selectiveness(np.array([1.0, 0, 0])), [1, 1, 1])
    assert np.allclose(metrics.selectiveness(np.ones(4)), [4, 0.25, 1])
    s = np.array([4.0, 2, 1, 1, 0.5, 0.5, 0])
    assert np.allclose(metrics.selectiveness(s), hand(s))
    assert np.isnan(metrics.selectiveness(np.zeros(3))).all()
    assert metrics.selectiveness(np.ones((2, 5, 3))).shape == (2, 5, 3)


def test_selectiveness_against_the_known_jacobian(known):
    A, B, W, r = known
    D = np.linalg.cholesky(np.cov(W.T))
    for tau in range(K + 1):
        assert np.allclose(r.mean(tau), np.linalg.matrix_power(A, tau) @ B)
        sigma = np.linalg.svd(np.linalg.matrix_power(A, tau) @ B @ D, compute_uv=False)
        want = hand(sigma)
        for j, m in enumerate(metrics.SELECTIVENESS):
            assert r.selectiveness(tau, measure=m) == pytest.approx(want[j], rel=1e-9)
            assert r.selectiveness(measure=m)[tau] == pytest.approx(want[j], rel=1e-9)
        # every class has the same Jacobian here
        assert r.selectiveness(tau, "x") == pytest.approx(want[0], rel=1e-9)
    with pytest.raises(MemlensError, match="selectiveness measure"):
        r.selectiveness(0, measure="entropy")


def test_selectiveness_intervals_table_and_round_trip(known, tmp_path):
    _, _, _, r = known
    ci = r.selectiveness_interval()
    er = r.selectiveness()
    # a constant Jacobian: every resample gives the same spectrum
    assert np.allclose(ci["low"], er) and np.allclose(ci["high"], er)
    cci = r.selectiveness_interval("x")
    assert np.isfinite(cci["low"][r.raw.ci_delays]).all()
    frame = r.to_frame()
    row = frame[(frame["class"] == "all") & (frame["delay"] == 2)].iloc[0]
    assert row["eff_rank"] == pytest.approx(er[2]) and row["eff_rank_low"] <= row["eff_rank"] + 1e-9
    assert {"sv1_share", "sv5_share", "sv1_share_high"} <= set(frame.columns)
    s = r.summary()
    assert s["eff_rank_tau0"] == pytest.approx(er[0])
    r.save(tmp_path / "out")
    back = load_result(tmp_path / "out")
    pd.testing.assert_frame_equal(back.to_frame(), frame)
    assert back.summary()["eff_rank_tau0"] == pytest.approx(er[0])
    assert back.data["selectiveness"]["table"]
    assert any(p["file"] == "selectiveness.png" for p in back.plots)


def test_bootstrap_sum_unchanged_by_the_statistic():
    rng = np.random.default_rng(3)
    sums, counts = rng.normal(size=(6, 3, 4, 3)), rng.integers(1, 4, size=(6, 3))
    D = rng.normal(size=(3, 3))
    plain = metrics.block_bootstrap(sums, counts, D, 30, 0.95, 5)
    both = metrics.block_bootstrap(sums, counts, D, 30, 0.95, 5, stat=metrics.selectiveness)
    for k in ("se", "low", "high"):
        np.testing.assert_array_equal(plain[k], both[k])
    assert both["stat_low"].shape == (3, 3)
    assert np.all(both["stat_low"] <= both["stat_high"])


def test_report_renders_the_section(known, tmp_path):
    from memlens.report.html import build_report

    _, _, _, r = known
    r.save(tmp_path / "res")
    text = (build_report([tmp_path / "res"], tmp_path / "r.html")).read_text()
    assert "Selectiveness: how concentrated the memory is" in text
    assert "effective rank" in text
