"""Memory signatures: oracles (delay line, n-gram window, constant state), decoders, units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import memlens
from memlens.analyses.signatures import (
    FastLinearDecoder,
    JointDecoder,
    build_symbols,
    group_divergence,
    js_divergence,
    lag_targets,
    make_decoder,
    signature_from_states,
)
from memlens.analyses.signatures.decoders import (
    TEMPERATURES,
    _GroupScaleLoss,
    calibrated_cross_entropy,
)
from memlens.core.errors import MemlensError
from memlens.data import Vocab
from memlens.models import LanguageModel
from memlens.models.ngram import KneserNeyLM, window_states
from memlens.models.states import IndexStates, View, allocate, extract_states
from memlens.models.window_lm import WindowLM
from memlens.protocol import Site
from memlens.runtime.options import Bootstrap, RunOptions

# few decoder epochs, 200 resamples: memory_signature's and signature_from_states' spellings
FAST = {"decoder_options": {"max_epochs": 20}, "options": RunOptions(bootstrap=Bootstrap(200))}
FAST_STATES = {"decoder_options": {"max_epochs": 20}, "bootstrap": Bootstrap(200)}
B200 = RunOptions(bootstrap=Bootstrap(200))


def delay_line(v: int, m: int) -> memlens.RecurrentEncoder:
    """ReLU RNN whose state is m slots of one-hots: slot 0 = x_t, slot j = x_{t-j}."""
    rnn = nn.RNN(v, m * v, nonlinearity="relu")
    with torch.no_grad():
        for p in rnn.parameters():
            p.zero_()
        rnn.weight_ih_l0[:v, :v] = torch.eye(v)
        for j in range(m - 1):
            rnn.weight_hh_l0[(j + 1) * v:(j + 2) * v, j * v:(j + 1) * v] = torch.eye(v)
    emb = nn.Embedding(v, v)
    emb.weight.data = torch.eye(v)
    return memlens.wrap(emb, rnn)


def iid(n: int, v: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, v, n)


def test_delay_line_oracle():
    v, m = 4, 3
    sig = memlens.memory_signature(delay_line(v, m), iid(3000, v, 0), iid(1500, v, 1),
                                   max_delay=6, **FAST)
    assert sig.accuracy.shape == (7,) and sig.bits.shape == (7,) and sig.majority.shape == (7,)
    assert (sig.accuracy[:m] > 0.99).all()
    assert (sig.accuracy[m:] <= sig.majority[m:] + 0.05).all()
    assert (sig.bits[:m] > 1.5).all() and (sig.bits[m:] < 0.05).all()
    assert sig.memory_span() == m - 1
    assert (sig.acc_low <= sig.accuracy + 1e-9).all() and (sig.accuracy <= sig.acc_high + 1e-9
                                                            ).all()


def test_ngram_window_oracle_steps_at_n_minus_1():
    v, n = 5, 4
    tr, he = iid(3000, v, 2), iid(1500, v, 3)
    sym = build_symbols("chars", "char", tr)
    sig = signature_from_states(window_states(tr, n, v), sym.classes(tr),
                                window_states(he, n, v), sym.classes(he), 6, sym,
                                **FAST_STATES)
    assert (sig.accuracy[:n - 1] > 0.99).all()
    assert (sig.accuracy[n - 1:] <= sig.majority[n - 1:] + 0.05).all()


def test_constant_state_learns_nothing():
    rng = np.random.default_rng(4)
    p = [0.5, 0.2, 0.2, 0.1]
    tr, he = rng.choice(4, 2000, p=p), rng.choice(4, 1000, p=p)
    sym = build_symbols("chars", "char", tr)
    x_tr, x_he = np.ones((2000, 8), np.float32), np.ones((1000, 8), np.float32)
    sig = signature_from_states(x_tr, sym.classes(tr), x_he, sym.classes(he), 3, sym,
                                **FAST_STATES)
    np.testing.assert_allclose(sig.accuracy, sig.majority, atol=0.01)
    assert (sig.bits < 0.03).all()  # H(train prior) - CE(held-out) is only sampling noise


def _noisy_lagged_states(v: int = 4, k_max: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """States (4000 x 12) that linearly mix one-hots of the last k_max + 1 symbols with noise,
    and their lag targets: a case where per-lag logistic regression is the optimum."""
    ids = iid(4000, v, 5)
    y = lag_targets(ids, k_max)
    rng = np.random.default_rng(6)
    onehots = np.concatenate([np.eye(v + 1)[np.where(y[:, k] >= 0, y[:, k], v)]
                              for k in range(k_max + 1)], 1)
    x = (onehots @ rng.standard_normal((onehots.shape[1], 12))
         + 1.5 * rng.standard_normal((len(ids), 12))).astype(np.float32)
    return x, y


def test_joint_decoder_agrees_with_per_lag_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    v, k_max, x, y = 4, 3, *_noisy_lagged_states()
    tr, he = slice(0, 3000), slice(3000, None)
    dec = JointDecoder(max_epochs=30).fit(x[tr], y[tr], v)
    pred, _ = dec.evaluate(x[he], y[he])
    mu, sd = x[tr].mean(0), x[tr].std(0)
    for k in range(k_max + 1):
        m_tr, m_he = y[tr, k] >= 0, y[he, k] >= 0
        clf = LogisticRegression(max_iter=1000).fit(((x[tr] - mu) / sd)[m_tr], y[tr][m_tr, k])
        acc_sk = (clf.predict(((x[he] - mu) / sd)[m_he]) == y[he][m_he, k]).mean()
        acc_joint = (pred[m_he, k] == y[he][m_he, k]).mean()
        assert abs(acc_joint - acc_sk) < 0.02, (k, acc_joint, acc_sk)


def test_mlp_decoder_and_index_states():
    v, n = 3, 3
    tr, he = iid(1500, v, 7), iid(600, v, 8)
    sym = build_symbols("chars", "char", tr)
    sig = signature_from_states(window_states(tr, n, v), sym.classes(tr),
                                window_states(he, n, v), sym.classes(he), 3, sym,
                                decoder="mlp", **FAST_STATES)
    assert (sig.accuracy[:2] > 0.99).all() and sig.accuracy[3] < sig.majority[3] + 0.05
    assert isinstance(window_states(tr, n, v), IndexStates)
    fast = FastLinearDecoder().fit(window_states(tr, n, v), lag_targets(sym.classes(tr), 2), v)
    assert fast.early_stopping == "ce" and fast.lr == JointDecoder.lr  # the joint schedule


def _model(arch: str, **cfg) -> LanguageModel:
    torch.manual_seed(0)
    vocab = Vocab.build(list("abcdefgh abcdefgh hgfedcba"))
    model = LanguageModel({"arch": arch, "emb": 8, "hidden": 8, "unit": "char", **cfg},
                          len(vocab))
    model.vocab = vocab
    return model.eval()


def _text(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return list(rng.choice(list("abcdefgh "), n))


def test_groups_of_a_grouped_lstm_and_divergence():
    model = _model("glstm", groups=2)
    sigs = [memlens.memory_signature(model, _text(800, 0), _text(400, 1), max_delay=3,
                                     site=Site(-1, "cell", f"group:{g}"), **FAST)
            for g in range(2)]
    for s in sigs:
        assert s.accuracy.shape == (4,) and s.info["units"].startswith("group:")
    div = group_divergence([s.recall for s in sigs])
    assert div.shape == (2, 2) and div[0, 0] == 0 and 0 <= div[0, 1] <= 1
    assert js_divergence(np.ones(4), np.ones(4)) == pytest.approx(0.0)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    with pytest.raises(MemlensError, match="group 2 out of range"):
        memlens.memory_signature(model, _text(100, 0), _text(50, 1), 2, Site(units="group:2"))


def test_factor_space_of_a_factorised_lstm():
    model = _model("flstm", rank=3)
    view = View(0, "hidden", "factor")
    states = extract_states(model.encoder, model.vocab.encode(_text(50, 2)), [view])[view]
    assert states.shape == (50, 3)
    full = extract_states(model.encoder, model.vocab.encode(_text(50, 2)), [View(0)])[View(0)]
    lay = model.encoder.layers[0]
    np.testing.assert_allclose(states, lay.factor_space(torch.from_numpy(full)).detach()
                               .numpy(), atol=1e-5)
    sig = memlens.memory_signature(model, _text(600, 0), _text(300, 1), 2,
                                   Site(units="factor"), **FAST)
    assert sig.accuracy.shape == (3,)
    with pytest.raises(MemlensError, match="not a factorised LSTM"):
        memlens.memory_signature(_model("lstm"), _text(100, 0), _text(50, 1), 2,
                                 Site(units="factor"))


def factorised_delay_line(v: int = 4) -> LanguageModel:
    """F-LSTM (H = r = 3, W_hh = B A) whose bases hold known history. Gates i, o open and f
    shut make each unit h = tanh(tanh(g)). Unit 0 gets g = emb(x_t), a distinct scalar per
    symbol; A picks unit 0 for basis 0, unit 1 for basis 1 and unit 0 again for basis 2; B
    feeds basis 0's coefficient into g of unit 1. So (A h_t)_0 = (A h_t)_2 codes x_t and
    (A h_t)_1 codes x_{t-1}: a two-slot delay line across the bases."""
    model = LanguageModel({"arch": "flstm", "emb": 1, "hidden": 3, "rank": 3, "unit": "char"}, v)
    lay, h = model.encoder.layers[0], 3
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.encoder.embedding.weight[:, 0] = torch.linspace(-0.6, 0.6, v)
        lay.input_proj.bias[:h] = 10            # input gate open
        lay.input_proj.bias[h:2 * h] = -10      # forget gate shut
        lay.input_proj.bias[3 * h:] = 10        # output gate open
        lay.input_proj.weight[2 * h, 0] = 1.0   # g of unit 0 <- x_t
        lay.factor_in.weight[0, 0] = lay.factor_in.weight[2, 0] = 1.0
        lay.factor_in.weight[1, 1] = 1.0
        lay.factor_out.weight[2 * h + 1, 0] = 2.0  # g of unit 1 <- basis 0 coefficient
    return model.eval()


def test_bases_of_a_factorised_lstm_known_answer():
    model = factorised_delay_line()
    rng = np.random.default_rng(0)
    tr, he = rng.integers(0, 4, 2000), rng.integers(0, 4, 1000)
    views = [View(0, "hidden", f"basis:{j}") for j in range(3)]
    states = extract_states(model.encoder, he[:50], [View(0, "hidden", "factor"), *views])
    for j, v in enumerate(views):  # basis j = column j of the factor space A h
        assert states[v].shape == (50, 1)
        np.testing.assert_array_equal(states[v][:, 0], states[View(0, "hidden", "factor")][:, j])
    sigs = [memlens.memory_signature(model, tr, he, 3, Site(units=f"basis:{j}"), options=B200)
            for j in range(3)]
    b0, b1, b2 = sigs
    assert b0.info["units"] == "basis:0" and b0.accuracy.shape == (4,)
    assert b0.accuracy[0] > 0.95 and b0.accuracy[1] < b0.majority[1] + 0.05
    assert b1.accuracy[1] > 0.7 and b1.accuracy[0] < b1.majority[0] + 0.05
    assert (b0.memory_span(), b1.memory_span(), b2.memory_span()) == (0, 1, 0)
    div = group_divergence([s.recall for s in sigs])
    assert div.shape == (3, 3) and div[0, 1] > 0.1 and div[0, 1] > 10 * div[0, 2] + 0.05
    whole = memlens.memory_signature(model, tr, he, 3, Site(units="factor"), options=B200)
    assert whole.accuracy[0] > 0.95 and whole.accuracy[1] > 0.7 and whole.memory_span() == 1
    with pytest.raises(MemlensError, match="basis 3 out of range"):
        memlens.memory_signature(model, tr, he, 2, Site(units="basis:3"))
    with pytest.raises(MemlensError, match="expected basis:J"):
        memlens.memory_signature(model, tr, he, 2, Site(units="basis:x"))
    with pytest.raises(MemlensError, match="hidden readout only"):
        memlens.memory_signature(model, tr, he, 2, Site(-1, "cell", "basis:0"))
    with pytest.raises(MemlensError, match="not a factorised LSTM"):
        memlens.memory_signature(_model("lstm"), _text(100, 0), _text(50, 1), 2,
                                 Site(units="basis:0"))


def test_explicit_units_and_streaming_with_memmap():
    model = _model("lstm")
    ids = model.vocab.encode(_text(300, 3))
    ram = extract_states(model.encoder, ids, [View(0, "cell", "0,2-4")], chunk=64)
    mm = extract_states(model.encoder, ids, [View(0, "cell", "0,2-4")], chunk=1000,
                        memmap_bytes=0)
    a, b = ram[View(0, "cell", "0,2-4")], mm[View(0, "cell", "0,2-4")]
    assert isinstance(b, np.memmap) and a.shape == (300, 4)
    np.testing.assert_allclose(a, b, atol=1e-5)  # chunked streaming carries the state
    assert isinstance(allocate(10, 10, memmap_bytes=0), np.memmap)
    # parallel segments with a warm-up reproduce the single-stream states
    long_ids = model.vocab.encode(_text(3000, 4))
    one = extract_states(model.encoder, long_ids, [View(0)], streams=1)[View(0)]
    par = extract_states(model.encoder, long_ids, [View(0)], streams=4, warmup=150,
                         chunk=97)[View(0)]
    np.testing.assert_allclose(one, par, atol=1e-4)
    with pytest.raises(MemlensError, match="out of range"):
        memlens.memory_signature(model, _text(100, 0), _text(50, 1), 2, Site(units="0,99"))


def test_symbols_top_n_and_upos(ewt_dev):
    ids = np.array([5, 5, 5, 6, 6, 7, 8, 9])
    sym = build_symbols("top:2", "word", ids, itos=[str(i) for i in range(10)])
    assert sym.names == ["5", "6", "<other>"]
    assert sym.classes(np.array([5, 6, 7, 3])).tolist() == [0, 1, 2, 2]
    with pytest.raises(MemlensError, match="top:N"):
        build_symbols("top:x", "word", ids)
    corpus = memlens.load_corpus(ewt_dev, "conllu", "word")
    train = memlens.Corpus(corpus.tokens[:3000], {"upos": corpus.tags["upos"][:3000]})
    held = memlens.Corpus(corpus.tokens[3000:4500], {"upos": corpus.tags["upos"][3000:4500]})
    torch.manual_seed(0)
    vocab = Vocab.build(train.tokens)
    model = LanguageModel({"emb": 16, "hidden": 16}, len(vocab))
    model.vocab = vocab
    sig = memlens.memory_signature(model, train, held, 2, symbols="upos", **FAST)
    assert "NOUN" in sig.symbols and "<eos>" not in sig.symbols
    assert sig.accuracy[0] > sig.majority[0]  # the current word's tag is decodable


def test_kneser_ney_normalises_and_window_lm_runs():
    text = list("the cat sat on the mat. the dog sat on the log. " * 20)
    lm = KneserNeyLM(3).fit(text)
    for hist in [(), tuple(lm.encode(list("th"))), tuple(lm.encode(list("zq")))]:
        assert sum(lm.prob(hist, w) for w in range(lm.vocab_size)) == pytest.approx(1.0)
    assert lm.evaluate(text)["perplexity"] < 3.0
    ids = np.array(lm.encode(text))
    wlm = WindowLM(lm.vocab_size, 3, emb=4, hidden=16).fit(ids, epochs=1)
    assert wlm.states(ids[:50]).shape == (50, 16) and wlm.bits(ids[:200]) > 0


def test_temperature_calibration_known_posterior():
    """States show the symbol with probability 0.7 (else a random one) plus 300 noise
    dimensions: a decoder fitted on 3,000 states is over-confident; the temperature fitted on
    the early-stopping rows brings the held-out cross-entropy towards the Bayes value
    (1.126 bits) without changing a single prediction."""
    rng = np.random.default_rng(0)

    def make(n):
        x = rng.integers(0, 4, n)
        shown = np.where(rng.random(n) < 0.7, x, rng.integers(0, 4, n))
        s = np.concatenate([np.eye(4)[shown] * 3, rng.normal(size=(n, 300))], 1)
        return s.astype(np.float32), lag_targets(x, 0)

    (x_tr, y_tr), (x_he, y_he) = make(3000), make(20000)
    out = {}
    for calibrate in (False, True):
        dec = JointDecoder(kind="linear", seed=0, calibrate=calibrate).fit(x_tr, y_tr, 4)
        out[calibrate] = dec.evaluate(x_he, y_he) + (dec.temperature,)
    bayes = -(0.775 * np.log2(0.775) + 3 * 0.075 * np.log2(0.075))
    (pred0, nll0, t0), (pred1, nll1, t1) = out[False], out[True]
    assert (pred0 == pred1).all() and t0[0] == 1.0 and t1[0] > 1.5
    assert nll1.mean() < nll0.mean() - 0.3
    assert bayes < nll1.mean() < bayes + 0.4


def gaussian_classes(n: int, c: int, d: int, sep: float, seed: int, p=None):
    """States of a Gaussian class model with shared (correlated) covariance: the Bayes rule
    is linear (LDA), and its accuracy on a sample is computed from the true parameters."""
    rng = np.random.default_rng(seed)
    means = sep * rng.standard_normal((c, d))
    mix = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    p = np.full(c, 1.0 / c) if p is None else p

    def make(m, s):
        r = np.random.default_rng(s)
        y = r.choice(c, m, p=p)
        noise = r.standard_normal((m, d))
        return ((means[y] + noise) @ mix).astype(np.float32), y

    def bayes(x, y):
        z = x @ np.linalg.inv(mix)  # back to identity noise
        score = z @ means.T - 0.5 * (means ** 2).sum(1) + np.log(p)
        return (score.argmax(1) == y).mean()

    return make(n, seed + 1), make(n // 2, seed + 2), bayes


def test_fast_decoder_reaches_bayes_accuracy_with_many_classes():
    """300 classes (Zipf prior) in 32 correlated dimensions: the closed-form start plus
    refinement comes within 2 points of the Bayes accuracy on held-out states (what 12,000
    samples allow for 300 x 32 means), and is at
    least as accurate as the joint SGD decoder (which, from its random start, stays a few
    points below here)."""
    c = 300
    zipf = 1.0 / np.arange(1, c + 1)
    (x_tr, y_tr), (x_he, y_he), bayes = gaussian_classes(12000, c, 32, 1.0, 0, zipf / zipf.sum())
    yt, yh = y_tr[:, None], y_he[:, None]
    fast = FastLinearDecoder(seed=0).fit(x_tr, yt, c)
    acc_fast = (fast.evaluate(x_he, yh)[0][:, 0] == y_he).mean()
    joint = JointDecoder(seed=0).fit(x_tr, yt, c)
    acc_joint = (joint.evaluate(x_he, yh)[0][:, 0] == y_he).mean()
    acc_bayes = bayes(x_he, y_he)
    assert acc_fast > acc_bayes - 0.02, (acc_fast, acc_bayes)
    assert acc_fast > acc_joint - 0.005, (acc_fast, acc_joint)
    assert fast.epochs <= 3


def test_fast_decoder_scale_stride_keeps_bayes_accuracy():
    """Fitting the group scales on every early-stopping row (scale_stride=1; the default
    2 is the test above) stays within 2 points of the Bayes accuracy on the 300-class case."""
    c = 300
    zipf = 1.0 / np.arange(1, c + 1)
    (x_tr, y_tr), (x_he, y_he), bayes = gaussian_classes(12000, c, 32, 1.0, 0, zipf / zipf.sum())
    fast = FastLinearDecoder(seed=0, scale_stride=1).fit(x_tr, y_tr[:, None], c)
    acc = (fast.evaluate(x_he, y_he[:, None])[0][:, 0] == y_he).mean()
    assert acc > bayes(x_he, y_he) - 0.02, (acc, bayes(x_he, y_he))
    with pytest.raises(MemlensError, match="scale_stride"):
        FastLinearDecoder(scale_stride=0)


@pytest.mark.parametrize("make", ["delay", "window", "constant"])
def test_fast_decoder_keeps_the_oracles(make):
    v, m = 4, 3
    if make == "delay":
        sig = memlens.memory_signature(delay_line(v, m), iid(3000, v, 0), iid(1500, v, 1),
                                       max_delay=6, decoder="linear-fast", options=B200)
        assert (sig.accuracy[:m] > 0.99).all()
        assert (sig.accuracy[m:] <= sig.majority[m:] + 0.05).all()
        assert sig.decoder == "linear-fast" and sig.memory_span() == m - 1
    elif make == "window":
        n, tr, he = 4, iid(3000, 5, 2), iid(1500, 5, 3)
        sym = build_symbols("chars", "char", tr)
        sig = signature_from_states(window_states(tr, n, 5), sym.classes(tr),
                                    window_states(he, n, 5), sym.classes(he), 6, sym,
                                    decoder="linear-fast", bootstrap=Bootstrap(200))
        assert (sig.accuracy[:n - 1] > 0.99).all()
        assert (sig.accuracy[n - 1:] <= sig.majority[n - 1:] + 0.05).all()
    else:
        rng = np.random.default_rng(4)
        p = [0.5, 0.2, 0.2, 0.1]
        tr, he = rng.choice(4, 2000, p=p), rng.choice(4, 1000, p=p)
        sym = build_symbols("chars", "char", tr)
        sig = signature_from_states(np.ones((2000, 8), np.float32), sym.classes(tr),
                                    np.ones((1000, 8), np.float32), sym.classes(he), 3, sym,
                                    decoder="linear-fast", bootstrap=Bootstrap(200))
        np.testing.assert_allclose(sig.accuracy, sig.majority, atol=0.01)
        assert (sig.bits < 0.03).all()


def test_fast_decoder_agrees_with_joint_decoder_and_sklearn_on_lags():
    """The small multi-lag case of the sklearn comparison: per lag, the fast decoder is
    within a point of scikit-learn's LogisticRegression (the optimum of the same objective)
    and at least as accurate as the joint decoder, less half a point."""
    from sklearn.linear_model import LogisticRegression

    v, k_max, x, y = 4, 3, *_noisy_lagged_states()
    tr, he = slice(0, 3000), slice(3000, None)
    acc = {}
    for name in ("linear", "linear-fast"):
        pred, _ = make_decoder(name).fit(x[tr], y[tr], v).evaluate(x[he], y[he])
        valid = y[he] >= 0
        acc[name] = ((pred == y[he]) & valid).sum(0) / valid.sum(0)
    mu, sd = x[tr].mean(0), x[tr].std(0)
    acc["sklearn"] = np.zeros(k_max + 1)
    for k in range(k_max + 1):
        m_tr, m_he = y[tr, k] >= 0, y[he, k] >= 0
        clf = LogisticRegression(max_iter=1000).fit(((x[tr] - mu) / sd)[m_tr], y[tr][m_tr, k])
        acc["sklearn"][k] = (clf.predict(((x[he] - mu) / sd)[m_he]) == y[he][m_he, k]).mean()
    assert np.abs(acc["sklearn"] - acc["linear-fast"]).max() <= 0.01, acc
    assert (acc["linear-fast"] >= acc["linear"] - 0.005).all(), acc


def test_unknown_decoder_is_refused():
    with pytest.raises(MemlensError, match="unknown decoder"):
        make_decoder("softmax")


def test_fast_decoder_group_scales_are_the_cross_entropy_optimum():
    """The L-BFGS fit of the per-head frequency-group scales (FastLinearDecoder._fit_scales)
    lands at the optimum of its convex objective: with the fitted scales folded into the
    weights, autograd's gradient (float64) of the early-stopping cross-entropy with respect
    to every group's weight and bias scale (at 1) is below 5e-3 (at the start it is above
    0.05: measured 1.4e-3 after the fit), and the loss is below that of the start
    (temperature 16) and of the unscaled LDA logits. 200 Zipf classes, so that several
    frequency groups (1, 2-3, ..., 64+ training occurrences) are populated, on 3 lags."""
    c = 200
    zipf = 1.0 / np.arange(1, c + 1)
    (x, cls), _, _ = gaussian_classes(4000, c, 16, 1.0, 3, zipf / zipf.sum())
    y = lag_targets(cls, 2)
    dec = FastLinearDecoder(seed=0, max_epochs=0, scale_stride=1).fit(x, y, c)
    heads, n_tr = 3, len(x) - int(round(len(x) * dec.val_fraction))
    with torch.no_grad():
        z = dec._rows(x, n_tr, len(x))
        w = dec.net.inp.weight.view(heads, c, -1)
        feats = torch.einsum("nd,hcd->nhc", z, w)
        bias = dec.net.inp.bias.view(heads, c)
    yv = torch.from_numpy(y[n_tr:])
    valid = yv >= 0
    group = torch.zeros(heads, c, dtype=torch.int64)
    for k in range(heads):
        cnt = np.bincount(y[:n_tr, k][y[:n_tr, k] >= 0], minlength=c)
        group[k] = torch.from_numpy(np.searchsorted([1, 2, 4, 8, 16, 64], cnt, side="right"))
    assert len(torch.unique(group)) >= 5

    def loss(a, b):
        lg = feats * a.gather(1, group)[None] + (bias * b.gather(1, group))[None]
        nll = torch.logsumexp(lg, -1) - lg.gather(-1, yv.clamp(min=0)[..., None])[..., 0]
        return (torch.where(valid, nll, torch.zeros(())).sum(0) / valid.sum(0)).sum()

    a = torch.ones(heads, 7, dtype=torch.float64, requires_grad=True)
    b = torch.ones(heads, 7, dtype=torch.float64, requires_grad=True)
    feats, bias = feats.double(), bias.double()
    opt = loss(a, b)
    opt.backward()
    assert a.grad.abs().max() < 5e-3 and b.grad.abs().max() < 5e-3, (a.grad, b.grad)
    scale_a, scale_b = (torch.from_numpy(s).double() for s in dec.scales)
    a0 = (1 / (16 * scale_a)).requires_grad_()
    start = loss(a0, 1 / (16 * scale_b))
    start.backward()
    assert a0.grad.abs().max() > 0.05, a0.grad
    with torch.no_grad():
        raw = loss(1 / scale_a, 1 / scale_b)  # the unscaled LDA logits
    assert opt < start - 0.1 and opt < raw - 0.1, (float(opt), float(start), float(raw))


def test_group_scale_loss_gradient_equals_autograd():
    """The written-out loss and gradient of the group-scale objective (_GroupScaleLoss)
    equal autograd's on the same objective, with excluded targets and 7 groups."""
    g = torch.Generator().manual_seed(0)
    rows, heads, c, groups = 300, 4, 50, 7
    feats = torch.randn(rows, heads, c, generator=g) * 5
    bias = torch.randn(heads, c, generator=g) * 3
    group = torch.randint(0, groups, (heads, c), generator=g)
    y = torch.randint(0, c, (rows, heads), generator=g)
    y[:7, 2] = -1
    a = torch.rand(heads, groups, dtype=torch.float64, generator=g)
    b = torch.rand(heads, groups, dtype=torch.float64, generator=g)
    loss, grad_a, grad_b = _GroupScaleLoss(feats, bias, group, y, groups)(a, b)
    a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()
    lg = feats.double() * a_.gather(1, group)[None] + (bias.double() * b_.gather(1, group))[None]
    nll = torch.logsumexp(lg, -1) - lg.gather(-1, y.clamp(min=0)[..., None])[..., 0]
    valid = y >= 0
    ref = (torch.where(valid, nll, torch.zeros(())).sum(0) / valid.sum(0)).sum()
    ref.backward()
    assert abs(float(loss) - ref.item()) < 1e-4 * abs(ref.item())
    assert torch.allclose(grad_a, a_.grad, rtol=1e-4, atol=1e-5)
    assert torch.allclose(grad_b, b_.grad, rtol=1e-4, atol=1e-5)


