"""Trust checks of memory signatures: saturated states, and a random-init control that
decodes better than the trained model (issue 22, point 3)."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from memlens.analyses.signatures import build_symbols, signature_from_states
from memlens.analyses.signatures.config import StudyConfig
from memlens.analyses.signatures.signature import state_saturation
from memlens.analyses.signatures.study import run_study
from memlens.analyses.signatures.table import control_better, signature_rows
from memlens.analyses.signatures.trust import lag_ranges, trust_flags, trust_messages
from memlens.cli import main
from memlens.core.errors import TrustWarning
from memlens.models import save_checkpoint
from memlens.models.states import IndexStates
from memlens.protocol import Site
from memlens.report.html import build_report
from memlens.results import load_result
from memlens.runtime.options import Bootstrap
from memlens.training import TrainConfig, train

TEXT = ("the cat sat on the mat and the dog sat on the log\n"
        "a bird flew over the house while the fish swam in the pond\n") * 40
FAST = {"decoder_options": {"max_epochs": 20}, "bootstrap": Bootstrap(100)}


# -- saturation ---------------------------------------------------------------------------------
def _known_states() -> np.ndarray:
    """100 x 4 states: unit 0 always |h| > 0.99, unit 1 at 60 rows, unit 2 at 30, unit 3
    never: 190 of 400 values saturated, 2 of 4 units more than half the time."""
    h = np.zeros((100, 4), np.float32)
    h[:, 0] = 0.995
    h[:60, 1], h[60:, 1] = -1.0, 0.5
    h[:30, 2] = 0.999
    h[:, 3] = 0.99  # exactly at the level: not saturated (|h| > 0.99)
    return h


@pytest.mark.parametrize("chunk", [65536, 7])
def test_saturation_known_answer(chunk):
    sat, units = state_saturation(_known_states(), chunk=chunk)
    assert sat == pytest.approx(190 / 400) and units == pytest.approx(2 / 4)


def test_saturation_not_applicable():
    unbounded = _known_states()
    unbounded[5, 3] = 1.7  # e.g. an LSTM cell state: |c| > 0.99 is no saturation
    assert state_saturation(unbounded) == (None, None)
    assert state_saturation(IndexStates(np.zeros((10, 2), np.int64), 8)) == (None, None)
    assert state_saturation(np.zeros((0, 3))) == (None, None)


def _lagged(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, n)


def test_saturated_signature_warns_and_records():
    tr, he = _lagged(1200, 0), _lagged(600, 1)
    sym = build_symbols("chars", "char", tr)

    def states(ids, scale):  # +-scale one-hot code of the current symbol
        return np.where(np.eye(4, dtype=np.float32)[ids] > 0, scale, -scale)

    with pytest.warns(TrustWarning, match=r"100% of the held-out state values are saturated"):
        sig = signature_from_states(states(tr, 1.0), sym.classes(tr), states(he, 1.0),
                                    sym.classes(he), 2, sym, **FAST)
    assert sig.saturation == 1.0 and sig.saturated_units == 1.0 and sig.saturated
    assert sig.summary()["saturation"] == 1.0
    assert {r["saturation"] for r in sig.rows()} == {1.0}
    assert list(sig.to_frame()["saturated_units"]) == [1.0] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrustWarning)
        healthy = signature_from_states(states(tr, 0.5), sym.classes(tr), states(he, 0.5),
                                        sym.classes(he), 2, sym, **FAST)
        quiet = signature_from_states(states(tr, 1.0), sym.classes(tr), states(he, 1.0),
                                      sym.classes(he), 2, sym, **FAST, warn=False)
    assert healthy.saturation == 0.0 and not healthy.saturated and quiet.saturated


# -- the control decodes better -------------------------------------------------------------------
def _sig(acc, low=None, high=None):
    acc = np.asarray(acc, float)
    low = acc - 0.02 if low is None else np.asarray(low, float)
    high = acc + 0.02 if high is None else np.asarray(high, float)
    z = np.zeros_like(acc)
    return SimpleNamespace(accuracy=acc, acc_low=low, acc_high=high, bits=z, bits_low=z,
                           bits_high=z, bits_fraction=z, cross_entropy=z, entropy=z,
                           majority=z, prior=z, temperature=None, decoder="linear",
                           n_train=1, n_heldout=1, saturation=None, saturated_units=None,
                           saturated=False)


def test_control_better_rule():
    model = _sig([0.99, 0.50, 0.53, 0.40, 0.35, 0.30, 0.30])
    ctrl = _sig([0.99, 0.80, 0.84, 0.70, 0.60, 0.40, 0.31])
    assert list(control_better(model, ctrl)) == [False, True, True, True, True, True, False]
    # overlapping intervals, or disjoint ones but a gap of no more than 0.05: not better
    assert not control_better(_sig([0.5, 0.5], [0.4, 0.49], [0.6, 0.51]),
                              _sig([0.55, 0.54], [0.45, 0.53], [0.65, 0.55])).any()
    # no intervals (--bootstrap 0): a margin of 0.05
    nan = [np.nan, np.nan]
    assert list(control_better(_sig([0.5, 0.5], nan, nan), _sig([0.56, 0.54], nan, nan))) \
        == [True, False]
    rows = signature_rows(model, "gru", "model", 0, "hidden", "all", ctrl)
    assert [r["control_better"] for r in rows][:3] == [False, True, True]
    assert signature_rows(model, "gru", "model", 0, "hidden", "all")[0]["control_better"] \
        is None
    assert lag_ranges([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7-8"


def test_trust_message_names_lags_and_accuracies():
    site = Site(0, "hidden", "all")
    model = _sig([0.99, 0.50, 0.53, 0.40, 0.35, 0.30, 0.30])
    ctrl = _sig([0.99, 0.80, 0.84, 0.70, 0.60, 0.40, 0.31])
    entries = [SimpleNamespace(label="gru", role="model", site=site, sig=model),
               SimpleNamespace(label="gru (random init)", role="control", site=site, sig=ctrl)]
    [msg] = trust_messages(entries, "stream")
    assert msg == ("the random-init control decodes better than the trained model at lags 1-5 "
                   "(lag 2: 0.84 vs 0.53): the model may be analysed outside its training "
                   "regime; try --context sentence or window:N")
    flags = trust_flags(entries)
    assert flags["flagged"] and flags["control_better_lags"] == [1, 2, 3, 4, 5]
    assert flags["control_better"][0]["worst"] == 2
    assert "\n" not in msg
    entries[1].sig = model  # the control equals the model: nothing to say
    assert trust_messages(entries) == [] and not trust_flags(entries)["flagged"]


# -- a study end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny char GRU trained on TEXT (10 epochs, about 2 s) and the same GRU with its
    embedding and weight matrices scaled x20 (its training destroyed: saturated states that
    decode worse than the random-init control)."""
    tmp = tmp_path_factory.mktemp("trust")
    text = tmp / "text.txt"
    text.write_text(TEXT)
    model = train(TrainConfig(train=str(text), valid=str(text), out=str(tmp / "healthy.pt"),
                              arch="gru", unit="char", emb=8, hidden=16, epochs=10, bptt=20,
                              batch=8, optimizer="adam", lr=0.01, dropout=0.0,
                              progress=False), log=lambda *_: None)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embedding" in name or "weight_" in name:
                p.mul_(20.0)
    save_checkpoint(tmp / "broken.pt", model)
    return {"text": str(text), "healthy": str(tmp / "healthy.pt"),
            "broken": str(tmp / "broken.pt")}


