"""State-gradient engine: exactness against brute-force autograd, resume, normalisation, CLI."""

from __future__ import annotations

import copy
import json
import os
import signal

import numpy as np
import pytest
import torch
from torch import nn

import memlens
from memlens.analyses.gradients import EngineSettings, embedding_normalization
from memlens.cli import main
from memlens.core.errors import MemlensError
from memlens.data import Vocab
from memlens.models import (
    LanguageModel,
    RecurrentEncoder,
    RecurrentLayer,
    as_encoder,
    save_checkpoint,
    wrap,
)
from memlens.protocol import Site
from memlens.runtime.options import as_options
from memlens.runtime.progress import Interrupted

V, E, H, T, K = 11, 3, 5, 30, 4


def brute_force(model, ids, K, layer, readout, memberships=None, n_classes=0):
    """Average Jacobians d s_t / d x_{t-tau} by torch.autograd (float64, full stream)."""
    enc = copy.deepcopy(as_encoder(model)).double()
    X = enc.embedding.weight.detach()[ids].clone()

    def states(X):
        st, out = enc.init_state(1, dtype=torch.float64), []
        for t in range(X.shape[0]):
            st = enc.step(X[t:t + 1], st)
            out.append(enc.layers[layer].readout(st[layer], readout)[0])
        return torch.stack(out)

    J = torch.autograd.functional.jacobian(states, X, vectorize=True).numpy()  # T x H x T x E
    n = len(ids)
    S = K + 1
    sums, cnt = np.zeros((S, J.shape[1], J.shape[3])), np.zeros(S)
    csums, ccnt = np.zeros((n_classes, *sums.shape)), np.zeros((n_classes, S))
    for t in range(n):
        for tau in range(min(t, K) + 1):
            sums[tau] += J[t, :, t - tau]
            cnt[tau] += 1
            for c in (memberships[t - tau] if memberships else []):
                csums[c, tau] += J[t, :, t - tau]
                ccnt[c, tau] += 1
    return sums / cnt[:, None, None], csums, ccnt


def rel_err(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def lm(arch, layers=2, seed=0):
    torch.manual_seed(seed)
    return LanguageModel({"arch": arch, "layers": layers, "emb": 4 if arch == "glstm" else E,
                          "hidden": 6 if arch == "glstm" else H, "groups": 2}, V).eval()


CASES = [(arch, layer, ro) for arch in ("lstm", "gru", "rnn", "flstm", "glstm")
         for layer in (0, 1)
         for ro in (("cell", "hidden") if arch in ("lstm", "flstm", "glstm") else ("hidden",))]


@pytest.mark.parametrize("arch,layer,readout", CASES)
def test_exact_against_autograd(arch, layer, readout):
    model = lm(arch)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (T,), generator=g)
    labels = [["a"] if i % 3 == 0 else (["a", "b"] if i % 3 == 1 else []) for i in ids.tolist()]
    memb = [[{"a": 0, "b": 1}[c] for c in lab] for lab in labels]
    ref, csum, ccnt = brute_force(model, ids, K, layer, readout, memb, 2)
    results = [memlens.state_gradients(model, ids, K, site=Site(layer, readout),
                                       classes=labels, options=as_options(dtype="float64"),
                                       engine=EngineSettings(chunk_size=c, flush_every=f))
               for c, f in ((7, 5), (1000, 256))]
    for r in results:
        assert rel_err(r.means(), ref) < 1e-5
        for c, name in enumerate(("a", "b")):
            for tau in range(K + 1):
                assert r.count(tau, name) == ccnt[c, tau]
                assert rel_err(r.mean(tau, name), csum[c, tau] / ccnt[c, tau]) < 1e-5
    # chunking does not change a single bit; float32 within 1e-4; generic path agrees
    assert np.array_equal(results[0].raw.sums, results[1].raw.sums) or \
        rel_err(results[0].raw.sums, results[1].raw.sums) < 1e-12
    r32 = memlens.state_gradients(model, ids, K, site=Site(layer, readout),
                                  engine=EngineSettings(chunk_size=9))
    assert rel_err(r32.means(), ref) < 1e-4
    gen = memlens.state_gradients(model, ids, K, site=Site(layer, readout), method="generic",
                                  options=as_options(dtype="float64"))
    assert rel_err(gen.means(), ref) < 1e-5