def test_calibrate_finds_the_cross_entropy_optimum():
    """calibrated_cross_entropy() (safeguarded Newton in beta = 1/T) against brute force:
    per head, the cross-entropy on a fine grid of 4,001 values of beta over [1/16, 4]. Head 0 is
    over-confident (optimum inside the range), head 1 under-confident (optimum inside),
    head 2 has targets independent of the logits (optimum at the range's end 1/16), head 3
    no targets (CE +inf, T = 1); an under-confident head whose optimum lies beyond 4 gets 4.
    A warm start gives the same answer."""
    g = torch.Generator().manual_seed(1)
    rows, c = 2000, 30
    y = torch.randint(0, c, (rows, 4), generator=g)
    signal = torch.nn.functional.one_hot(y, c).float()
    noise = torch.randn(rows, 4, c, generator=g)
    logits = torch.stack([12 * signal[:, 0] + 6 * noise[:, 0],  # over-confident
                          3 * signal[:, 1] + 1.5 * noise[:, 1],  # under-confident
                          5 * noise[:, 2], noise[:, 3]], 1)
    y[:, 3] = -1
    ce, beta = calibrated_cross_entropy(logits, y)
    assert np.isinf(ce[3]) and beta[3] == 1.0
    grid = np.geomspace(1 / 16, 4, 4001)
    for h in range(3):
        brute = [float(torch.nn.functional.cross_entropy(logits[:, h] * b, y[:, h]))
                 for b in grid]
        best = int(np.argmin(brute))
        assert ce[h] <= brute[best] + 1e-5, (h, ce[h], brute[best])
        assert abs(np.log(beta[h] / grid[best])) < 3e-3, (h, beta[h], grid[best])
    assert 1 / 16 < beta[0] < 1 < beta[1] < 4 and beta[2] == pytest.approx(1 / 16)
    _, beta_end = calibrated_cross_entropy(0.05 * logits[:, :1], y[:, :1])
    assert beta_end[0] == 4.0
    ruled_out = logits[:, :1].clone()
    ruled_out[y[:, 0] != 0, 0, 0] = -torch.inf  # class 0 ruled out where it is not the target
    ce_inf, beta_inf = calibrated_cross_entropy(ruled_out, y[:, :1])
    assert np.isfinite(ce_inf).all() and 1 / 16 < beta_inf[0] < 4, (ce_inf, beta_inf)
    with pytest.raises(MemlensError, match="iters"):
        calibrated_cross_entropy(logits, y, iters=0)
    ce_warm, beta_warm = calibrated_cross_entropy(logits, y, beta * 1.3)
    assert np.allclose(beta_warm[:3], beta[:3], rtol=1e-3)
    assert np.allclose(ce_warm[:3], ce[:3], rtol=1e-6)


