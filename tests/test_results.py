"""The one result format: to_frame, plot, save + load_result round trip, short repr."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import memlens  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.results import Result, load_result  # noqa: E402
from memlens.runtime.options import Bootstrap, RunOptions  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return memlens.wrap(nn.Embedding(20, 8), nn.LSTM(8, 8),
                        vocab=[f"w{i}" for i in range(20)])


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, 20, 400)


def _round_trip(result: Result, tmp_path):
    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(result.rows()) > 0
    ax = result.plot()
    assert ax.lines and ax.get_xlabel()
    plt.close("all")
    _, ax2 = plt.subplots()
    assert result.plot(ax=ax2) is ax2
    plt.close("all")
    assert len(repr(result)) < 1000
    out = result.save(tmp_path / "res")
    back = load_result(out)
    assert back.kind == result.kind
    pd.testing.assert_frame_equal(back.to_frame(), frame, check_dtype=False)
    assert back.series() == result.series() and back.plots
    assert back.arrays()
    ax3 = back.plot()
    assert len(ax3.lines) == len(ax.lines)
    plt.close("all")
    return back


def test_gradients_result_format(model, ids, tmp_path):
    labels = ["even" if i % 2 == 0 else "odd" for i in ids]
    r = memlens.state_gradients(model, ids, 5, classes=labels,
                                options=RunOptions(bootstrap=Bootstrap(20)))
    back = _round_trip(r, tmp_path)
    assert set(back.to_frame()["class"]) == {"all", "even", "odd"}
    assert back.summary()["pairs_at_delay_0"] == 400
    assert np.allclose(back.arrays()["mean"], r.means(), atol=1e-6)


def test_signature_result_format(model, ids, tmp_path):
    sig = memlens.memory_signature(model, ids[:300], ids[300:], max_delay=3,
                                   decoder_options={"max_epochs": 3},
                                   options=RunOptions(bootstrap=Bootstrap(20)))
    back = _round_trip(sig, tmp_path)
    assert list(back.to_frame()["lag"]) == [0, 1, 2, 3]
    assert back.to_frame()["accuracy"].between(0, 1).all()
    assert set(back.arrays()["symbols"]) <= {f"w{i}" for i in range(20)}
    with pytest.raises(MemlensError, match="no series 'nope'"):
        sig.plot(series="nope")


def test_load_result_refuses_bad_directories(tmp_path):
    with pytest.raises(MemlensError, match="not found"):
        load_result(tmp_path / "missing")
    (tmp_path / "d").mkdir()
    with pytest.raises(MemlensError, match="no result.json"):
        load_result(tmp_path / "d")
    (tmp_path / "d" / "result.json").write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(MemlensError, match="malformed|nested"):
        load_result(tmp_path / "d")
    (tmp_path / "d" / "result.json").write_text('{"kind": "x", "series": [{"x": 1}]}')
    with pytest.raises(MemlensError, match="series needs"):
        load_result(tmp_path / "d")
