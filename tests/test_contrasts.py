"""Tag contrasts (relative memory and alignment of A - B directions) and lexicons from CoNLL-U."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import memlens
from memlens.analyses.gradients.contrasts import PRESETS, parse_contrasts, saved_frame
from memlens.cli import main
from memlens.core.errors import MemlensError, TrustWarning
from memlens.data import Vocab
from memlens.data.lexicon import is_conllu, lexicon_from_conllu, load_lexicon, read_lexicon
from memlens.models import LanguageModel, save_checkpoint
from memlens.results import load_result
from memlens.runtime.options import as_options

EWT_TRAIN = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ud-english-ewt"
             / "en_ewt-ud-train.conllu")
PTB_TAGS = ["JJ", "JJR", "JJS", "NN", "NNP", "NNPS", "NNS", "RB", "RBR", "VB", "VBD", "VBG",
            "VBN", "VBP", "VBZ"]


# -- a linear model: Gn(tau) known in closed form -------------------------------------------------
E, H, K = 3, 4, 4
V_PLURAL = np.array([0.3, -0.2, 0.1])  # the planted NNS - NN direction


def linear_model():
    """A ReLU RNN whose pre-activations are all positive (positive inputs, weights, bias), so
    it is linear: d h_t / d x_{t-tau} = W^tau U at every position, for every class. Words
    0, 1 are NN; 2, 3 are the same vectors plus V_PLURAL (NNS); 4 is VB; 5 is VBD."""
    torch.manual_seed(0)
    emb, rnn = nn.Embedding(6, E), nn.RNN(E, H, nonlinearity="relu", batch_first=True)
    base = torch.rand(2, E, dtype=torch.float64) + 0.5
    with torch.no_grad():
        emb.weight.copy_(torch.cat([base, base + torch.from_numpy(V_PLURAL),
                                    torch.rand(2, E, dtype=torch.float64) + 0.5]))
        rnn.weight_ih_l0.copy_(torch.rand(H, E) * 0.5 + 0.1)
        rnn.weight_hh_l0.copy_(torch.rand(H, H) * 0.2)
        rnn.bias_ih_l0.fill_(0.1)
        rnn.bias_hh_l0.fill_(0.0)
    return memlens.wrap(emb, rnn), emb, rnn


TAG = {0: "NN", 1: "NN", 2: "NNS", 3: "NNS", 4: "VB", 5: "VBD"}


def linear_result(**kw):
    model, emb, rnn = linear_model()
    ids = torch.randint(0, 6, (240,), generator=torch.Generator().manual_seed(1))
    labels = [TAG[i] for i in ids.tolist()]
    r = memlens.state_gradients(model, ids, K, classes=labels,
                                options=as_options(dtype="float64", blocks=6, bootstrap=40),
                                **kw)
    return r, emb, rnn, labels


def expected(rnn, emb, d, k):
    """relmem(tau) and |V_k^T dn| by numpy: Gn = W^tau U L (L L^T = cov of the table)."""
    W = rnn.weight_hh_l0.detach().double().numpy()
    U = rnn.weight_ih_l0.detach().double().numpy()
    L = np.linalg.cholesky(np.cov(emb.weight.detach().double().numpy(), rowvar=False))
    dn = np.linalg.solve(L, d)
    dn /= np.linalg.norm(dn)
    rel, align = [], []
    for tau in range(K + 1):
        gn = np.linalg.matrix_power(W, tau) @ U @ L
        _, s, vt = np.linalg.svd(gn)
        rel.append(np.linalg.norm(gn @ dn) / s[0])
        align.append(np.linalg.norm(vt[:k] @ dn))
    return np.array(rel), np.array(align)


def test_hand_computation_on_a_linear_model():
    r, emb, rnn, _ = linear_result()
    assert np.allclose(r.direction("NNS", "NN"), V_PLURAL, atol=1e-7)  # planted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrustWarning)  # the preset's absent tags
        frame = r.contrasts("ptb", k=2)
    assert list(frame["contrast"].unique()) == ["NNS-NN", "VBD-VB"]
    nns = frame[frame.contrast == "NNS-NN"].sort_values("delay")
    rel, align = expected(rnn, emb, V_PLURAL, 2)
    assert np.allclose(nns["relmem"], rel, rtol=1e-6) and np.allclose(nns["alignment"], align)
    assert (nns["k"] == 2).all() and np.all((nns["share"] > 0) & (nns["share"] <= 1))
    # the measures of the result agree (the gradient is the same for every class here)
    assert np.allclose(nns["relmem"], r.relative_memory(V_PLURAL, "NN"))
    assert np.allclose(nns["align1"], r.alignment(V_PLURAL, 1, "NNS")[0][:, 0])
    # every block has the same gradient: the bootstrap interval collapses onto the value
    ci = nns[nns.delay.isin(r.raw.ci_delays)]
    assert np.allclose(ci["relmem_low"], ci["relmem"]) and np.allclose(ci["relmem_high"],
                                                                       ci["relmem"])
    assert ci["relmem_se"].abs().max() < 1e-9
    assert nns[~nns.delay.isin(r.raw.ci_delays)]["relmem_low"].isna().all()
    assert (nns["count"].to_numpy() == (r.raw.class_counts[r.class_names.index("NN")]
                                        + r.raw.class_counts[r.class_names.index("NNS")])).all()


def test_pooled_average_and_intervals_on_an_lstm():
    """Nonlinear: the gradient is averaged over the words of A and B (pooled sums)."""
    torch.manual_seed(3)
    model = LanguageModel({"arch": "lstm", "layers": 1, "emb": 3, "hidden": 5}, 8).eval()
    ids = torch.randint(0, 8, (300,), generator=torch.Generator().manual_seed(2))
    tags = ["NN", "NN", "NNS", "NNS", "VB", "VBD", "VBZ", "VBP"]
    r = memlens.state_gradients(model, ids, 3, classes=[tags[i] for i in ids.tolist()],
                                options=as_options(blocks=8))
    f = r.contrasts([("NNS", "NN"), "VBZ-VBP"], k=3, resamples=60)
    a, b = r.class_names.index("NNS"), r.class_names.index("NN")
    d = r.direction("NNS", "NN")
    dn = r.normalization.Z @ d / np.linalg.norm(r.normalization.Z @ d)
    for tau in range(4):
        g = (r.raw.class_sums[a, tau] + r.raw.class_sums[b, tau]) / (
            r.raw.class_counts[a, tau] + r.raw.class_counts[b, tau])
        gn = g @ r.normalization.D
        row = f[(f.contrast == "NNS-NN") & (f.delay == tau)].iloc[0]
        assert np.isclose(row["relmem"], np.linalg.norm(gn @ dn) / np.linalg.norm(gn, 2))
        assert row["relmem_low"] <= row["relmem_high"] and row["relmem_se"] > 0
        assert 0 <= row["alignment_low"] <= row["alignment_high"] <= 1 + 1e-9
    # the same seed gives the same intervals; another seed others
    again = r.contrasts([("NNS", "NN"), "VBZ-VBP"], k=3, resamples=60)
    assert again.equals(f)
    other = r.contrasts("NNS-NN", k=3, resamples=60, seed=7)
    assert not np.allclose(other["relmem_low"], f[f.contrast == "NNS-NN"]["relmem_low"])


# -- parsing ------------------------------------------------------------------------------------
def test_preset_parsing():
    names = PTB_TAGS
    assert [c.name for c in parse_contrasts("ptb", names)] == [
        "NNS-NN", "NNPS-NNP", "VBD-VB", "VBZ-VBP", "VBG-VB", "VBN-VB", "JJR-JJ", "JJS-JJ",
        "RBR-RB"]
    assert [c.name for c in parse_contrasts("PTB", names)] == [f"{a}-{b}" for a, b in
                                                               PRESETS["ptb"]]
    upos = ["ADJ", "ADV", "AUX", "NOUN", "PROPN", "VERB"]
    assert [c.name for c in parse_contrasts("upos", upos)][:2] == ["NOUN-VERB", "NOUN-ADJ"]
    mixed = parse_contrasts("ptb, NNS-NN ,VB-NN", names)  # repeats dropped, order kept
    assert [c.name for c in mixed][0] == "NNS-NN" and mixed[-1].name == "VB-NN"
    assert len(mixed) == 10 and not mixed[-1].preset and mixed[0].preset
    assert [c.name for c in parse_contrasts([("JJ", "RB"), "NN-VB"], names)] == ["JJ-RB",
                                                                               "NN-VB"]
    # tags with a hyphen: the one split that names two classes
    assert [(c.a, c.b) for c in parse_contrasts("-LRB--NN", ["-LRB-", "NN"])] == [("-LRB-",
                                                                                "NN")]
    # preset pairs missing a class are left for the computation to report, not an error
    assert [c.name for c in parse_contrasts("ptb", ["NN", "NNS", "DT"])] == [
        "NNS-NN", "NNPS-NNP", "VBD-VB", "VBZ-VBP", "VBG-VB", "VBN-VB", "JJR-JJ", "JJS-JJ",
        "RBR-RB"]


@pytest.mark.parametrize("spec,names,message", [
    ("NN", PTB_TAGS, "give two classes as A-B"),
    ("NN-NN", PTB_TAGS, "a class against itself"),
    ("NSS-NN", PTB_TAGS, "class 'NSS' is not among the classes"),
    ("NN-VB,", PTB_TAGS, "an empty pair"),
    ("", PTB_TAGS, "an empty pair"),
    (5, PTB_TAGS, "contrasts must be a preset"),
    ([("NN",)], PTB_TAGS, "a contrast must be 'A-B'"),
    ([("NN", "XX")], PTB_TAGS, "class 'XX' is not among"),
    ("ptb", ["ADJ", "NOUN", "VERB"], "ptb needs PTB tags"),
    ("upos", PTB_TAGS, "upos needs UPOS tags"),
    ("NNS-NN", [], "contrasts need word classes"),
    ("A-B-C", ["A", "B", "A-B", "B-C", "C"], "ambiguous"),
])
def test_bad_pairs(spec, names, message):
    with pytest.raises(MemlensError, match=message) as err:
        parse_contrasts(spec, names)
    assert "\n" not in str(err.value)


def test_bad_pairs_refused_before_the_accumulation():
    model, _, _ = linear_model()
    with pytest.raises(MemlensError, match="not among the classes"):
        memlens.state_gradients(model, [0, 1, 2, 3, 4, 5] * 4, 2, classes=["NN"] * 24,
                                contrasts="NN-VBX",
                                engine=memlens.analyses.gradients.EngineSettings(
                                    on_chunk=lambda _p: pytest.fail("accumulated")))
    with pytest.raises(MemlensError, match="need word classes"):
        memlens.state_gradients(model, [0, 1, 2, 3], 1, contrasts="ptb")


def test_a_class_without_words_is_one_line():
    r, *_ = linear_result(class_names=["NN", "NNS", "VB", "VBD", "RBR", "RB"])
    with pytest.warns(TrustWarning) as rec:
        f = r.contrasts("ptb")
    texts = [str(w.message) for w in rec if issubclass(w.category, TrustWarning)]
    assert len(texts) == 1 and "\n" not in texts[0]
    assert "RBR-RB (classes RBR and RB have no words in the data)" in texts[0]
    assert "NNPS-NNP (classes NNPS and NNP not among the classes)" in texts[0]
    assert set(f["contrast"]) == {"NNS-NN", "VBD-VB"}
    with pytest.warns(TrustWarning, match="RBR has no words"):  # a named pair: the same line
        assert r.contrasts("RBR-NN").empty


# -- the result format --------------------------------------------------------------------------
def test_save_load_round_trip_and_report(tmp_path):
    from memlens.report.html import build_report

    r, *_ = linear_result(contrasts="NNS-NN,VBD-VB")
    assert r.settings["contrasts"] == "NNS-NN,VBD-VB"
    frame = r.contrasts("NNS-NN,VBD-VB")
    r.save(tmp_path / "out")
    saved = load_result(tmp_path / "out")
    back = saved_frame(saved)
    assert back.shape == frame.shape and list(back.columns) == list(frame.columns)
    assert np.allclose(back["relmem"], frame["relmem"])
    assert np.allclose(back["alignment"], frame["alignment"])
    assert saved_frame(r).equals(frame)
    assert saved.settings_info()["contrasts"] == "NNS-NN,VBD-VB"
    means = frame[frame.delay > 0].groupby("contrast")["relmem"].mean()
    assert saved.summary()["contrast_best"] == means.idxmax()
    assert np.isclose(saved.summary()["contrast_NNS-NN_relmem_mean"], means["NNS-NN"])
    csv = (tmp_path / "out" / "contrasts.csv").read_text().splitlines()
    assert csv[0].startswith("contrast,a,b,delay,count,relmem") and len(csv) == 1 + 2 * (K + 1)
    assert "contrasts.png" in {p["file"] for p in saved.plots}
    section = saved.extra()["contrasts"]
    assert section["title"].startswith("Tag contrasts") and len(section["table"]) == 2
    build_report([tmp_path / "out"], tmp_path / "report.html")
    assert "Tag contrasts" in (tmp_path / "report.html").read_text()
    # without contrasts nothing changes
    plain, *_ = linear_result()
    assert "contrasts" not in plain.settings and "contrasts" not in plain.extra()
    assert not any(k.startswith("contrast") for k in plain.summary())


# -- the CLI --------------------------------------------------------------------------------------
SENT = [("the", "DET", "DT"), ("cat", "NOUN", "NN"), ("sees", "VERB", "VBZ"),
        ("dogs", "NOUN", "NNS"), ("run", "VERB", "VBP"), ("and", "CCONJ", "CC"),
        ("run", "NOUN", "NN")]
CONLLU = "".join(f"# sent_id = {s}\n" + "".join(
    f"{i + 1}\t{w}\t_\t{u}\t{x}\t_\t0\t_\t_\t_\n" for i, (w, u, x) in enumerate(SENT)) + "\n"
    for s in range(10))


@pytest.fixture
def tiny(tmp_path):
    words = ["the", "cat", "sees", "dogs", "run", "and"]
    vocab = Vocab(["<unk>", "<eos>", *words], [5, 12] + [10 - i for i in range(len(words))])
    torch.manual_seed(0)
    model = LanguageModel({"arch": "lstm", "layers": 1, "emb": 3, "hidden": 4}, len(vocab))
    model.vocab = vocab
    save_checkpoint(tmp_path / "m.pt", model)
    (tmp_path / "c.conllu").write_text(CONLLU)
    return tmp_path


def cli(tmp, *extra, out="out"):
    return main(["gradients", "--model", str(tmp / "m.pt"), "--corpus", str(tmp / "c.conllu"),
                 "--format", "conllu", "--out", str(tmp / out), "--no-progress",
                 "--bootstrap", "20", "--max-delay", "3", *extra])


def test_cli_contrasts(tiny, capsys):
    assert cli(tiny, "--classes", "xpos", "--contrasts", "ptb") == 0
    cap = capsys.readouterr()
    warn = [line for line in cap.err.splitlines() if "contrasts left out" in line]
    assert len(warn) == 1 and "VBD-VB" in warn[0] and "memlens: warning:" in warn[0]
    assert "tag contrasts: best remembered" in cap.out
    doc = json.loads((tiny / "out" / "result.json").read_text())
    assert doc["settings"]["contrasts"] == "ptb"
    assert {r["contrast"] for r in doc["contrast_table"]} == {"NNS-NN", "VBZ-VBP"}
    assert (tiny / "out" / "contrasts.csv").exists() and "contrast_best" in doc["summary"]
    assert cli(tiny, "--classes", "xpos", "--contrasts", "NNS-NN,VBZ-VBP", out="o2") == 0
    rows = json.loads((tiny / "o2" / "result.json").read_text())["contrast_table"]
    assert len(rows) == 2 * 4 and all(0 <= r["relmem"] <= 1 + 1e-9 for r in rows)


@pytest.mark.parametrize("args,message", [
    (["--classes", "xpos", "--contrasts", "NNS-XX"], "class 'XX' is not among the classes"),
    (["--classes", "upos", "--contrasts", "ptb"], "ptb needs PTB tags"),
    (["--contrasts", "ptb"], "contrasts need word classes"),
    (["--classes", "xpos", "--tagset", "upos"], "--tagset applies to --classes lexicon:FILE"),
    (["--tagset", "upos"], "--tagset applies to --classes lexicon:FILE.conllu"),
])
def test_cli_bad_contrasts(tiny, capsys, args, message):
    assert cli(tiny, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tiny / "out").exists()


def test_cli_unknown_tagset(tiny, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(tiny, "--classes", "xpos", "--tagset", "ufeats")
    assert exc.value.code == 2 and "invalid choice: 'ufeats'" in capsys.readouterr().err


# -- lexicons from a tagged corpus ----------------------------------------------------------------
LEXICON_CONLLU = """# sent_id = 1
1\tRun\trun\tVERB\tVB\t_\t0\t_\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t0\t_\t_\t_
3\tn't\tnot\tPART\tRB\t_\t0\t_\t_\t_
4\truns\trun\tNOUN\tNNS\t_\t0\t_\t_\t_
4.1\tghost\t_\tNOUN\tNN\t_\t_\t_\t_\t_