def test_calibrated_early_stopping_keeps_each_heads_best_epoch_temperature():
    """early_stopping="calibrated": each head's temperature is what calibrated_cross_entropy() gives
    its best-epoch weights on the early-stopping rows, within the range of TEMPERATURES,
    and predictions are those of those weights; an unknown criterion is refused."""
    v, _, x, y = 4, 3, *_noisy_lagged_states()
    dec = JointDecoder(seed=0, max_epochs=6, early_stopping="calibrated").fit(x, y, v)
    n_tr = len(x) - int(round(len(x) * dec.val_fraction))
    _, beta = calibrated_cross_entropy(dec._logits(x, n_tr, len(x)), torch.from_numpy(y[n_tr:]))
    assert np.allclose(dec.temperature, 1 / beta, rtol=1e-3), (dec.temperature, 1 / beta)
    assert (dec.temperature >= TEMPERATURES[0]).all()
    assert (dec.temperature <= TEMPERATURES[-1]).all()
    with pytest.raises(MemlensError, match="early_stopping"):
        JointDecoder(early_stopping="accuracy")
    with pytest.raises(MemlensError, match="max_epochs"):  # nothing would be trained
        JointDecoder(max_epochs=0).fit(x, y, v)


# -- the package's structure: entry point, bootstrap, checkpoint, module graph -----------------
def _bootstrap_0x(correct, nll, valid, entropy, blocks, resamples, seed):
    """memlens 0.x's signature bootstrap, verbatim (the reference of bootstrap_intervals)."""
    if resamples < 1:
        nan = np.full(correct.shape[1], np.nan)
        return nan, nan.copy(), nan.copy(), nan.copy()
    n = correct.shape[0]
    blocks = max(1, min(blocks, n))
    edges = np.linspace(0, n, blocks + 1).astype(int)
    c = np.add.reduceat(np.where(valid, correct, 0).astype(np.float64), edges[:-1], axis=0)
    e = np.add.reduceat(np.where(valid, nll, 0.0), edges[:-1], axis=0)
    m = np.add.reduceat(valid.astype(np.float64), edges[:-1], axis=0)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(blocks, np.full(blocks, 1.0 / blocks), size=resamples).astype(float)
    cnt = np.maximum(w @ m, 1.0)
    acc = (w @ c) / cnt
    bits = np.maximum(0.0, entropy[None, :] - (w @ e) / cnt)
    lo, hi = np.percentile(acc, [2.5, 97.5], axis=0)
    blo, bhi = np.percentile(bits, [2.5, 97.5], axis=0)
    return lo, hi, blo, bhi