@pytest.fixture
def models(trained, tmp_path):
    return {**trained, "tmp": tmp_path}


def _args(models, which, out):
    return ["signatures", "--model", models[which], "--corpus", models["text"], "--max-delay",
            "3", "--train-tokens", "2000", "--heldout-tokens", "1000", "--bootstrap", "100",
            "--out", str(out)]


def test_broken_model_study_warns_and_saves_flags(models, capsys):
    cfg = StudyConfig(models["broken"], models["text"], str(models["tmp"] / "unused"),
                      max_delay=3, train_tokens=2000, heldout_tokens=1000, bootstrap=100)
    with pytest.warns(TrustWarning) as record:
        result = run_study(cfg, log=lambda _: None)
    messages = [str(w.message) for w in record if w.category is TrustWarning]
    assert len(messages) == 2
    assert messages[0].startswith("the random-init control decodes better than the trained "
                                  "model at lag")
    assert "try --context sentence or window:N" in messages[0]
    assert "held-out state values are saturated" in messages[1]
    trust = result.extras["trust"]
    assert trust["flagged"] and trust["control_better_lags"] and trust["saturated"]
    frame = result.to_frame()
    model_rows = frame[frame["role"] == "model"]
    assert model_rows["control_better"].any()
    assert (model_rows["saturation"] > 0.5).all()
    assert frame[frame["role"] == "control"]["control_better"].isna().all()

    out = models["tmp"] / "broken-sig"
    rc = main(_args(models, "broken", out))
    err = capsys.readouterr().err
    assert rc == 0
    lines = [ln for ln in err.splitlines() if ln.startswith("memlens: warning:")]
    assert len(lines) == 2 and "control decodes better" in lines[0]
    doc = json.loads((out / "result.json").read_text())
    assert doc["summary"]["trust"]["control_better_lags"] == trust["control_better_lags"]
    assert doc["trust_warning"]["warning"] is True
    sig_rows = doc["summary"]["signatures"]
    assert sig_rows[0]["control_better_lags"] == trust["control_better_lags"]
    assert sig_rows[0]["saturation"] > 0.5
    saved = load_result(out)
    assert saved.to_frame().equals(result.to_frame())
    html = build_report([out], models["tmp"] / "report.html").read_text()
    assert "Trust warning" in html and "section class='warning'" in html
    assert "control decodes better than the trained model" in html


def test_healthy_study_has_no_warning(models, capsys):
    out = models["tmp"] / "healthy-sig"
    rc = main(_args(models, "healthy", out))  # the CLI prints any TrustWarning on stderr
    assert rc == 0
    assert "memlens: warning" not in capsys.readouterr().err
    doc = json.loads((out / "result.json").read_text())
    trust = doc["summary"]["trust"]
    assert not trust["flagged"] and trust["control_better_lags"] == []
    assert "trust_warning" not in doc
    assert all(r["control_better"] is False for r in doc["table"] if r["role"] == "model")
    assert all(r["saturation"] is not None and r["saturation"] < 0.5 for r in doc["table"])
    html = build_report([out], models["tmp"] / "report.html").read_text()
    assert "Trust warning" not in html


def test_old_result_without_the_fields_still_loads(models, capsys):
    out = models["tmp"] / "old"
    assert main(_args(models, "healthy", out)) == 0
    capsys.readouterr()
    doc = json.loads((out / "result.json").read_text())
    for row in doc["table"]:
        for key in ("control_better", "saturation", "saturated_units"):
            row.pop(key)
    doc["summary"].pop("trust")
    (out / "result.json").write_text(json.dumps(doc))
    saved = load_result(out)
    assert "saturation" not in saved.to_frame().columns
    assert "Memory signature" in build_report([out], models["tmp"] / "r.html").read_text()