def _unit_map(model, arch: str, layer: int, units: str) -> np.ndarray:
    """The D x H map of a unit set, written out by hand: rows of the identity, or A."""
    lay = as_encoder(model).layers[layer]
    if units == "factor":
        return lay.factor_in.weight.detach().double().numpy()
    index = {"0,2-3": [0, 2, 3], "group:1": [3, 4, 5]}[units]
    return np.eye(lay.hidden_size)[index]


@pytest.mark.parametrize("arch,units,readout", [("lstm", "0,2-3", "cell"),
                                                ("glstm", "group:1", "hidden"),
                                                ("flstm", "factor", "hidden")])
def test_site_units_against_autograd(arch, units, readout):
    model = lm(arch)
    ids = torch.randint(0, V, (T,), generator=torch.Generator().manual_seed(7))
    ref, _, _ = brute_force(model, ids, K, 1, readout)
    want = np.einsum("dh,she->sde", _unit_map(model, arch, 1, units), ref)
    r = memlens.state_gradients(model, ids, K, site=Site(1, readout, units),
                                options=as_options(dtype="float64"))
    assert r.means().shape == want.shape and r.settings["units"] == units
    assert rel_err(r.means(), want) < 1e-8
    with pytest.raises(MemlensError, match="out of range"):
        memlens.state_gradients(model, ids, K, site=Site(1, readout, "0,99"))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_wrapped_user_model(cls):
    torch.manual_seed(2)
    rnn = cls(E, H, num_layers=2, batch_first=True)
    model = wrap(nn.Embedding(V, E), rnn)
    ids = torch.randint(0, V, (25,))
    ro = "cell" if cls is nn.LSTM else "hidden"
    for layer in (0, 1):
        ref, _, _ = brute_force(model, ids, K, layer, ro)
        r = memlens.state_gradients(model, ids.tolist(), K, site=Site(layer, ro),
                                    options=as_options(dtype="float64"))
        assert rel_err(r.means(), ref) < 1e-5
        assert r.count(0) == 25 and r.count(K) == 25 - K
        sv = r.singular_values(1)
        assert sv.shape == (E,) and np.all(np.diff(sv) <= 1e-12)
        raw = np.linalg.svd(r.mean(1) @ r.normalization.D, compute_uv=False)
        assert np.allclose(sv, raw)


def test_resume_after_stop_and_sigterm_is_identical(tmp_path):
    model = lm("lstm", layers=1)
    ids = torch.randint(0, V, (60,), generator=torch.Generator().manual_seed(3))
    labels = [str(i % 3) for i in ids.tolist()]
    kw = {"site": Site(readout="hidden"), "classes": labels}

    def opts(**run):
        return as_options(blocks=4, **run)

    def engine(**knobs):
        return EngineSettings(flush_every=8, **knobs)

    straight = memlens.state_gradients(model, ids, K, options=opts(), engine=engine(), **kw)
    ck = tmp_path / "partial.pt"
    with pytest.raises(Interrupted):
        memlens.state_gradients(model, ids, K, options=opts(checkpoint=ck, stop_after=21),
                                engine=engine(chunk_size=5), **kw)
    assert ck.exists()

    def kill(pos):  # SIGTERM arrives in the middle of the resumed run
        if pos >= 40:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted) as info:
        memlens.state_gradients(model, ids, K, options=opts(checkpoint=ck, resume=True),
                                engine=engine(chunk_size=10, on_chunk=kill), **kw)
    assert 40 <= info.value.position < 60
    resumed = memlens.state_gradients(model, ids, K, options=opts(checkpoint=ck, resume=True),
                                      engine=engine(), **kw)
    assert not ck.exists()
    for name in ("sums", "counts", "class_sums", "class_counts", "block_sums",
                 "block_counts", "class_block_sums", "class_block_counts"):
        assert np.array_equal(getattr(straight.raw, name), getattr(resumed.raw, name)), name
    other = lm("lstm", layers=1, seed=5)
    with pytest.raises(Interrupted):
        memlens.state_gradients(model, ids, K, options=opts(checkpoint=ck, stop_after=10),
                                engine=engine(), **kw)
    with pytest.raises(MemlensError, match="different model"):
        memlens.state_gradients(other, ids, K, options=opts(checkpoint=ck, resume=True),
                                engine=engine(), **kw)


