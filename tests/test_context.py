"""The context regime (memlens.runtime.context): one option for every analysis.

Oracles: brute-force autograd Jacobians through the model's own step, each window or sentence
run by itself from the initial state (gradients); states of each window computed by the
torch module itself, window by window (signatures); the default regime's numbers bit for bit.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from test_signatures import delay_line
from torch import nn

import memlens
from memlens.analyses.signatures.signature import signature_from_targets
from memlens.analyses.signatures.symbols import build_symbols
from memlens.cli import main
from memlens.core.errors import MemlensError
from memlens.data import Vocab
from memlens.models import LanguageModel, wrap
from memlens.models.encoder import as_encoder
from memlens.models.inputs import Stream
from memlens.protocol import Site
from memlens.runtime.context import Context, layout
from memlens.runtime.options import Bootstrap, RunOptions, check_option

V, E, H = 9, 3, 5
F64 = RunOptions(dtype="float64", bootstrap=Bootstrap(0))


def tiny_lm(arch: str, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel({"arch": arch, "layers": 2, "emb": E, "hidden": H}, V).eval()


# -- the regime's spelling ------------------------------------------------------------------------
@pytest.mark.parametrize("text,canonical", [
    ("stream", "stream"), ("sentence", "sentence"), ("segment:35", "segment:35"),
    ("window:40", "window:40"), ("40", "window:40"), (40, "window:40"),
    ("window:40,stride=40", "window:40"), ("window:40,stride=10", "window:40,stride=10"),
    (" Window:40,targets=last ", "window:40,targets=last"),
    ("window:40,targets=last,stride=5", "window:40,stride=5,targets=last")])
def test_spelling_round_trips(text, canonical):
    ctx = Context.parse(text)
    assert str(ctx) == canonical and Context.parse(str(ctx)) == ctx
    assert check_option("context", text) == canonical


@pytest.mark.parametrize("bad", ["", "strem", "window", "window:0", "window:-3", "window:4.5",
                                 "window:nan", "segment", "sentence:4", "stream:2",
                                 "window:4,stride=0", "window:4,targets=first",
                                 "window:4,stride=2,stride=3", "segment:4,stride=2",
                                 "window:99999999999999999999", True, 2.5, None.__class__])
def test_bad_spellings_are_one_line_errors(bad):
    with pytest.raises(MemlensError) as exc:
        Context.parse(bad)
    assert "\n" not in str(exc.value)


def test_layout_of_each_regime():
    w = layout(Context.parse("window:4,stride=3"), 11)
    assert w.positions.tolist() == [0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9]
    assert w.starts.tolist() == [True, False, False, False] * 3 and w.reset
    last = layout(Context.parse("window:4,targets=last"), 9)
    assert last.positions.tolist() == list(range(8))
    assert last.targets.nonzero()[0].tolist() == [3, 7]
    s = layout(Context.parse("sentence"), 7, np.array([0, 3, 5]))
    assert s.offsets().tolist() == [0, 1, 2, 0, 1, 0, 1]
    seg = layout(Context.parse("segment:3"), 7)
    assert not seg.reset and seg.offsets().tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert layout(Context(), 5).identity
    y = s.lag_targets(np.arange(7), 2)
    assert y.tolist() == [[0, -1, -1], [1, 0, -1], [2, 1, 0], [3, -1, -1], [4, 3, -1],
                          [5, -1, -1], [6, 5, -1]]
    with pytest.raises(MemlensError, match="longer than"):
        layout(Context.parse("window:20"), 7)
    with pytest.raises(MemlensError, match="sentence boundaries"):
        layout(Context.parse("sentence"), 7)


# -- gradients: exact against autograd, window by window --------------------------------------
def brute_force_segments(model, ids, K, layer, readout, segments, targets=None):
    """Average d r_t / d x_{t-tau} (float64) with each segment (a list of stream positions)
    run by itself from the zero state, pairs inside it; ``targets``: per segment, the offsets
    that are targets (None: all)."""
    enc = copy.deepcopy(as_encoder(model)).double()
    emb = enc.embedding.weight.detach()
    sums, cnt = np.zeros((K + 1, H, E)), np.zeros(K + 1)
    for j, seg in enumerate(segments):
        X = emb[ids[list(seg)]].clone()

        def states(X):
            st, out = enc.init_state(1, dtype=torch.float64), []
            for i in range(X.shape[0]):
                st = enc.step(X[i:i + 1], st)
                out.append(enc.layers[layer].readout(st[layer], readout)[0])
            return torch.stack(out)

        J = torch.autograd.functional.jacobian(states, X, vectorize=True).numpy()
        for i in range(len(seg)):
            if targets is not None and i not in targets[j]:
                continue
            for tau in range(min(i, K) + 1):
                sums[tau] += J[i, :, i - tau]
                cnt[tau] += 1
    return sums / np.maximum(cnt, 1)[:, None, None], cnt


@pytest.mark.parametrize("arch", ["lstm", "gru"])
@pytest.mark.parametrize("spec", ["window:7", "window:7,stride=3", "window:7,targets=last",
                                  "sentence"])
@pytest.mark.parametrize("layer,readout", [(1, "hidden"), (0, "cell")])
def test_gradients_exact_in_every_regime(arch, spec, layer, readout):
    if arch == "gru" and readout == "cell":
        readout = "hidden"
    model = tiny_lm(arch)
    T, K = 26, 3
    ids = torch.randint(0, V, (T,), generator=torch.Generator().manual_seed(5))
    starts = [0, 4, 12, 13, 21]
    if spec == "sentence":
        segments = [range(a, b) for a, b in zip(starts, [*starts[1:], T])]
    else:
        ctx = Context.parse(spec)
        step = ctx.stride or ctx.length
        segments = [range(s, s + 7) for s in range(0, T - 7 + 1, step)]
    targets = [{6}] * len(segments) if "last" in spec else None
    want, cnt = brute_force_segments(model, ids, K, layer, readout, segments, targets)
    r = memlens.state_gradients(model, Stream(ids, sentences=starts), K,
                                site=Site(layer, readout), context=spec, options=F64)
    assert np.array_equal(r.raw.counts, cnt)
    assert np.abs(r.means() - want).max() <= 1e-10 * np.abs(want).max()
    assert r.settings["context"] == str(Context.parse(spec))


def test_sentence_regime_resets_after_eos_and_is_resumable(tmp_path):
    vocab = Vocab(["<unk>", "<eos>", *"abcdefg"], [0] * 9)
    model = tiny_lm("lstm")
    model.vocab = vocab
    words = "a b c <eos> d e <eos> f g a b <eos> c".split()
    ids = vocab.encode(words)
    want, cnt = brute_force_segments(model, ids, 2, 1, "cell",
                                     [range(0, 4), range(4, 7), range(7, 12), range(12, 13)])
    r = memlens.state_gradients(model, words, 2, context="sentence", options=F64)
    assert np.array_equal(r.raw.counts, cnt)
    assert np.abs(r.means() - want).max() <= 1e-10 * np.abs(want).max()
    # an interrupted run resumes to the same numbers; another regime refuses the checkpoint
    ck = tmp_path / "ck.pt"
    opts = RunOptions(dtype="float64", bootstrap=Bootstrap(0))
    kw = {"context": "sentence", "engine": memlens.analyses.gradients.EngineSettings(
        chunk_size=2)}
    with pytest.raises(KeyboardInterrupt):
        memlens.state_gradients(model, words, 2, options=memlens.runtime.options.as_options(
            opts, checkpoint=ck, stop_after=5), **kw)
    with pytest.raises(MemlensError, match="different"):
        memlens.state_gradients(model, words, 2, context="window:4", options=memlens.runtime.
                                options.as_options(opts, checkpoint=ck, resume=True))
    back = memlens.state_gradients(model, words, 2, options=memlens.runtime.options.as_options(
        opts, checkpoint=ck, resume=True), **kw)
    assert np.array_equal(back.raw.sums, r.raw.sums)


def test_default_is_the_stream_bit_for_bit():
    model = tiny_lm("lstm")
    ids = torch.randint(0, V, (60,), generator=torch.Generator().manual_seed(6))
    a = memlens.state_gradients(model, ids, 4)
    b = memlens.state_gradients(model, ids, 4, context="stream")
    for name in ("sums", "counts", "block_sums", "block_counts"):
        assert np.array_equal(getattr(a.raw, name), getattr(b.raw, name))
    assert a.settings["context"] == "stream"
    # a window as long as the stream: the stream's pair set, bit for bit
    c = memlens.state_gradients(model, ids, 4, context="window:60")
    for name in ("sums", "counts"):
        assert np.array_equal(getattr(a.raw, name), getattr(c.raw, name))


def test_gradients_refuse_delays_no_window_holds():
    model = tiny_lm("gru")
    ids = torch.randint(0, V, (40,), generator=torch.Generator().manual_seed(7))
    with pytest.raises(MemlensError, match="not shorter than the longest window"):
        memlens.state_gradients(model, ids, 5, context="window:5")
    with pytest.raises(MemlensError, match="sentence boundaries"):
        memlens.state_gradients(model, ids, 2, context="sentence")


# -- signatures: window:N against each window run by itself -------------------------------------
def lstm_encoder(seed=0):
    torch.manual_seed(seed)
    return wrap(nn.Embedding(6, 4), nn.LSTM(4, 8))


@pytest.mark.parametrize("spec", ["window:9", "window:9,stride=4", "window:9,targets=last"])
def test_signature_window_matches_independent_windows(spec):
    enc = lstm_encoder()
    rng = np.random.default_rng(0)
    tr, he = rng.integers(0, 6, 400), rng.integers(0, 6, 200)
    K = 4
    fast = {"decoder_options": {"max_epochs": 15}, "options": RunOptions(bootstrap=Bootstrap(50))}
    sig = memlens.memory_signature(enc, tr, he, K, context=spec, **fast)
    ctx = Context.parse(spec)
    step, N = ctx.stride or ctx.length, ctx.length
    emb, lstm = enc.embedding, enc.layers[0]
    sym = build_symbols(None, "char", tr, None, None)

    def independent(ids):
        xs, ys = [], []
        for s in range(0, len(ids) - N + 1, step):
            w = torch.as_tensor(ids[s:s + N])
            module = getattr(lstm, "lstm", None) or getattr(lstm, "module", None)
            with torch.no_grad():
                h = (module(emb(w)[:, None])[0][:, 0] if module is not None else
                     torch.stack([enc.layers[0].readout(st[0], "hidden")[0] for st in
                                  _steps(enc, emb(w))]))
            for i in range(N):
                if ctx.targets == "last" and i != N - 1:
                    continue
                y = [int(sym.classes(np.array([ids[s + i - k]]), None)[0]) if i >= k else -1
                     for k in range(K + 1)]
                xs.append(h[i].numpy())
                ys.append(y)
        return np.array(xs, dtype=np.float32), np.array(ys)

    xtr, ytr = independent(tr)
    xhe, yhe = independent(he)
    want = signature_from_targets(xtr, ytr, xhe, yhe, sym, "linear", 0, Bootstrap(50, seed=0),
                                  {"max_epochs": 15})
    assert np.allclose(sig.accuracy, want.accuracy, atol=1e-6)
    assert sig.info["context"] == str(ctx)


def _steps(enc, X):
    st = enc.init_state(1)
    for i in range(X.shape[0]):
        st = enc.step(X[i:i + 1], st)
        yield st


def test_signature_sentence_and_segment_regimes_on_a_delay_line():
    """A 3-slot delay line reads back lags 0-2 in every regime; under sentence the lags that
    would cross a sentence start are not asked (no target), so accuracy stays 1."""
    enc = delay_line(4, 3)
    rng = np.random.default_rng(1)
    tr, he = rng.integers(0, 4, 1200), rng.integers(0, 4, 600)
    fast = {"decoder_options": {"max_epochs": 30}, "options": RunOptions(bootstrap=Bootstrap(0))}
    starts_tr, starts_he = np.arange(0, 1200, 5), np.arange(0, 600, 5)
    s = memlens.memory_signature(enc, Stream(tr, sentences=starts_tr), Stream(
        he, sentences=starts_he), 2, context="sentence", **fast)
    assert (s.accuracy > 0.99).all() and s.n_heldout == 600
    seg = memlens.memory_signature(enc, tr, he, 2, context="segment:5", **fast)
    assert (seg.accuracy > 0.99).all()
    assert seg.info["context"] == "segment:5"
    with pytest.raises(MemlensError, match="sentence boundaries"):
        memlens.memory_signature(enc, tr, he, 2, context="sentence", **fast)


# -- the CLI: one option, same spelling, recorded ------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctx")
    text = root / "text.txt"
    rng = np.random.default_rng(0)
    text.write_text("\n".join(" ".join(rng.choice(list("abcdef"), rng.integers(3, 9)))
                              for _ in range(300)) + "\n")
    assert main(["train", "--train", str(text), "--out", str(root / "m.pt"), "--arch", "lstm",
                 "--hidden", "16", "--emb", "4", "--epochs", "1", "--bptt", "20", "--batch",
                 "8", "--device", "cpu"]) == 0
    return root


def test_cli_context_in_every_analysis(trained, capsys):
    m, c = str(trained / "m.pt"), str(trained / "text.txt")
    assert main(["gradients", "--model", m, "--corpus", c, "--out", str(trained / "g"),
                 "--max-delay", "5", "--context", "window:20,stride=10", "--bootstrap", "0",
                 "--device", "cpu"]) == 0
    g = json.loads((trained / "g" / "result.json").read_text())
    assert g["settings"]["context"] == "window:20,stride=10"
    assert main(["signatures", "--model", m, "--corpus", c, "--out", str(trained / "s"),
                 "--max-delay", "3", "--context", "sentence", "--bootstrap", "0",
                 "--device", "cpu", "--control", "none"]) == 0
    s = json.loads((trained / "s" / "result.json").read_text())
    assert s["settings"]["context"] == "sentence" and s["summary"]["context"] == "sentence"
    assert main(["ablation", "--model", m, "--corpus", c, "--out", str(trained / "a"),
                 "--context", "window:30", "--distances", "1,5,10", "--targets", "50",
                 "--bootstrap", "0", "--device", "cpu"]) == 0
    a = json.loads((trained / "a" / "result.json").read_text())
    assert a["settings"]["context"] == "window:30"
    capsys.readouterr()
    for argv, msg in [(["gradients", "--context", "windw:3"], "unknown context"),
                      (["gradients", "--context", "window:0"], "positive integer"),
                      (["ablation", "--context", "stream"], "window:L"),
                      (["signatures", "--context", "window:nan"], "cannot read context")]:
        out = trained / "bad"
        rc = main([argv[0], "--model", m, "--corpus", c, "--out", str(out), *argv[1:],
                   "--device", "cpu"])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("memlens: error:") and err.count("\n") == 1, err
        assert msg in err and not out.exists()


@pytest.mark.parametrize("bad", [[0, 5, 3], [-1, 2], [0, 99], ["a", "b"]])
def test_bad_sentence_starts_are_one_line_errors(bad):
    model = tiny_lm("lstm")
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(8))
    with pytest.raises(MemlensError, match="sentence") as exc:
        memlens.state_gradients(model, Stream(ids, sentences=bad), 2, context="sentence")
    assert "\n" not in str(exc.value)
