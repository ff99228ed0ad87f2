"""Issue 24 item 4: reading the directions: pole words and correlations, on a linear RNN whose
gradient has one known direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_selectiveness import E, H, K, V, linear_model

from memlens import state_gradients
from memlens.analyses.gradients import spectrum
from memlens.core.errors import MemlensError
from memlens.data import Vocab
from memlens.protocol import Site
from memlens.results import load_result
from memlens.runtime.options import as_options


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(2)
    W = rng.normal(size=(V, E)).astype(np.float32).astype(np.float64)  # the table is float32
    W[5, 0] = 12.0                      # word 5: far out along input dimension 0
    u = np.zeros(E)
    u[0] = 1.0
    B = np.outer(rng.normal(size=H), u)  # the state only sees x . u: rank one, along u
    A = 0.3 * np.eye(H)
    model = linear_model(A, B, W)
    words = ["<unk>", "<eos>"] + [f"w{i}" for i in range(2, V)]
    counts = [1, 2, 3, 4, 5, 1000, 6, 7, 8]
    model.set_vocab(Vocab(words, counts))
    ids = torch.randint(0, V, (90,), generator=torch.Generator().manual_seed(3))
    labels = ["big" if i == 5 else "other" for i in ids.tolist()]
    r = state_gradients(model, ids, K, site=Site(0, "h"), classes=labels,
                        options=as_options(dtype="float64", blocks=5, bootstrap=10))
    return W, u, r


def test_poles_follow_the_planted_direction(planted):
    W, u, r = planted
    out = r.read_directions(0, k=1, words=3)
    d = out[0]
    assert d["direction"] == 1 and d["sigma_share"] == pytest.approx(1.0)
    assert d["positive"][0][0] == "w5" and d["positive"][0][2] == 1000
    # the projection on v_1 is proportional to (x_w - mu) . u (xn . D^T u, D Z = I)
    xs = (W - W.mean(0)) @ u
    order = [f"w{i}" if i > 1 else ["<unk>", "<eos>"][i] for i in np.argsort(xs)]
    assert [w for w, _, _ in d["negative"]] == order[:3]
    proj = np.array([p for _, p, _ in d["positive"]])
    want = np.sort(xs)[::-1][:3]
    assert np.allclose(proj / proj[0], want / want[0])
    # word 5 is both the most frequent word and the class "big"
    logf = np.log1p([1, 2, 3, 4, 5, 1000, 6, 7, 8])
    seen = np.bincount(r.words.seen.nonzero()[0], minlength=V) > 0
    assert d["corr_log_freq"] == pytest.approx(np.corrcoef(xs, logf)[0, 1])
    ind = (np.arange(V) == 5)[seen].astype(float)
    assert d["corr_class"]["big"] == pytest.approx(np.corrcoef(xs[seen], ind)[0, 1])
    assert d["freq_source"] == "vocabulary"


def test_directions_frame_summary_round_trip_and_report(planted, tmp_path):
    from memlens.report.html import build_report

    _, _, r = planted
    frame = r.directions_frame()
    assert len(frame) == (K + 1) * 3
    assert frame.iloc[0]["positive"].split()[0] == "w5"
    assert {"corr_log_freq", "corr_big", "corr_other"} <= set(frame.columns)
    s = r.summary()
    assert s["v1_tau0_positive"].split()[0] == "w5" and "v1_tau3_negative" in s
    r.save(tmp_path / "res")
    back = load_result(tmp_path / "res")
    pd.testing.assert_frame_equal(spectrum.saved_frame(back), frame)
    assert (tmp_path / "res" / "directions.csv").is_file()
    text = build_report([tmp_path / "res"], tmp_path / "r.html").read_text()
    assert "Reading the directions" in text and "w5" in text


def test_bad_requests(planted):
    _, _, r = planted
    with pytest.raises(MemlensError, match="delay"):
        r.read_directions(K + 1)
    with pytest.raises(MemlensError, match="k must"):
        r.read_directions(0, k=0)
    from memlens import wrap
    from memlens.models import StepLayer

    layer = StepLayer(step=lambda x, s: (0.5 * s[0] + x,), init_state=lambda b, device, dtype:
                      (torch.zeros(b, E, device=device, dtype=dtype),), input_size=E,
                      readouts={"h": lambda s: s[0]})
    cont = state_gradients(wrap(None, [layer]), torch.randn(30, E), 1,
                           options=as_options(bootstrap=0))
    assert cont.words is None
    with pytest.raises(MemlensError, match="token inputs"):
        cont.read_directions(0)


def test_projection_fallback_for_a_large_table(planted, monkeypatch):
    W, _, r = planted
    monkeypatch.setattr(spectrum, "TABLE_LIMIT", 0)
    wt = spectrum.word_table(r, None, W, np.arange(V), np.arange(V), None)
    assert wt.normalized is None and wt.projections.shape == (K + 1, 3, V)
    saved = r.words
    try:
        r.words = wt
        d = r.read_directions(0, k=1, words=2)[0]
        assert d["positive"][0][0] == "5"  # no vocabulary: ids as words
        with pytest.raises(MemlensError, match="only the top 3"):
            r.read_directions(0, k=4)
    finally:
        r.words = saved