@pytest.mark.parametrize("n, heads, blocks, resamples, seed", [
    (300, 4, 20, 200, 0), (37, 3, 7, 33, 5), (5, 2, 100, 10, 2**62), (50, 2, 3, 0, 0)])
def test_bootstrap_intervals_bit_identical_to_the_original(n, heads, blocks, resamples, seed):
    from memlens.analyses.signatures.signature import bootstrap_intervals

    rng = np.random.default_rng(n)
    correct, valid = rng.random((n, heads)) < 0.6, rng.random((n, heads)) < 0.9
    nll, entropy = rng.exponential(size=(n, heads)), rng.random(heads) * 3
    got = bootstrap_intervals(correct, nll, valid, entropy, blocks, resamples, seed)
    want = _bootstrap_0x(correct, nll, valid, entropy, blocks, resamples, seed)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_entry_point_parameters_and_removed_aliases():
    import inspect

    params = inspect.signature(memlens.memory_signature).parameters
    assert len(params) <= 12 and "options" in params and "site" in params
    assert not {"max_lag", "resamples", "layer", "readout", "units", "device", "dtype",
                "blocks", "bootstrap"} & set(params)
    v, m = 4, 2
    args = (delay_line(v, m), iid(600, v, 0), iid(300, v, 1))
    for old in ({"max_lag": 2}, {"resamples": 20}, {"units": "all"}):
        with pytest.raises(TypeError):
            memlens.memory_signature(*args, **({} if "max_lag" in old else {"max_delay": 2}),
                                     **old)
    sig = memlens.memory_signature(*args, 2, options=RunOptions(bootstrap=Bootstrap(0)),
                                   decoder_options={"max_epochs": 3})
    assert sig.info["readout"] == "hidden" and sig.info["layer"] == 0  # the layer's output
    assert np.isnan(sig.acc_low).all() and sig.max_delay == 2
    with pytest.raises(MemlensError, match="options.bootstrap.seed"):
        memlens.memory_signature(*args, 2, seed=1,
                                 options=RunOptions(bootstrap=Bootstrap(10, seed=2)))
    with pytest.raises(MemlensError, match="Site"):
        memlens.memory_signature(*args, 2, site=(0, "hidden"))


