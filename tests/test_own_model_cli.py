"""The CLI analyses the user's own model: --model FILE.py:FUNCTION + --vocab, checkpoints of
wrapped models with a user vocabulary, and the report of their results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import memlens
from memlens.cli import main
from memlens.core.errors import MemlensError
from memlens.runtime.options import RunOptions

WORDS = ["<unk>", "the", "cat", "dog", "bird", "sat", "ran", "flew", "on", "a", "mat", "log",
         "<eos>"]

LM_PY = '''
import torch
from torch import nn
import memlens


class RNNModel(nn.Module):
    """pytorch/examples word_language_model style: embedding + LSTM + decoder."""

    def __init__(self, ntoken, ninp, nhid):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid)
        self.decoder = nn.Linear(nhid, ntoken)

    def forward(self, x, hidden=None):
        out, hidden = self.rnn(self.encoder(x), hidden)
        return self.decoder(out), hidden


def build():
    torch.manual_seed(0)
    model = RNNModel(13, 6, 8)
    return memlens.wrap(model.encoder, model.rnn)


def broken():
    raise ValueError("weights file is missing")
'''


@pytest.fixture
def user(tmp_path):
    (tmp_path / "lm.py").write_text(LM_PY)
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS[1:12], 6)) for _ in range(150)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def cli(args, capsys):
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr()


def test_gradients_signatures_report_with_own_model(user, capsys):
    model = f"{user / 'lm.py'}:build"
    rc, io = cli(["gradients", "--model", model, "--vocab", user / "vocab.txt", "--corpus",
                  user / "corpus.txt", "--classes", "freq:5", "--max-delay", "4",
                  "--bootstrap", "20", "--no-progress", "--out", user / "g"], capsys)
    assert rc == 0, io.err
    doc = json.loads((user / "g" / "result.json").read_text())
    assert doc["settings"]["readout"] == "cell" and doc["model"]["arch"] == "lstm"
    assert {r["class"] for r in doc["table"]} == {"all"} | {f"freq{k}of5" for k in range(1, 6)}
    rc, io = cli(["signatures", "--model", model, "--vocab", user / "vocab.txt", "--corpus",
                  user / "corpus.txt", "--max-delay", "2", "--bootstrap", "20", "--control",
                  "none", "--out", user / "s"], capsys)
    assert rc == 0, io.err
    with np.load(user / "s" / "recall.npz") as npz:
        symbols = set(npz["symbols"].tolist())
    assert symbols and symbols <= set(WORDS)  # words, not ids
    rc, io = cli(["report", user / "g", user / "s", "--out", user / "r.html"], capsys)
    assert rc == 0, io.err
    page = (user / "r.html").read_text()
    assert "freq1of5" in page and "lm.py:build" in page


def test_own_model_errors_are_one_line(user, capsys):
    base = ["gradients", "--vocab", user / "vocab.txt", "--corpus", user / "corpus.txt",
            "--out", user / "o"]
    for spec, message in [(f"{user / 'nope.py'}:build", "model file not found"),
                          (f"{user / 'lm.py'}:nothing", "defines no function 'nothing'"),
                          (f"{user / 'lm.py'}:broken", "weights file is missing"),
                          (f"{user / 'lm.py'}", "FILE.py:FUNCTION")]:
        rc, io = cli(["gradients", "--model", spec, *base[1:]], capsys)
        assert rc == 2 and message in io.err and len(io.err.strip().splitlines()) == 1
    rc, io = cli(["gradients", "--model", f"{user / 'lm.py'}:build", "--corpus",
                  user / "corpus.txt", "--out", user / "o"], capsys)
    assert rc == 2 and "--vocab" in io.err
    (user / "small.txt").write_text("the\ncat\n")  # 2 symbols for 13 embedding rows
    rc, io = cli(["gradients", "--model", f"{user / 'lm.py'}:build", "--vocab",
                  user / "small.txt", "--corpus", user / "corpus.txt", "--out", user / "o"],
                 capsys)
    assert rc == 2 and "13 rows" in io.err
    assert not (user / "o").exists()


def test_wrapped_checkpoint_with_user_vocabulary(user, tmp_path):
    torch.manual_seed(0)
    words = [w for w in WORDS if w != "<unk>"] + ["zebra"]  # no unknown symbol at all
    enc = memlens.wrap(nn.Embedding(len(words), 4), nn.GRU(4, 5, num_layers=2), vocab=words)
    memlens.save_checkpoint(tmp_path / "own.pt", enc)
    back = memlens.load_checkpoint(tmp_path / "own.pt")
    assert isinstance(back, memlens.RecurrentEncoder) and back.vocab.itos == words
    ids = np.random.default_rng(1).integers(0, len(words), 50)
    f64 = RunOptions(dtype="float64")
    a = memlens.state_gradients(enc, ids, 3, options=f64)
    b = memlens.state_gradients(back, ids, 3, options=f64)
    assert np.array_equal(a.means(), b.means())
    with pytest.raises(MemlensError, match="'<unk>' is not in the vocabulary"):
        memlens.state_gradients(back, ["the", "<unk>"], 1)
    frames = memlens.wrap(None, nn.RNN(3, 4))
    memlens.save_checkpoint(tmp_path / "frames.pt", frames)
    assert memlens.load_checkpoint(tmp_path / "frames.pt").input_kind == "vectors"
    custom = memlens.RecurrentEncoder(None, [memlens.StepLayer(
        lambda x, s: (x + s[0],), lambda b, device, dtype: (torch.zeros(b, 3),), 3,
        {"h": lambda s: s[0]})])
    with pytest.raises(MemlensError, match="FILE.py:FUNCTION"):
        memlens.save_checkpoint(tmp_path / "custom.pt", custom)
