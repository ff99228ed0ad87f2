"""The stability diagnostic of the state-gradient pass (issue 22): growth of the gradient norm
with delay (a finite-time Lyapunov estimate), the top-1% share per delay, memory growth; the
warning in the API, the result, result.json, to_frame, the report and the CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import memlens
from memlens.analyses.gradients import EngineSettings, stability
from memlens.analyses.gradients.engine import Task, accumulate
from memlens.cli import main
from memlens.core.errors import TrustWarning
from memlens.data import Vocab
from memlens.models import LanguageModel, save_checkpoint
from memlens.report import build_report
from memlens.results import load_result
from memlens.runtime.options import as_options

I, H, T, K = 3, 12, 600, 12


def elman(gain: float, seed: int = 0, hidden: int = H) -> torch.nn.RNN:
    """An Elman RNN whose recurrent weights are N(0, 1/H) times ``gain`` (gain > 1: chaotic)."""
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(I, hidden).double()
    with torch.no_grad():
        rnn.weight_hh_l0.normal_(0, 1 / math.sqrt(hidden)).mul_(gain)
    return rnn


def stream(n: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, I, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def run(model, x, **kw):
    engine, context = kw.pop("engine", None), kw.pop("context", None)
    return memlens.state_gradients(model, x, kw.pop("K", K), context=context,
                                   options=as_options(dtype="float64", bootstrap=0, **kw),
                                   engine=engine)


def quiet(model, x, **kw):
    """A run that must not issue a TrustWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrustWarning)
        return run(model, x, **kw)


@pytest.fixture(scope="module")
def unstable():
    with pytest.warns(TrustWarning, match="state gradients look unstable") as rec:
        res = run(memlens.wrap(None, elman(4.0)), stream())
    assert len([w for w in rec if issubclass(w.category, TrustWarning)]) == 1  # once
    return res


def test_large_gain_elman_warns_and_flags(unstable):
    st = unstable.stability
    assert st.lyapunov > 0.05
    assert "exploding" in st.flags and "dominated by few positions" in st.flags
    assert st.max_top1_share > stability.TOP1_LIMIT
    assert any("--context window:N" in a for a in st.advice)
    summary = unstable.summary()
    assert summary["lyapunov_per_step"] == st.lyapunov and "exploding" in summary[
        "stability_flags"]
    df = unstable.to_frame()
    overall = df[df["class"] == "all"].sort_values("delay")
    np.testing.assert_allclose(overall["mean_norm"].to_numpy(), st.mean_norm)
    np.testing.assert_allclose(overall["top1_share"].to_numpy(), st.top1_share)
    assert (df["stability_flags"].str.contains("exploding")).all()


def test_large_gain_lstm_warns():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, 16).double()
    with torch.no_grad():
        lstm.weight_hh_l0.mul_(10.0)
    with pytest.warns(TrustWarning, match="unstable"):
        res = run(memlens.wrap(None, lstm), stream(800), K=20)
    assert res.stability.lyapunov > 0 and "exploding" in res.stability.flags


def test_contracting_model_does_not_warn():
    res = quiet(memlens.wrap(None, elman(0.3)), stream())
    st = res.stability
    assert st.lyapunov < 0 and not st.flagged and st.flags == [] and st.advice == []
    assert st.memory_ratio < 1 and st.max_top1_share < 0.1
    assert res.summary()["stability_flags"] == "none"
    assert "stability_warning" not in res.extra() and "stability" in res.extra()


