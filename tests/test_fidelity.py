"""Fidelity to the original state-gradients code (Verwimp et al., lverwimp/state_gradients):
its word -> possible-tags file, type-level class-mean embeddings (--avg_emb) and its pair set
(source and target inside one truncated-BPTT segment)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import memlens
from memlens.analyses.gradients import EngineSettings, metrics
from memlens.analyses.gradients.classes import token_classes
from memlens.cli import main
from memlens.core.errors import MemlensError
from memlens.data import Vocab, read_lexicon
from memlens.models import LanguageModel, as_encoder, save_checkpoint
from memlens.protocol import Site
from memlens.runtime.options import as_options
from memlens.runtime.progress import Interrupted

FIXTURES = Path(__file__).parent / "fixtures"
LEXICON = FIXTURES / "ptb_words+pos.txt"  # the original's format, named like its PTB file
GROUPS = FIXTURES / "groups.txt"
V, E, H = 11, 3, 5


def tiny_lm(arch: str, layers: int = 2, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel({"arch": arch, "layers": layers, "emb": E, "hidden": H}, V).eval()


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def segment_brute_force(model, ids: torch.Tensor, K: int, layer: int, readout: str, S: int,
                        memberships: list[list[int]], n_classes: int, n_segments: int):
    """The original's estimator by autograd (float64): the stream is cut into segments of S
    tokens, the state is carried from one segment to the next but detached (truncated BPTT),
    and within each segment every target i gets d s_i / d x_{i-tau} for tau <= min(i, K), the
    union of the original's runs over time_step = 0..S-1. Returns (sums, counts, class sums,
    class counts): S' x H x E, S', C x S' x H x E, C x S' with S' = K + 1."""
    enc = copy.deepcopy(as_encoder(model)).double()
    emb = enc.embedding.weight.detach()
    D = K + 1
    sums, cnt = np.zeros((D, H, E)), np.zeros(D)
    csums, ccnt = np.zeros((n_classes, D, H, E)), np.zeros((n_classes, D))
    carried = enc.init_state(1, dtype=torch.float64)
    for seg in range(n_segments):
        a = seg * S
        X = emb[ids[a:a + S]].clone()
        start = carried

        def states(X, start=start):
            st, out = start, []
            for i in range(X.shape[0]):
                st = enc.step(X[i:i + 1], st)
                out.append(enc.layers[layer].readout(st[layer], readout)[0])
            return torch.stack(out)

        J = torch.autograd.functional.jacobian(states, X, vectorize=True).numpy()
        with torch.no_grad():
            for i in range(X.shape[0]):
                carried = enc.step(X[i:i + 1], carried)
        carried = [tuple(s.detach() for s in layer_state) for layer_state in carried]
        for i in range(X.shape[0]):
            for tau in range(min(i, K) + 1):
                g = J[i, :, i - tau]
                sums[tau] += g
                cnt[tau] += 1
                for c in memberships[a + i - tau]:
                    csums[c, tau] += g
                    ccnt[c, tau] += 1
    return sums, cnt, csums, ccnt


# -- (c) the segment pair set ---------------------------------------------------------------
@pytest.mark.parametrize("arch,layer,readout,method", [
    ("lstm", 1, "cell", "auto"), ("lstm", 0, "hidden", "auto"), ("gru", 1, "hidden", "auto"),
    ("rnn", 1, "hidden", "auto"), ("lstm", 1, "hidden", "generic")])