def test_one_seed_for_decoders_and_bootstrap():
    """seed= seeds the bootstrap too (as in memlens 0.x): the same numbers as
    signature_from_states with Bootstrap(seed=seed)."""
    v, m = 4, 2
    model, tr, he = delay_line(v, m), iid(800, v, 2), iid(400, v, 3)
    sig = memlens.memory_signature(model, tr, he, 2, seed=7,
                                   options=RunOptions(bootstrap=Bootstrap(50, blocks=5)),
                                   decoder_options={"max_epochs": 3})
    site = Site(0, "hidden")
    states = [extract_states(model, x, [site])[site] for x in (tr, he)]
    sym = build_symbols(None, "char", tr)
    ref = signature_from_states(states[0], sym.classes(tr), states[1], sym.classes(he), 2, sym,
                                seed=7, bootstrap=Bootstrap(50, blocks=5, seed=7),
                                decoder_options={"max_epochs": 3})
    for key in ("accuracy", "acc_low", "acc_high", "bits_low", "bits_high"):
        np.testing.assert_array_equal(getattr(sig, key), getattr(ref, key))


def test_sites_default_to_the_layer_output_and_split_by_declaration():
    from memlens.analyses.signatures.sites import parse_layers, resolve_site, study_sites

    lstm, glstm = _model("lstm", layers=2), _model("glstm", groups=2)
    assert resolve_site(lstm.encoder) == Site(1, "hidden", "all")
    assert resolve_site(lstm.encoder, Site(0, "cell")) == Site(0, "cell", "all")
    assert parse_layers("all", lstm.encoder) == [0, 1]
    assert parse_layers("-1", lstm.encoder) == parse_layers(1, lstm.encoder) == [1]
    assert parse_layers("1,0,1", lstm.encoder) == [0, 1]
    with pytest.raises(MemlensError, match="bad --layer"):
        parse_layers("x", lstm.encoder)
    assert [s.units for s in study_sites(glstm.encoder, [0], None, "groups")] == [
        "group:0", "group:1"]
    with pytest.raises(MemlensError, match="not a grouped LSTM"):
        study_sites(lstm.encoder, [0], None, "groups")