def test_saved_result_report_and_old_results(unstable, tmp_path):
    unstable.save(tmp_path / "bad")
    saved = load_result(tmp_path / "bad")
    assert "exploding" in saved.data["stability"]["flags"]
    assert saved.data["stability"]["lyapunov_per_step"] == pytest.approx(
        unstable.stability.lyapunov)
    assert "exploding" in saved.summary()["stability_flags"]
    assert saved.data["stability_warning"]["warning"] is True
    assert (saved.to_frame()["stability_flags"] == unstable.to_frame()["stability_flags"]).all()
    page = build_report([tmp_path / "bad"], tmp_path / "r.html").read_text()
    assert "<section class='warning'><h2>Warnings</h2>" in page
    assert "Warning: the state gradients look unstable" in page
    assert "section class='warning'><h3>" in page  # the box in the result's own section
    quiet(memlens.wrap(None, elman(0.3)), stream(200)).save(tmp_path / "good")
    page = build_report([tmp_path / "good"], tmp_path / "g.html").read_text()
    assert "class='warning'" not in page
    doc = json.loads((tmp_path / "bad" / "result.json").read_text())  # an older result
    for key in ("stability", "stability_warning"):
        doc.pop(key)
    for key in ("lyapunov_per_step", "memory_ratio_K_to_0", "top1_share_max",
                "stability_flags"):
        doc["summary"].pop(key)
    for row in doc["table"]:
        for key in ("mean_norm", "top1_share", "stability_flags"):
            row.pop(key)
    (tmp_path / "bad" / "result.json").write_text(json.dumps(doc))
    page = build_report([tmp_path / "bad"], tmp_path / "o.html").read_text()
    assert "class='warning'" not in page and "Gradients" in page


def jacobian_norms(rnn: torch.nn.RNN, x: torch.Tensor, K: int) -> list[np.ndarray]:
    """||d h_t / d x_{t-tau}||_F of every pair by autograd, one array per delay."""
    def states(X):
        h, out = torch.zeros(1, rnn.hidden_size, dtype=torch.float64), []
        for t in range(X.shape[0]):
            _, h = rnn(X[t:t + 1], h)
            out.append(h[0])
        return torch.stack(out)

    J = torch.autograd.functional.jacobian(states, x, vectorize=True)  # T x H x T x I
    n = x.shape[0]
    return [np.array([float(J[t, :, t - tau].norm()) for t in range(tau, n)])
            for tau in range(K + 1)]


def test_top1_share_against_autograd():
    rnn, x, k = elman(2.5, seed=3, hidden=4), stream(250, seed=4), 6
    res = run(memlens.wrap(None, rnn), x, K=k)
    st = res.stability
    ref = jacobian_norms(rnn, x, k)
    for tau, norms in enumerate(ref):
        top = np.sort(norms)[::-1][:math.ceil(0.01 * norms.size)]
        assert res.count(tau) == norms.size
        assert st.mean_norm[tau] == pytest.approx(norms.mean(), rel=1e-6)
        assert st.rms_norm[tau] == pytest.approx(np.sqrt((norms ** 2).mean()), rel=1e-6)
        assert st.top1_share[tau] == pytest.approx(top.sum() / norms.sum(), rel=1e-6)
    lam = np.polyfit(np.arange(1, k + 1), np.log([n.mean() for n in ref[1:]]), 1)[0]
    assert st.lyapunov == pytest.approx(lam, rel=1e-5)
    memory = res.spectrum(None).sum(1)
    assert st.memory_ratio == pytest.approx(memory[-1] / memory[0])


def test_known_answer_of_top_share():
    norms = np.zeros((300, 2), dtype=np.float32)
    norms[:, 0] = 1.0
    norms[:200, 1] = 1.0
    norms[7, 1] = norms[9, 1] = 50.0  # 2 = ceil(0.01 * 200) pairs carry 100 of 298
    share = stability.top_share(norms, np.array([300, 200]))
    assert share[0] == pytest.approx(3 / 300) and share[1] == pytest.approx(100 / 298)
    assert stability.lyapunov_estimate(np.array([9.0, 1.0, math.e, math.e ** 2])) \
        == pytest.approx(1.0)
    assert stability.lyapunov_estimate(np.array([1.0, 2.0])) is None  # K < 2


