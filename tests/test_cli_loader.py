"""The one loader of a run's inputs (memlens.models.run_inputs, commands.common) and the CLI
arguments built from the runtime option schema: real files in tmp_path, one-line refusals."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from torch import nn

import memlens
from memlens.commands.common import add_option, add_overwrite, inputs_from_args
from memlens.core.errors import MemlensError
from memlens.models.run_inputs import (
    RunInputs,
    check_max_tokens,
    load_run_inputs,
    load_vectors,
    read_run_inputs,
)
from memlens.runtime.options import OPTIONS
from memlens.training import TrainConfig, train

TEXT = "\n".join(" ".join(f"w{(i * 7 + j * 3) % 13}" for j in range(8))
                 for i in range(60)) + "\n"
CONLLU = "".join(f"1\tw{i % 13}\t_\t{'NOUN' if i % 2 else 'VERB'}\t_\t_\t0\t_\t_\t_\n\n"
                 for i in range(40))
USER_PY = '''
from torch import nn
import memlens


def build():
    return memlens.wrap(nn.Embedding(13, 4), nn.LSTM(4, 5))


def frames():
    return memlens.wrap(None, nn.GRU(3, 4))
'''


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loader")
    (d / "c.txt").write_text(TEXT)
    (d / "c.conllu").write_text(CONLLU)
    (d / "foreign.txt").write_text("zebra yak gnu\n" * 20)
    (d / "half.txt").write_text("zebra yak gnu w1\n" * 20)  # 75% unknown
    (d / "vocab.txt").write_text("\n".join(["<unk>", "<eos>"] + [f"w{i}" for i in range(11)])
                                 + "\n")
    (d / "user.py").write_text(USER_PY)
    train(TrainConfig(train=str(d / "c.txt"), out=str(d / "m.pt"), emb=4, hidden=6, epochs=1,
                      bptt=5, batch=2, progress=False), log=lambda *_: None)
    np.save(d / "frames.npy", np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32))
    np.save(d / "wide.npy", np.zeros((30, 5)))
    return d


def test_checkpoint_and_text_corpus(files):
    warnings = []
    ri = load_run_inputs(files / "m.pt", files / "c.txt", log=warnings.append)
    assert isinstance(ri, RunInputs) and not warnings
    assert ri.loaded.arch == "lstm" and ri.loaded.unit == "word"
    words = TEXT.split()
    assert ri.tokens[:8] == words[:8] and len(ri.tokens) == len(words) + 60  # <eos> per line
    assert torch.equal(ri.inputs, ri.loaded.vocab.encode(ri.tokens))
    assert ri.oov_rate == 0.0 and len(ri) == len(ri.tokens)
    assert ri.corpus_meta() == {"path": str(files / "c.txt"), "tokens": len(ri.tokens),
                                "oov_rate": 0.0, "format": "text"}
    cut = load_run_inputs(files / "m.pt", files / "c.txt", max_tokens=10)
    assert cut.tokens == ri.tokens[:10] and torch.equal(cut.inputs, ri.inputs[:10])


def test_conllu_tags_cut_with_tokens(files):
    ri = load_run_inputs(files / "m.pt", files / "c.conllu", format="conllu", max_tokens=7)
    assert len(ri.tokens) == 7 and len(ri.tags["upos"]) == 7
    assert ri.tags["upos"][:3] == ["VERB", None, "NOUN"]  # <eos> ends each sentence
    assert ri.corpus_meta()["format"] == "conllu"


def test_own_model_file_function_needs_vocab(files):
    spec = f"{files / 'user.py'}:build"
    with pytest.raises(MemlensError, match=r"has no vocabulary: give --vocab FILE") as exc:
        load_run_inputs(spec, files / "c.txt")
    assert spec in str(exc.value) and "\n" not in str(exc.value)
    ri = load_run_inputs(spec, files / "c.txt", vocab=files / "vocab.txt")
    assert ri.loaded.info["path"] == spec and ri.loaded.vocab.itos[2] == "w0"
    assert 0 < ri.oov_rate < 0.5  # w11, w12 are not in the 13-symbol vocabulary
    with pytest.raises(MemlensError, match="vocabulary not found|not found|cannot"):
        load_run_inputs(spec, files / "c.txt", vocab=files / "missing-vocab.txt")


def test_vector_model_reads_npy(files):
    spec = f"{files / 'user.py'}:frames"
    ri = load_run_inputs(spec, files / "frames.npy", max_tokens=12)
    assert ri.corpus is None and ri.tokens is None and ri.tags == {}
    assert ri.inputs.dtype == np.float64 and ri.inputs.shape == (12, 3)
    assert np.array_equal(ri.inputs, np.load(files / "frames.npy")[:12].astype(np.float64))
    assert ri.corpus_meta()["format"] == "npy" and ri.oov_rate == 0.0
    for corpus, message in [("c.txt", "must be a .npy file of T x 3 floats"),
                            ("wide.npy", r"expected a T x 3 float array"),
                            ("nope.npy", "input vectors file not found")]:
        with pytest.raises(MemlensError, match=message):
            load_run_inputs(spec, files / corpus)
    with pytest.raises(MemlensError, match="memlens ablation needs a token model; this one "
                       "reads vectors"):
        load_run_inputs(spec, files / "frames.npy", need="tokens", what="memlens ablation")
    with pytest.raises(MemlensError, match="--vocab: this model reads continuous vectors"):
        load_run_inputs(spec, files / "frames.npy", vocab=files / "vocab.txt")
    assert load_vectors(files / "frames.npy", 3, 5).shape == (5, 3)


def test_unknown_words_refused_or_warned(files):
    with pytest.raises(MemlensError, match=r"only unknown words .*\(60 tokens, 100% OOV\)"):
        load_run_inputs(files / "m.pt", files / "foreign.txt")
    warnings = []
    ri = load_run_inputs(files / "m.pt", files / "half.txt", log=warnings.append)
    assert ri.oov_rate == 0.75
    assert warnings == ["memlens: warning: vocabulary mismatch? 75.0% of the corpus tokens "
                        "are unknown to the model"]


@pytest.mark.parametrize("value,message", [(0, "--max-tokens must be positive, got 0"),
                                           (-5, "--max-tokens must be positive"),
                                           (True, "must be a positive integer"),
                                           (2.5, "must be a positive integer")])
def test_max_tokens_checked_before_loading(files, value, message):
    with pytest.raises(MemlensError, match=message):
        load_run_inputs(files / "nothing.pt", files / "c.txt", max_tokens=value)
    assert check_max_tokens(np.int64(3)) == 3 and check_max_tokens(None) is None


def test_missing_files_one_line(files):
    for model, corpus, message in [(files / "nope.pt", files / "c.txt", "not found"),
                                   (files / "m.pt", files / "nope.txt", "nope.txt"),
                                   (files / "user.py", files / "c.txt", "FILE.py:FUNCTION")]:
        with pytest.raises(MemlensError, match=message) as exc:
            load_run_inputs(model, corpus)
        assert "\n" not in str(exc.value)
    with pytest.raises(MemlensError, match="need must be one of any, tokens"):
        load_run_inputs(files / "m.pt", files / "c.txt", need="vectors")


def test_read_run_inputs_on_a_loaded_model(files):
    from memlens.models.loading import load_model

    loaded = load_model(files / "m.pt")
    ri = read_run_inputs(loaded, files / "c.txt", max_tokens=5, need="tokens")
    assert ri.loaded is loaded and len(ri.tokens) == 5


def test_inputs_from_args(files):
    args = argparse.Namespace(command="gradients", model=str(files / "m.pt"),
                              corpus=str(files / "c.txt"), vocab=None, unit=None,
                              format="text", max_tokens=9, device="cpu")
    ri = inputs_from_args(args, need="tokens")
    assert len(ri.tokens) == 9 and ri.inputs.device.type == "cpu"
    frames = argparse.Namespace(command="ablation", model=f"{files / 'user.py'}:frames",
                                corpus=str(files / "frames.npy"))  # no --format, --device ...
    with pytest.raises(MemlensError, match="^memlens ablation needs a token model"):
        inputs_from_args(frames, need="tokens")
    assert inputs_from_args(frames).inputs.shape == (30, 3)


def test_add_option_from_the_schema():
    p = argparse.ArgumentParser()
    add_option(p, "seed")
    add_option(p, "max_tokens", help="use only the first N training tokens")
    add_option(p, "device")
    add_option(p, "bootstrap", default=200)
    add_option(p, "checkpoint_every", default=60.0)
    add_option(p, "progress", flag="--no-progress", help="no progress bar")
    add_option(p, "resume")
    add_overwrite(p)
    args = p.parse_args([])
    assert (args.seed, args.max_tokens, args.device, args.bootstrap) == (0, None, "auto", 200)
    assert args.checkpoint_every == 60.0 and args.progress is True
    assert args.resume is False and args.overwrite is False
    args = p.parse_args(["--seed", "3", "--max-tokens", "7", "--no-progress", "--resume",
                         "--device", "cpu", "--checkpoint-every", "2", "--overwrite"])
    assert (args.seed, args.max_tokens, args.progress, args.resume) == (3, 7, False, True)
    assert args.checkpoint_every == 2.0 and args.overwrite
    helps = {a.dest: a.help for a in p._actions}
    assert helps["seed"] == OPTIONS["seed"].help
    assert helps["max_tokens"] == "use only the first N training tokens"
    with pytest.raises(KeyError, match="no option 'nothing'"):
        add_option(p, "nothing")


def test_commands_do_not_import_the_cli():
    import pathlib

    root = pathlib.Path(memlens.__file__).parent
    for path in sorted((root / "commands").glob("*.py")):
        text = path.read_text()
        assert "from memlens.cli" not in text and "import memlens.cli" not in text, path.name
    for rel in ("cli.py", "commands/ngram.py", "commands/signatures.py", "runtime/io.py",
                "runtime/result.py", "report/html.py"):
        assert "from memlens import __version__" not in (root / rel).read_text(), rel
    from memlens.core.version import __version__

    assert memlens.__version__ == __version__ == "0.3.0"


def test_eval_uses_the_loader(files, capsys):
    from memlens.cli import main

    assert main(["eval", "--model", str(files / "m.pt"), "--corpus", str(files / "c.txt"),
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("perplexity: ")
    words = ["<unk>", "<eos>"] + [f"w{i}" for i in range(13)]
    memlens.save_checkpoint(files / "enc.pt", memlens.wrap(nn.Embedding(15, 4), nn.GRU(4, 5),
                                                           vocab=words))
    for model, message in [(f"{files / 'user.py'}:build", "has no vocabulary: give --vocab"),
                           (f"{files / 'user.py'}:frames", "memlens eval needs a token model"),
                           (files / "enc.pt", "needs a language model")]:
        assert main(["eval", "--model", str(model), "--corpus", str(files / "c.txt")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert main(["eval", "--model", str(files / "m.pt"), "--corpus",
                 str(files / "foreign.txt")]) == 2
    assert "100% OOV" in capsys.readouterr().err