# sent_id = 2
1\trun\trun\tNOUN\tNN\t_\t0\t_\t_\t_
2\truns\trun\tVERB\tVBZ\t_\t0\t_\t_\t_
3\trun\trun\tVERB\tVB\t_\t0\t_\t_\t_
4\tweird\t_\tX\t_\t_\t0\t_\t_\t_

"""


def test_lexicon_from_conllu(tmp_path):
    f = tmp_path / "small.conllu"
    f.write_text(LEXICON_CONLLU)
    lex = lexicon_from_conllu(f)
    assert lex == {"Run": ["VB"], "do": ["VBP"], "n't": ["RB"], "runs": ["NNS", "VBZ"],
                   "run": ["NN", "VB"], "weird": []}  # first-seen order; no MWT, no 4.1
    # the same structure as the original format read back
    orig = tmp_path / "lex.txt"
    orig.write_text("Run ['VB']\ndo ['VBP']\nn't ['RB']\nruns ['NNS', 'VBZ']\n"
                    "run ['NN', 'VB']\nweird not in list\n")
    assert read_lexicon(orig) == lex
    assert lexicon_from_conllu(f, "upos")["runs"] == ["NOUN", "VERB"]
    assert lexicon_from_conllu(f, lowercase=True)["run"] == ["VB", "NN"]
    # detection: by name, or by a CoNLL-U token line under another name
    renamed = tmp_path / "treebank.txt"
    renamed.write_text(LEXICON_CONLLU)
    assert is_conllu(f) and is_conllu(renamed) and not is_conllu(orig)
    assert load_lexicon(renamed) == lex and load_lexicon(orig) == lex
    with pytest.raises(MemlensError, match="--tagset applies to a CoNLL-U file"):
        load_lexicon(orig, "upos")
    with pytest.raises(MemlensError, match="unknown tag set"):
        lexicon_from_conllu(f, "feats")
    untagged = tmp_path / "u.conllu"
    untagged.write_text("1\ta\t_\t_\t_\t_\t0\t_\t_\t_\n\n")
    with pytest.raises(MemlensError, match="no token has a XPOS tag"):
        lexicon_from_conllu(untagged)


def test_cli_lexicon_from_conllu(tiny, capsys):
    """Classes from the tags each word is seen with: 'run' (NN and VBP) counts for both."""
    from memlens.analyses.gradients.classes import token_classes

    (tiny / "g.txt").write_text("nouns NN NNS\nverbs VBZ VBP\n")
    spec = f"lexicon:{tiny / 'c.conllu'}"
    tokens = [w for w, _, _ in SENT]
    names, per = token_classes(spec, tokens)
    assert names == ["CC", "DT", "NN", "NNS", "VBP", "VBZ"] and per[4] == ["VBP", "NN"]
    names, per = token_classes(spec, tokens, tagset="upos")
    assert per[4] == ["VERB", "NOUN"]
    names, per = token_classes(spec + f"+groups:{tiny / 'g.txt'}", tokens)
    assert names == ["nouns", "verbs"] and per[4] == ["nouns", "verbs"]
    assert cli(tiny, "--classes", spec, "--contrasts", "NNS-NN,VBZ-VBP") == 0
    doc = json.loads((tiny / "out" / "result.json").read_text())
    counts = {r["class"]: r["count"] for r in doc["table"] if r["delay"] == 0}
    assert counts["NN"] == 30 and counts["VBP"] == 20  # cat + 2 x run; run (twice a sentence)
    assert doc["settings"]["classes_spec"] == spec
    assert cli(tiny, "--classes", spec, "--tagset", "upos", "--contrasts", "upos",
               out="o2") == 0
    assert "NOUN-VERB" in {r["contrast"] for r in
                           json.loads((tiny / "o2" / "result.json").read_text())
                           ["contrast_table"]}


def test_lexicon_from_ewt_train():
    if not EWT_TRAIN.exists():
        pytest.skip(f"{EWT_TRAIN} not available (../shared/data absent)")
    lex = lexicon_from_conllu(EWT_TRAIN)
    assert 15000 < len(lex) < 30000
    assert "DT" in lex["the"] and {"NN", "VB"} <= set(lex["run"])
    several = sum(len(t) > 1 for t in lex.values())
    assert 0.03 < several / len(lex) < 0.3  # a minority of words has several tags
    tags = {t for ts in lex.values() for t in ts}
    assert set(PTB_TAGS) <= tags
    upos = lexicon_from_conllu(EWT_TRAIN, "upos")
    assert upos.keys() == lex.keys() and "NOUN" in upos["run"]
