"""Training, evaluation, checkpoints and the CLI's handling of bad input."""

from __future__ import annotations

import math
import subprocess
import sys
import zipfile

import pytest
import torch

from memlens.cli import main
from memlens.models import load_checkpoint, save_checkpoint
from memlens.models.lm import LanguageModel
from memlens.training import TrainConfig, train

TEXT = "\n".join(
    " ".join(f"w{(i * 7 + j * 3) % 13}" for j in range(8)) for i in range(120)) + "\n"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(TEXT)
    return path


def tiny(corpus, out, **kw):
    cfg = dict(train=str(corpus), valid=str(corpus), out=str(out), emb=8, hidden=16,
               epochs=2, bptt=10, batch=4, progress=False)
    cfg.update(kw)
    return train(TrainConfig(**cfg), log=lambda *_: None)


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn", "flstm", "glstm"])
def test_training_learns_and_is_deterministic(corpus, tmp_path, arch):
    a = tiny(corpus, tmp_path / "a.pt", arch=arch, optimizer="adam", lr=0.01, dropout=0.0)
    b = tiny(corpus, tmp_path / "b.pt", arch=arch, optimizer="adam", lr=0.01, dropout=0.0)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na
    history = a.history
    # The corpus is a deterministic cycle: the model must do far better than uniform (13 words).
    assert math.exp(history[-1]["valid_loss"]) < 13


def test_reference_sgd_recipe_decays_after_epoch_six(corpus, tmp_path):
    model = tiny(corpus, tmp_path / "s.pt", epochs=8, dropout=0.5)
    lrs = [r["lr"] for r in model.history]
    assert lrs[:6] == [1.0] * 6
    assert lrs[6] == pytest.approx(0.8) and lrs[7] == pytest.approx(0.64)


def test_checkpoint_round_trip_and_tampering(corpus, tmp_path):
    model = tiny(corpus, tmp_path / "m.pt", epochs=1)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.vocab.itos == model.vocab.itos
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    # Change one weight inside the file, keeping it a valid torch file: the digest catches it.
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["state_dict"]["decoder.bias"][0] += 1.0
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(Exception, match="integrity check failed"):
        load_checkpoint(tmp_path / "tampered.pt")


def test_save_is_atomic(tmp_path):
    model = LanguageModel({"emb": 4, "hidden": 4}, 5)
    with pytest.raises(Exception, match="without a vocabulary"):
        save_checkpoint(tmp_path / "x.pt", model)
    assert list(tmp_path.iterdir()) == []


def test_eval_prints_perplexity_last(corpus, tmp_path, capsys):
    tiny(corpus, tmp_path / "m.pt", epochs=1)
    assert main(["eval", "--model", str(tmp_path / "m.pt"), "--corpus", str(corpus)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("perplexity: ")
    assert float(lines[-1].split()[1]) > 1
    assert any(line.startswith("unigram perplexity") for line in lines)


def test_cli_train_and_python_m(corpus, tmp_path):
    out = tmp_path / "cli.pt"
    proc = subprocess.run([sys.executable, "-m", "memlens", "train", "--train", str(corpus),
                           "--emb", "8", "--hidden", "8", "--epochs", "1", "--bptt", "5",
                           "--batch", "2", "--device", "cpu", "--unit", "char", "--out",
                           str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(out).config["unit"] == "char"


def write_bad(tmp_path, kind):
    p = tmp_path / f"bad-{kind}"
    if kind == "empty":
        p.write_text("")
    elif kind == "binary":
        p.write_bytes(bytes(range(256)) * 4)
    elif kind == "latin1":
        p.write_bytes("na\xefve text\n".encode("latin-1"))
    elif kind == "conllu":
        p.write_text("1\tI\tI\tPRON\tPRP\t_\t0\troot\t_\t_\nnot a token line\n")
    return p


@pytest.mark.parametrize("kind,fmt,message", [
    ("missing", "text", "corpus file not found"),
    ("empty", "text", "corpus file is empty"),
    ("binary", "text", "looks binary"),
    ("latin1", "text", "not valid UTF-8"),
    ("conllu", "conllu", "bad-conllu:2: malformed CoNLL-U line"),
])
def test_cli_bad_corpus(tmp_path, capsys, kind, fmt, message):
    path = write_bad(tmp_path, kind)
    out = tmp_path / "out.pt"
    code = main(["train", "--train", str(path), "--format", fmt, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("args,message", [
    (["--arch", "transformer"], "invalid choice: 'transformer'"),
    (["--tied", "--emb", "8", "--hidden", "16"], "tied weights need --emb equal to --hidden"),
    (["--arch", "glstm", "--groups", "3", "--emb", "8", "--hidden", "8"], "divisible"),
    (["--epochs", "0"], "--epochs must be in 1..100000, got 0"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
])
def test_cli_impossible_options(corpus, tmp_path, capsys, args, message):
    out = tmp_path / "out.pt"
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(["train", "--train", str(corpus), "--out", str(out)] + args))
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_foreign_and_tampered_checkpoints(corpus, tmp_path, capsys):
    tiny(corpus, tmp_path / "m.pt", epochs=1)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint")
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "memlens-checkpoint", "evil": zipfile.ZipFile}, pickled)
    tampered = tmp_path / "tampered.pt"
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["hidden"] = 99
    torch.save(payload, tampered)
    cases = [(foreign, "not a memlens checkpoint"), (garbage, "cannot be read safely"),
             (pickled, "cannot be read safely"), (tampered, "integrity check failed"),
             (tmp_path / "nope.pt", "checkpoint file not found")]
    for path, message in cases:
        code = main(["eval", "--model", str(path), "--corpus", str(corpus)])
        err = capsys.readouterr().err.strip()
        assert code == 2, path
        assert message in err and len(err.splitlines()) == 1, err


def test_fixed_pretrained_embeddings(corpus, tmp_path):
    vec = tmp_path / "vec.txt"
    vec.write_text("3 8\n" + "\n".join(
        f"w{i} " + " ".join(str(0.01 * (i + j)) for j in range(8)) for i in range(3)) + "\n")
    model = tiny(corpus, tmp_path / "p.pt", pretrained=str(vec), epochs=1)
    row = model.encoder.embedding.weight[model.vocab.stoi["w1"]]
    assert torch.allclose(row, torch.tensor([0.01 * (1 + j) for j in range(8)]))
    assert model.config["fixed_embeddings"] is True
    bad = tmp_path / "badvec.txt"
    bad.write_text("w1 0.1 0.2\n")
    with pytest.raises(Exception, match="expected 8"):
        tiny(corpus, tmp_path / "q.pt", pretrained=str(bad), epochs=1)


def test_atomic_outputs_get_normal_permissions(tmp_path):
    """Temporary files start private (0600); the finished file and directory get the mode a
    plain open()/mkdir() would give them under the process umask."""
    from memlens.runtime import io

    io.write_json(tmp_path / "r.json", {"a": 1})
    with io.atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("x")
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~io._UMASK
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~io._UMASK