def test_resume_and_chunk_size_do_not_change_the_numbers(tmp_path):
    from memlens.runtime.progress import Interrupted

    model, x = memlens.wrap(None, elman(3.0)), stream(300)
    with pytest.warns(TrustWarning):
        straight = run(model, x)
    with pytest.warns(TrustWarning):
        small = run(model, x, engine=EngineSettings(chunk_size=7))
    ck = tmp_path / "p.pt"
    with pytest.raises(Interrupted):
        run(model, x, checkpoint=ck, stop_after=101, engine=EngineSettings(chunk_size=13))
    with pytest.warns(TrustWarning):
        resumed = run(model, x, checkpoint=ck, resume=True)
    for other in (small, resumed):
        assert np.array_equal(other.raw.norms, straight.raw.norms)
        a, b = other.stability.to_dict(), straight.stability.to_dict()
        assert a == b


def test_regimes_count_only_their_pairs():
    res = quiet(memlens.wrap(None, elman(0.3)), stream(200), context="window:20")
    assert np.array_equal((res.raw.norms > 0).sum(0), res.raw.counts)
    res = quiet(memlens.wrap(None, elman(0.3)), stream(200), context="segment:30")
    assert np.array_equal((res.raw.norms > 0).sum(0), res.raw.counts)


def test_shards_add_up_to_the_stream():
    """Per-shard norms (rows of other shards zero) sum to the single stream's: what the
    all-reduce of a process group does."""
    enc = memlens.wrap(None, elman(0.3))
    x = stream(200)
    task = Task(max_delay=K, layer=0, readout="hidden", dtype=torch.float64)
    single = accumulate(enc, x, task).norms
    parts = [accumulate(enc, x, Task(max_delay=K, layer=0, readout="hidden",
                                     dtype=torch.float64, shard=s, warmup=100)).norms
             for s in ((0, 90), (90, 200))]
    assert not ((parts[0] != 0) & (parts[1] != 0)).any()
    np.testing.assert_allclose(parts[0] + parts[1], single, rtol=1e-6)


def test_norms_not_kept_above_the_limit(monkeypatch):
    from memlens.analyses.gradients import engine

    monkeypatch.setattr(engine, "NORM_MEMORY_LIMIT", 0)
    res = quiet(memlens.wrap(None, elman(4.0)), stream(100))
    assert res.raw.norms is None and res.stability is None
    assert "stability_flags" not in res.summary() and "mean_norm" not in res.rows()[0]


def _lm_file(tmp_path, gain: float) -> None:
    words = [f"w{i}" for i in range(10)]
    vocab = Vocab(["<unk>", "<eos>", *words], [1, 1] + [5] * len(words))
    torch.manual_seed(0)
    model = LanguageModel({"arch": "rnn", "layers": 1, "emb": 4, "hidden": 16}, len(vocab))
    with torch.no_grad():
        w = model.encoder.layers[0].rnn.weight_hh_l0
        w.normal_(0, 1 / math.sqrt(16)).mul_(gain)
    model.vocab = vocab
    save_checkpoint(tmp_path / "m.pt", model)
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=12)) for _ in range(40)]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("gain,unstable", [(4.0, True), (0.3, False)])
def test_cli_warns_once(tmp_path, capsys, gain, unstable):
    _lm_file(tmp_path, gain)
    rc = main(["gradients", "--model", str(tmp_path / "m.pt"), "--corpus",
               str(tmp_path / "c.txt"), "--out", str(tmp_path / "out"), "--no-progress",
               "--bootstrap", "0", "--max-delay", "10", "--dtype", "float64"])
    assert rc == 0
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.startswith("memlens: warning: state gradients")]
    assert len(lines) == (1 if unstable else 0), err
    assert ("UNSTABLE" in out) == unstable and "stability: Lyapunov estimate" in out
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert ("exploding" in doc["stability"]["flags"]) == unstable
    if unstable:
        assert "--context window:N" in lines[0] and "float64" not in lines[0]