def test_normalisation_known_answer():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    X -= X.mean(0)
    X = X @ np.linalg.inv(np.linalg.cholesky(np.cov(X, rowvar=False))).T  # exactly whitened
    D0 = np.array([[2.0, 0, 0, 0], [0.5, 1.0, 0, 0], [0, -0.3, 0.7, 0], [1.0, 0.2, 0.1, 3.0]])
    mu = np.array([1.0, -2.0, 0.5, 3.0])
    norm = embedding_normalization(X @ D0.T + mu)
    assert np.allclose(norm.D, D0) and np.allclose(norm.mu, mu)
    assert np.allclose(norm.Z @ D0, np.eye(4))
    assert np.isclose(norm.condition, np.linalg.cond(D0))
    # rank-deficient: normalised within the span (tests/test_normalize_span.py); rank 0 refused
    assert embedding_normalization(rng.standard_normal((3, 4))).rank == 2
    assert embedding_normalization(np.c_[X, X[:, :1]]).rank == 4
    with pytest.raises(MemlensError, match="singular"):
        embedding_normalization(np.ones((10, 4)))


def test_direction_metrics_and_bootstrap():
    model = lm("lstm", layers=1)
    ids = torch.randint(0, V, (50,), generator=torch.Generator().manual_seed(4))
    labels = ["x" if i < 5 else "y" for i in ids.tolist()]
    r = memlens.state_gradients(model, ids, K, classes=labels, options=as_options(blocks=5))
    d = r.direction("x", "y")
    rel = r.relative_memory(d)
    proj, share = r.alignment(d, k=3)
    assert rel.shape == (K + 1,) and np.all((rel >= 0) & (rel <= 1 + 1e-9))
    assert proj.shape == (K + 1, 3) and np.all(np.diff(proj, axis=1) >= -1e-12)
    assert np.all(share[:, -1] <= 1 + 1e-12)
    raw = r.raw  # per-block class sums (bootstrap) add up to the class sums
    assert raw.ci_delays == [0, 1, 2, K]
    for c in range(2):
        for k, d in enumerate(raw.ci_delays):
            assert np.allclose(raw.class_block_sums[:, c, k].sum(0), raw.class_sums[c, d])
            assert raw.class_block_counts[:, c, d].sum() == raw.class_counts[c, d]
    row = next(x for x in r.table(30) if x["class"] == "x" and x["delay"] == 1)
    assert row["ci_low"] <= row["sum_sv"] * 1.5 and row["se"] > 0
    boot = r.bootstrap(50)
    total = r.spectrum().sum(1)
    assert np.all(boot["se"] > 0) and np.all(boot["low"] <= boot["high"])
    assert np.all((boot["low"] <= total * 1.5) & (boot["high"] >= total / 1.5))


# -- CLI ------------------------------------------------------------------------------------
CONLLU = "".join(
    f"# sent_id = {s}\n" + "".join(
        f"{i + 1}\t{w}\t_\t{u}\t{x}\t_\t0\t_\t_\t_\n"
        for i, (w, u, x) in enumerate([("the", "DET", "DT"), ("cat", "NOUN", "NN"),
                                       ("sees", "VERB", "VBZ"), ("dogs", "NOUN", "NNS")]))
    + "\n" for s in range(12))


@pytest.fixture
def tiny(tmp_path):
    words = ["the", "cat", "sees", "dogs", "a", "bird", "runs", "and", "big", "red"]
    vocab = Vocab(["<unk>", "<eos>", *words], [5, 12] + [10 - i for i in range(len(words))])
    torch.manual_seed(0)
    model = LanguageModel({"arch": "lstm", "layers": 2, "emb": 3, "hidden": 4}, len(vocab))
    model.vocab = vocab
    save_checkpoint(tmp_path / "m.pt", model)
    (tmp_path / "c.conllu").write_text(CONLLU)
    return tmp_path


def cli(tmp, *extra, out="out"):
    return main(["gradients", "--model", str(tmp / "m.pt"), "--corpus", str(tmp / "c.conllu"),
                 "--format", "conllu", "--out", str(tmp / out), "--no-progress",
                 "--bootstrap", "20", *extra])