def test_segment_equals_original_pair_set(arch, layer, readout, method):
    model = tiny_lm(arch)
    S, K, T = 7, 4, 40
    ids = torch.randint(0, V, (T,), generator=torch.Generator().manual_seed(2))
    labels = [["a"] if i % 3 == 0 else (["a", "b"] if i % 3 == 1 else []) for i in ids.tolist()]
    memb = [[{"a": 0, "b": 1}[c] for c in lab] for lab in labels]
    # the original drops the incomplete last segment and the last complete one (it needs the
    # next word as target): cutting the stream to S * (T // S - 1) tokens reproduces that
    n_seg = T // S - 1
    ref, cnt, csum, ccnt = segment_brute_force(model, ids, K, layer, readout, S, memb, 2, n_seg)
    for chunk, flush in ((5, 3), (256, 256)):
        r = memlens.state_gradients(model, ids[:S * n_seg], K, site=Site(layer, readout),
                                    classes=labels[:S * n_seg], method=method,
                                    context=f"segment:{S}",
                                    options=as_options(dtype="float64"),
                                    engine=EngineSettings(chunk_size=chunk, flush_every=flush))
        assert r.settings["segment"] == S
        assert np.array_equal(r.raw.counts, cnt)
        assert rel_err(r.means(), ref / cnt[:, None, None]) <= 1e-10
        for c in range(2):
            assert np.array_equal(r.raw.class_counts[c], ccnt[c])
            assert rel_err(r.raw.class_sums[c], csum[c]) <= 1e-10
    # the whole stream: every segment, the partial last one included
    full = segment_brute_force(model, ids, K, layer, readout, S, memb, 2, -(-T // S))
    r = memlens.state_gradients(model, ids, K, site=Site(layer, readout), method=method,
                                context=f"segment:{S}", options=as_options(dtype="float64"))
    assert np.array_equal(r.raw.counts, full[1])
    assert rel_err(r.means(), full[0] / full[1][:, None, None]) <= 1e-10


def test_segment_counts_drop_share_and_identity():
    model = tiny_lm("lstm", layers=1)
    S, K, T = 10, 6, 100
    ids = torch.randint(0, V, (T,), generator=torch.Generator().manual_seed(3))
    hidden = Site(readout="hidden")
    r = memlens.state_gradients(model, ids, K, site=hidden, context=f"segment:{S}")
    full = memlens.state_gradients(model, ids, K, site=hidden)
    # whole segments: a share tau / S of the targets loses its pair at delay tau
    assert np.array_equal(r.raw.counts, [T - T // S * tau for tau in range(K + 1)])
    assert np.allclose(1 - r.raw.counts / full.raw.counts[0], np.arange(K + 1) / S)
    assert full.settings["segment"] is None
    # a segment as long as the stream is the default pair set, bit for bit
    same = memlens.state_gradients(model, ids, K, site=hidden, context=f"segment:{T}")
    for name in ("sums", "counts", "block_sums", "block_counts"):
        assert np.array_equal(getattr(same.raw, name), getattr(full.raw, name)), name
    with pytest.raises(MemlensError, match="not shorter than the segment"):
        memlens.state_gradients(model, ids, S, site=hidden, context=f"segment:{S}")
    with pytest.raises(MemlensError, match="context length must be a positive"):
        memlens.state_gradients(model, ids, K, site=hidden, context="segment:0")


def test_segment_resume_is_identical_and_fingerprinted(tmp_path):
    model = tiny_lm("gru", layers=1)
    ids = torch.randint(0, V, (60,), generator=torch.Generator().manual_seed(4))
    kw = {"site": Site(readout="hidden"), "classes": [str(i % 3) for i in ids.tolist()],
          "context": "segment:9"}
    ck = tmp_path / "partial.pt"

    def run(chunk_size=256, **run_options):
        return memlens.state_gradients(model, ids, 4, options=as_options(blocks=4, **run_options),
                                       engine=EngineSettings(chunk_size, flush_every=8), **kw)

    straight = run()
    with pytest.raises(Interrupted):
        run(5, checkpoint=ck, stop_after=23)
    with pytest.raises(MemlensError, match="different model"):
        kw["context"] = "segment:10"
        run(checkpoint=ck, resume=True)
    kw["context"] = "segment:9"
    resumed = run(checkpoint=ck, resume=True)
    for name in ("sums", "counts", "class_sums", "class_counts", "block_sums", "block_counts"):
        assert np.array_equal(getattr(straight.raw, name), getattr(resumed.raw, name)), name


# -- (a) type-level class-mean embeddings ---------------------------------------------------
def test_type_and_token_weighted_directions():
    model = tiny_lm("lstm", layers=1)
    table = model.encoder.embedding.weight.detach().double().numpy()
    ids = torch.tensor([3, 3, 3, 3, 5, 7, 7, 2, 4, 4, 6, 9, 9, 9, 8, 1])
    labels = [["N"] if i in (3, 5, 7) else (["V", "N"] if i == 4 else (["V"] if i > 5 else []))
              for i in ids.tolist()]
    hidden = Site(readout="hidden")
    by_type = memlens.state_gradients(model, ids, 2, site=hidden, classes=labels)
    by_token = memlens.state_gradients(model, ids, 2, site=hidden, classes=labels,
                                       direction_weighting="token")
    assert by_type.settings["direction_weighting"] == "type"
    assert by_token.settings["direction_weighting"] == "token"
    # by hand: distinct vocabulary ids of each class, each once; or every occurrence
    n_type = table[[3, 5, 7, 4]].mean(0)
    v_type = table[[4, 6, 9, 8]].mean(0)
    n_token = table[[3, 3, 3, 3, 5, 7, 7, 4, 4]].mean(0)
    v_token = table[[4, 4, 6, 9, 9, 9, 8]].mean(0)
    names = by_type.class_names
    assert names == ["N", "V"]
    assert np.allclose(by_type.class_embeddings, [n_type, v_type], rtol=1e-6)
    assert np.allclose(by_token.class_embeddings, [n_token, v_token], rtol=1e-6)
    assert np.allclose(by_type.direction("N", "V"), n_type - v_type, rtol=1e-6)
    assert np.allclose(by_token.direction("N", "V"), n_token - v_token, rtol=1e-6)
    # the gradients themselves do not depend on the weighting
    assert np.array_equal(by_type.raw.sums, by_token.raw.sums)
    rel_type = by_type.relative_memory(by_type.direction("N", "V"))
    rel_token = by_token.relative_memory(by_token.direction("N", "V"))
    assert rel_type.shape == rel_token.shape == (3,) and not np.allclose(rel_type, rel_token)
    with pytest.raises(MemlensError, match="unknown direction weighting"):
        memlens.state_gradients(model, ids, 2, site=hidden, direction_weighting="word")
    empty = metrics.class_mean_embeddings(table, ids.numpy(), [[]] * 16, 1, "type")
    assert np.isnan(empty).all()


# -- (b) the original lexicon format and tag groups on lexicon tags -------------------------
def test_original_lexicon_format():
    lex = read_lexicon(LEXICON)
    assert lex == {
        "the": ["DT", "NNP", "JJ"], "<unk>": [], "<eos>": [], "N": ["CD"], "$": ["$"],
        "'s": ["POS", "VBZ", "PRP"], "cat": ["NN"], "cats": ["NNS"], "dog": ["NN", "VB"],
        "runs": ["VBZ", "NNS"], "run": ["NN", "VB", "VBP", "VBN", "JJ"],
        "needed": ["VBN", "JJ", "VBD"], "''": ["''"], ",": [","],
        "much": ["JJ", "DT", "NN", "RB"]}
    assert len({t for ts in lex.values() for t in ts}) == 17  # no "['NN'," pieces


def test_lexicon_plus_groups(tmp_path):
    tokens = ["the", "cat", "runs", ",", "dog", "needed", "much", "<unk>", "zebra", "run"]
    names, per = token_classes(f"lexicon:{LEXICON}", tokens, log=lambda _m: None)
    assert "[" not in "".join(names) and per[7] == [] and per[8] == []
    assert per[2] == ["VBZ", "NNS"] and per[3] == [","]
    warnings: list[str] = []
    names, per = token_classes(f"lexicon:{LEXICON}+groups:{GROUPS}", tokens,
                               log=warnings.append)
    assert names == ["nouns", "verbs"]
    assert per == [["nouns"], ["nouns"], ["nouns", "verbs"], [], ["nouns", "verbs"], ["verbs"],
                   ["nouns"], [], [], ["nouns", "verbs"]]
    assert len(warnings) == 2 and "NNPS" in warnings[0] and "VBG" in warnings[1]
    with pytest.raises(MemlensError, match=r"\+groups:FILE applies to"):
        token_classes(f"freq:2+groups:{GROUPS}", tokens)
    upos_tags = {"upos": ["DET", "NOUN", "VERB", None], "xpos": ["DT", "NN", "VBZ", None]}
    names, per = token_classes(f"xpos+groups:{GROUPS}", tokens[:4], upos_tags,
                               log=warnings.append)
    assert per == [[], ["nouns"], ["verbs"], []]


def test_cli_lexicon_groups_segment_and_weighting(tmp_path, capsys):
    words = ["the", "cat", "cats", "dog", "runs", "run", "needed", "much", ","]
    vocab = Vocab(["<unk>", "<eos>", *words], [3, 9] + [20 - i for i in range(len(words))])
    torch.manual_seed(1)
    model = LanguageModel({"arch": "lstm", "layers": 1, "emb": 3, "hidden": 4}, len(vocab))
    model.vocab = vocab
    save_checkpoint(tmp_path / "m.pt", model)
    sentences = ["the cat runs", "the dog needed much", "cats run , the dog runs"] * 6
    (tmp_path / "c.txt").write_text("\n".join(sentences) + "\n")
    spec = f"lexicon:{LEXICON}+groups:{GROUPS}"
    base = ["gradients", "--model", str(tmp_path / "m.pt"), "--corpus", str(tmp_path / "c.txt"),
            "--classes", spec, "--direction", "nouns,verbs", "--max-delay", "3",
            "--no-progress", "--bootstrap", "10"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--context", "segment:8",
                 "--direction-weighting", "token"]) == 0
    a = json.loads((tmp_path / "a" / "result.json").read_text())
    b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert a["settings"]["segment"] is None and a["settings"]["direction_weighting"] == "type"
    assert b["settings"]["segment"] == 8 and b["settings"]["direction_weighting"] == "token"
    assert a["settings"]["class_names"] == ["nouns", "verbs"]
    rows_a = {(r["delay"], r["class"]): r for r in a["table"]}
    rows_b = {(r["delay"], r["class"]): r for r in b["table"]}
    tokens = a["corpus"]["tokens"]
    assert rows_a[(3, "all")]["count"] == tokens - 3
    assert rows_b[(3, "all")]["count"] == sum(t % 8 >= 3 for t in range(tokens))
    assert rows_a[(0, "all")]["relmem_nouns-verbs"] != rows_b[(0, "all")]["relmem_nouns-verbs"]
    assert main([*base, "--out", str(tmp_path / "c"), "--context", "segment:3"]) == 2
    assert "not shorter than the segment" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
