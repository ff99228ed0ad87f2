"""Corpora, vocabularies, CoNLL-U, lexicon, batching, synthetic corpus."""

from __future__ import annotations

import pytest
import torch

from memlens.core.errors import MemlensError
from memlens.data import (
    EOS,
    Vocab,
    batchify,
    bptt_windows,
    load_corpus,
    make_synthetic,
    read_conllu,
    read_groups,
    read_lexicon,
    tokenize_lines,
)


def test_word_and_char_units_from_the_same_text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(" = Title = \n\nthe cat  sat\n")
    words = load_corpus(path, "text", "word").tokens
    chars = load_corpus(path, "text", "char").tokens
    assert words == ["=", "Title", "=", EOS, "the", "cat", "sat", EOS]
    assert chars == list("= Title =") + [EOS] + list("the cat sat") + [EOS]


def test_vocab_cap_min_freq_and_oov():
    tokens = "a a a b b c d".split() + [EOS]
    v = Vocab.build(tokens, max_size=4)
    assert v.itos == ["<unk>", "<eos>", "a", "b"]
    assert v.counts == [2, 1, 3, 2]  # c and d fold into <unk>
    assert v.encode(["a", "zzz", "b"]).tolist() == [2, 0, 3]
    assert v.oov_rate(["a", "c", "d", "b", EOS]) == 0.5
    assert Vocab.build(tokens, min_freq=2).itos == ["<unk>", "<eos>", "a", "b"]
    assert Vocab.from_dict(v.to_dict()).itos == v.itos
    with pytest.raises(MemlensError, match="at least 3"):
        Vocab.build(tokens, max_size=2)


def test_batchify_and_bptt_carry_contiguous_streams():
    ids = torch.arange(23)
    data = batchify(ids, 2)
    assert data.shape == (11, 2)
    assert data[:, 1].tolist() == list(range(11, 22))
    windows = list(bptt_windows(data, 4))
    assert [w[0].shape[0] for w in windows] == [4, 4, 2]
    seen = torch.cat([w[0] for w in windows])
    targets = torch.cat([w[1] for w in windows])
    assert torch.equal(seen[1:], targets[:-1])


def test_conllu_multiword_and_empty_nodes(tmp_path):
    path = tmp_path / "x.conllu"
    path.write_text(
        "# text = I can't go\n"
        "1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n"
        "2-3\tcan't\t_\t_\t_\t_\t_\t_\t_\t_\n"
        "2\tca\tcan\tAUX\tMD\t_\t4\taux\t_\t_\n"
        "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n"
        "3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t0:root\t_\n"
        "4\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n\n")
    tokens, tags = read_conllu(path)
    assert tokens == ["I", "ca", "n't", "go", EOS]
    assert tags["upos"] == ["PRON", "AUX", "PART", "VERB", None]
    assert tags["xpos"] == ["PRP", "MD", "RB", "VB", None]
    chars = load_corpus(path, "conllu", "char")
    assert chars.tokens[:4] == ["I", " ", "c", "a"]
    assert chars.tags["upos"][:4] == ["PRON", None, "AUX", "AUX"]


def test_conllu_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.conllu"
    path.write_text("1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\n2\tbroken line\n")
    with pytest.raises(MemlensError, match=r"bad.conllu:2: malformed CoNLL-U line"):
        read_conllu(path)


def test_conllu_round_trip_on_ud_ewt(ewt_dev):
    """Every syntactic word of the treebank appears once, in order, with its gold tags."""
    tokens, tags = read_conllu(ewt_dev)
    expected = []
    for line in ewt_dev.read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) == 10 and cols[0].isdigit():
            expected.append((cols[1], cols[3], cols[4]))
    got = [(t, u, x) for t, u, x in zip(tokens, tags["upos"], tags["xpos"]) if t != EOS]
    assert got == expected
    assert len(got) > 20000
    assert tokens.count(EOS) == sum(1 for line in ewt_dev.read_text().splitlines()
                                    if line.startswith("# sent_id"))


def test_lexicon_and_groups(tmp_path):
    lex = tmp_path / "lex.txt"
    lex.write_text("run\tNN VB\nthe\tDT\nrun\tVBP\n")
    assert read_lexicon(lex) == {"run": ["NN", "VB", "VBP"], "the": ["DT"]}
    groups = tmp_path / "groups.txt"
    groups.write_text("nouns\tNN NNS NNP NNPS\nverbs: VB VBD\n")
    assert read_groups(groups) == {"nouns": ["NN", "NNS", "NNP", "NNPS"], "verbs": ["VB", "VBD"]}
    bad = tmp_path / "badlex.txt"
    bad.write_text("lonely\n")
    with pytest.raises(MemlensError, match="badlex.txt:1: malformed lexicon line"):
        read_lexicon(bad)


@pytest.mark.parametrize("content,message", [
    (None, "not found"), (b"", "is empty"), (b"\x00\x01\x02abc", "looks binary"),
    (b"caf\xe9 au lait\n", r"not valid UTF-8 \(line 1\)")])
def test_bad_corpus_files(tmp_path, content, message):
    path = tmp_path / "c.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MemlensError, match=message):
        load_corpus(path)


def test_synthetic_corpus_known_answer_and_determinism():
    a = make_synthetic(50, distance=4, seed=3)
    b = make_synthetic(50, distance=4, seed=3)
    c = make_synthetic(50, distance=4, seed=4)
    assert a.tokens == b.tokens and a.tokens != c.tokens
    for i in range(len(a.tokens)):
        if a.tags["role"][i] == "noun":
            verb = a.tokens[i + 4]
            assert verb == ("is" if a.tags["number"][i] == "sg" else "are")
    assert len(a.tokens) == 50 * 6
    assert tokenize_lines(["a b", ""], "word") == ["a", "b", EOS]