def test_cli_result_directory(tiny, capsys):
    assert cli(tiny, "--max-delay", "4", "--classes", "upos", "--layer", "0") == 0
    doc = json.loads((tiny / "out" / "result.json").read_text())
    assert doc["kind"] == "gradients" and doc["corpus"]["tokens"] == 60
    assert {"path", "arch", "layers", "emb", "hidden", "unit"} <= set(doc["model"])
    rows = {(r["delay"], r["class"]): r for r in doc["table"]}
    assert rows[(0, "NOUN")]["count"] == 24 and rows[(4, "all")]["count"] == 56
    assert rows[(2, "all")]["ci_low"] <= rows[(2, "all")]["ci_high"]
    for p in doc["plots"]:
        assert (tiny / "out" / p["file"]).stat().st_size > 1000 and p["caption"]
    npz = np.load(tiny / "out" / "gradients.npz")
    assert npz["mean"].shape == (5, 4, 3) and npz["class_mean"].shape == (3, 5, 4, 3)
    assert np.allclose(npz["Z"] @ npz["D"], np.eye(3))
    assert "sum of singular values at delay 0" in capsys.readouterr().out


def test_cli_groups_file_with_absent_tag_warns(tiny, capsys):
    (tiny / "g.txt").write_text("nouns NN NNS NNP\nadj JJ JJR\n")
    assert cli(tiny, "--max-delay", "2", "--classes", f"groups:{tiny / 'g.txt'}") == 0
    err = capsys.readouterr().err
    assert "warning" in err and "NNP" in err and "JJ" in err
    doc = json.loads((tiny / "out" / "result.json").read_text())
    adj = [r for r in doc["table"] if r["class"] == "adj"]
    assert adj and all(r["count"] == 0 and r["sum_sv"] is None for r in adj)


@pytest.mark.parametrize("args,message", [
    (["--max-delay", "-1"], "--max-delay must be in 0.."),
    (["--max-delay", "60"], "not shorter than the stream"),
    (["--readout", "memory"], "unknown readout"),
    (["--layer", "2"], "layer 2 does not exist"),
    (["--units", "group:0"], "not a grouped LSTM"),
    (["--classes", "colour"], "unknown class specification"),
])
def test_cli_bad_input(tiny, capsys, args, message):
    assert cli(tiny, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tiny / "out").exists()
    assert not [p for p in tiny.iterdir() if p.name.startswith(".out")]


def test_cli_only_unknown_words_and_bad_ids(tiny, capsys):
    (tiny / "c.conllu").write_text(CONLLU.replace("\tthe\t", "\tzz\t").replace("\tcat\t", "\tqq\t")
                                   .replace("\tsees\t", "\tww\t").replace("\tdogs\t", "\tvv\t"))
    assert cli(tiny) == 2
    assert "only unknown words" in capsys.readouterr().err
    assert not (tiny / "out").exists()
    model = memlens.load_checkpoint(tiny / "m.pt")
    with pytest.raises(MemlensError, match="outside the model's vocabulary"):
        memlens.state_gradients(model, [1, 2, 3, 99, 4], 2)
    gru = lm("gru", layers=1)
    with pytest.raises(MemlensError, match="unknown readout 'cell'"):
        memlens.state_gradients(gru, [1, 2, 3, 4], 2, site=Site(readout="cell"))
    # the default readout is valid for every architecture (GRU: hidden)
    assert memlens.state_gradients(gru, [1, 2, 3, 4], 2).settings["readout"] == "hidden"


def test_cli_real_data(ewt_dev, tmp_path):
    from memlens.data import load_corpus

    corpus = load_corpus(ewt_dev, "conllu")
    vocab = Vocab.build(corpus.tokens[:3000], 500)
    torch.manual_seed(0)
    model = LanguageModel({"arch": "lstm", "emb": 8, "hidden": 8}, len(vocab))
    model.vocab = vocab
    save_checkpoint(tmp_path / "m.pt", model)
    rc = main(["gradients", "--model", str(tmp_path / "m.pt"), "--corpus", str(ewt_dev),
               "--format", "conllu", "--classes", "upos", "--max-delay", "5", "--max-tokens",
               "400", "--out", str(tmp_path / "r"), "--no-progress", "--bootstrap", "20"])
    assert rc == 0
    doc = json.loads((tmp_path / "r" / "result.json").read_text())
    assert {r["class"] for r in doc["table"]} >= {"all", "NOUN", "VERB"}
    assert doc["summary"]["condition_number_Z"] >= 1