def _study_files(tmp_path):
    from memlens.models import save_checkpoint

    model = _model("lstm")
    save_checkpoint(tmp_path / "m.pt", model)
    (tmp_path / "c.txt").write_text("".join(_text(1500, 5)) + "\n")
    return tmp_path / "m.pt", tmp_path / "c.txt"


def test_study_checkpoint_round_trip_and_refusals(tmp_path):
    from memlens.analyses.signatures.config import StudyConfig
    from memlens.analyses.signatures.progress import StudyCheckpoint

    ckpt, text = _study_files(tmp_path)
    cfg = StudyConfig(model=str(ckpt), corpus=str(text), out=str(tmp_path / "out"),
                      max_delay=2)
    v = 4
    tr, he = iid(600, v, 0), iid(300, v, 1)
    sym = build_symbols("chars", "char", tr)
    sig = signature_from_states(window_states(tr, 2, v), sym.classes(tr),
                                window_states(he, 2, v), sym.classes(he), 2, sym,
                                **FAST_STATES)
    path = tmp_path / ".out.partial.npz"
    ck = StudyCheckpoint(path, cfg, resume=False)
    assert ck.done == 0 and not path.exists()
    ck.put("a | 0 | hidden | all", sig, {"ngram": {"order": 2}})
    back = StudyCheckpoint(path, cfg, resume=True)
    assert back.done == 1 and back.get("b | 0 | hidden | all", 2) is None
    got, extras = back.get("a | 0 | hidden | all", 2)
    assert extras == {"ngram": {"order": 2}} and got.symbols == sig.symbols
    for key in ("accuracy", "acc_low", "bits_high", "recall", "support", "temperature"):
        np.testing.assert_array_equal(getattr(got, key), getattr(sig, key))
    with pytest.raises(MemlensError, match="wrong shape"):
        back.get("a | 0 | hidden | all", 3)
    other = StudyConfig(**{**cfg.__dict__, "max_delay": 3})
    with pytest.raises(MemlensError, match="different model, corpus or settings"):
        StudyCheckpoint(path, other, resume=True)
    StudyCheckpoint(path, cfg, resume=False)  # a fresh start deletes the old checkpoint
    assert not path.exists()
    with pytest.raises(MemlensError, match="nothing to resume"):
        StudyCheckpoint(path, cfg, resume=True)