def test_cli_direction_vector(tiny, capsys):
    np.save(tiny / "d.npy", np.array([1.0, 0.0, -1.0]))
    assert cli(tiny, "--max-delay", "2", "--direction", str(tiny / "d.npy")) == 0
    row = json.loads((tiny / "out" / "result.json").read_text())["table"][0]
    assert 0 <= row["relmem_d"] <= 1
    np.save(tiny / "bad.npy", np.ones(5))
    assert cli(tiny, "--direction", str(tiny / "bad.npy"), out="o2") == 2
    assert "has 5 entries" in capsys.readouterr().err and not (tiny / "o2").exists()


def test_class_specs(tmp_path):
    from memlens.analyses.gradients.classes import token_classes

    vocab = Vocab(["<unk>", "<eos>", "a", "b", "c", "d"], [0, 5, 50, 30, 15, 5])
    tokens = ["a", "b", "c", "d", "zz", "<eos>"]
    names, per = token_classes("freq:2", tokens, vocab=vocab)
    assert names == ["freq1of2", "freq2of2"]
    assert per == [["freq1of2"], ["freq2of2"], ["freq2of2"], ["freq2of2"], [], []]
    names, per = token_classes("freq:1,10,40,100", tokens, vocab=vocab)
    assert per[0] == ["freq[40,100)"] and per[3] == ["freq[1,10)"] and per[2] == ["freq[10,40)"]
    (tmp_path / "lex.txt").write_text("a\tNN VB\nb\tNN\nq\tJJ\n")
    (tmp_path / "w1.txt").write_text("a c\n")
    with pytest.warns(UserWarning, match="JJ"):
        names, per = token_classes(f"lexicon:{tmp_path / 'lex.txt'}", tokens)
    assert names == ["JJ", "NN", "VB"] and per[:3] == [["NN", "VB"], ["NN"], []]
    names, per = token_classes(f"words:{tmp_path / 'w1.txt'}", tokens)
    assert names == ["w1"] and per[:3] == [["w1"], [], ["w1"]]
    with pytest.raises(MemlensError, match="CoNLL-U"):
        token_classes("upos", tokens)


class MinimalGatedLayer(RecurrentLayer):
    """A custom cell the engine has no hand-derived tangents for (generic jvp path)."""

    kind = "mgu"

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.lin = nn.Linear(input_size + hidden_size, 2 * hidden_size)

    def step(self, x, state):
        h = state[0]
        f, n = self.lin(torch.cat([x, h], -1)).chunk(2, -1)
        f = torch.sigmoid(f)
        return ((1 - f) * h + f * torch.tanh(n),)


def test_custom_cell_uses_generic_path():
    torch.manual_seed(6)
    enc = RecurrentEncoder(nn.Embedding(V, E), [MinimalGatedLayer(E, H),
                                                MinimalGatedLayer(H, H)]).eval()
    ids = torch.randint(0, V, (20,))
    for layer in (0, 1):
        ref, _, _ = brute_force(enc, ids, K, layer, "hidden")
        r = memlens.state_gradients(enc, ids, K, site=Site(layer, "hidden"),
                                    options=as_options(dtype="float64"))
        assert r.stats["method"] == "generic"
        assert rel_err(r.means(), ref) < 1e-5
    with pytest.raises(MemlensError, match="no hand-derived"):
        memlens.state_gradients(enc, ids, K, site=Site(readout="hidden"), method="hand")


def test_cli_vocabulary_mismatch_warns(tiny, capsys):
    text = CONLLU.replace("\tthe\t", "\tzz\t").replace("\tcat\t", "\tqq\t") \
        .replace("\tsees\t", "\tww\t")
    (tiny / "c.conllu").write_text(text)
    assert cli(tiny, "--max-delay", "2") == 0
    err = capsys.readouterr().err
    assert "vocabulary mismatch" in err and "75.0%" in err