def test_run_study_interrupted_names_its_checkpoint(tmp_path, monkeypatch):
    import memlens.analyses.signatures.study as study
    from memlens.analyses.signatures.config import StudyConfig
    from memlens.analyses.signatures.progress import StudyCheckpoint
    from memlens.runtime.progress import Interrupted

    ckpt, text = _study_files(tmp_path)
    cfg = StudyConfig(model=str(ckpt), corpus=str(text), out=str(tmp_path / "out"),
                      max_delay=2, bootstrap=20, ngram=2)
    real, calls = study.signature_from_states, []

    def stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "signature_from_states", stop)
    ck = StudyCheckpoint(tmp_path / "ck.npz", cfg, resume=False)
    with pytest.raises(Interrupted) as exc:
        study.run_study(cfg, log=lambda *_: None, checkpoint=ck)
    assert (exc.value.done, exc.value.total) == (1, 3)  # model, control, 2-gram window
    assert "ck.npz" in str(exc.value) and "--resume" in str(exc.value)
    monkeypatch.setattr(study, "signature_from_states", real)
    resumed = study.run_study(cfg, log=lambda *_: None,
                              checkpoint=StudyCheckpoint(tmp_path / "ck.npz", cfg, True))
    straight = study.run_study(cfg, log=lambda *_: None)
    assert [e.key for e in resumed.entries] == [e.key for e in straight.entries]
    assert resumed.rows() == straight.rows()


def test_the_package_modules_import_without_a_cycle():
    """Imports inside memlens.analyses.signatures (top-level and deferred) form no cycle; the
    table and the plots import nothing of the analysis (plain data / arrays)."""
    import ast
    from pathlib import Path

    import memlens.analyses.signatures as pkg

    root = Path(pkg.__file__).parent
    prefix = "memlens.analyses.signatures"
    graph = {}
    for path in root.glob("*.py"):
        name = path.stem
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith(prefix):
                rest = node.module[len(prefix) + 1:]
                deps |= {rest} if rest else {a.name for a in node.names}
        graph[name] = deps - {name}
    assert not graph["table"] and not graph["plots"]
    state: dict[str, int] = {}

    def visit(n, trail):
        assert state.get(n) != 1, "import cycle: " + " -> ".join([*trail, n])
        if state.get(n) == 2:
            return
        state[n] = 1
        for d in graph.get(n, ()):
            visit(d, [*trail, n])
        state[n] = 2

    for n in graph:
        if n != "__init__":
            visit(n, [])
