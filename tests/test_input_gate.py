"""Issue 21 item 1: one gate for every input file (memlens.core.files.check_input_file).

Every file input of every command is given a FIFO, ``/dev/zero`` (through a symlink with the
name the reader expects) and a 1 TiB sparse file: each is refused by ``stat`` before it is
opened (a FIFO would block forever, ``/dev/zero`` never ends, the sparse file is never read),
with exit 2 and one ``memlens: error:`` line, within a few seconds (an alarm turns a hang into
a failure). Then one test per bad-file case of the issue: malformed feature caches, non-UTF-8
transcripts, bad direction files, negative vocabulary counts, ``eval`` on an encoder or ASR
checkpoint, truncated / garbage / pickle-only weights in ``hf:DIR``, report inputs with huge
numbers, ``--lm-train`` naming a missing file, a lexicon none of whose words is known, zip
members that expand beyond the memory budget and HF configs implying too many parameters.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from memlens.cli import main
from memlens.core.errors import MemlensError
from memlens.core.files import check_input_file, read_text

sys.path.insert(0, str(Path(__file__).parent))

from test_hostile import SPEAKABLE, TEXT, WORDS, _wav  # noqa: E402

HUGE = 1 << 40
SECONDS = 20
KINDS = ("fifo", "dev-zero", "huge")


class Hang(BaseException):
    """The alarm fired: the case hung (not an Exception, so no handler of memlens eats it)."""


@contextmanager
def deadline(seconds: int = SECONDS):
    def fire(signum, frame):
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def make_bad(path: Path, kind: str) -> Path:
    """A FIFO, a symlink to /dev/zero or a 1 TiB sparse file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        with open(path, "wb") as fh:
            fh.truncate(HUGE)
    return path


def refused(argv: list, capsys) -> str:
    """Run the CLI in-process: exit 2, one error line, no traceback; returns the line."""
    capsys.readouterr()  # what building the inputs printed
    with deadline():
        rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, (argv, rc, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("memlens: error:"), err
    assert "Traceback" not in err
    if os.environ.get("GATE_SHOW"):
        sys.__stderr__.write(lines[0][:220] + "\n")
    return lines[0]


# -- the user's files --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A word LM checkpoint with its corpus, vocabulary, lexicon, word list, tag groups,
    word2vec vectors, a vector-input encoder checkpoint, a result directory, a speech
    manifest corpus, a LibriSpeech-layout corpus and a tiny hf:DIR Mamba."""
    from memlens import wrap
    from memlens.analyses.gradients import state_gradients
    from memlens.data import Vocab
    from memlens.models import LanguageModel, save_checkpoint
    from memlens.runtime.options import as_options

    root = tmp_path_factory.mktemp("gate")
    vocab = Vocab(["<unk>", "<eos>", *WORDS], [1, 40] + [30 - i for i in range(10)])
    torch.manual_seed(0)
    model = LanguageModel({"arch": "lstm", "layers": 1, "emb": 3, "hidden": 4}, len(vocab))
    model.vocab = vocab
    save_checkpoint(root / "lm.pt", model)
    (root / "c.txt").write_text(TEXT)
    (root / "speak.txt").write_text(SPEAKABLE)
    (root / "vocab.txt").write_text("\n".join(vocab.itos) + "\n")
    (root / "lex.txt").write_text("the\tDET\ncat\tNOUN\nsees\tVERB\n")
    (root / "animals.txt").write_text("cat dogs bird\n")
    (root / "groups.txt").write_text("N NOUN\nV VERB\n")
    (root / "vec.txt").write_text("".join(f"{w} 0.1 0.2 0.3\n" for w in WORDS))
    np.save(root / "dir.npy", np.ones(3))
    enc = wrap(None, nn.LSTM(3, 4))
    save_checkpoint(root / "enc.pt", enc)
    np.save(root / "frames.npy", np.random.default_rng(0).normal(size=(40, 3)))
    grads = state_gradients(model, vocab.encode(TEXT.split()[:60]), max_delay=2,
                            options=as_options(bootstrap=0))
    grads.save(root / "grads")
    speech = root / "speech"
    speech.mkdir()
    for i, (_word, f) in enumerate([("a cat", 300.0), ("the dog", 500.0), ("old man", 700.0),
                                   ("big bird", 900.0)]):
        _wav(speech / f"u{i}.wav", 0.3, f)
    (speech / "manifest.tsv").write_text("".join(f"u{i}.wav\t{w}\n" for i, w in enumerate(
        ["a cat", "the dog", "old man", "big bird"])))
    libri = root / "libri" / "19" / "198"
    libri.mkdir(parents=True)
    for i in range(2):
        _wav(libri / f"19-198-000{i}.wav", 0.3, 400.0 + 100 * i)
    (libri / "19-198.trans.txt").write_text("19-198-0000 A CAT\n19-198-0001 THE DOG\n")
    return root


def hf_dir(root: Path, name: str = "mamba") -> Path:
    """A tiny random Mamba saved with safetensors (no tokenizer)."""
    transformers = pytest.importorskip("transformers")
    out = root / name
    torch.manual_seed(0)
    model = transformers.MambaForCausalLM(transformers.MambaConfig(
        vocab_size=16, hidden_size=4, state_size=2, num_hidden_layers=1, expand=2,
        conv_kernel=2, time_step_rank=1))
    model.save_pretrained(out)
    return out


def base(env: Path, out: Path) -> dict[str, list]:
    lm, c = env / "lm.pt", env / "c.txt"
    return {
        "gradients": ["gradients", "--model", lm, "--corpus", c, "--max-delay", "2",
                      "--max-tokens", "60", "--bootstrap", "0", "--out", out / "g",
                      "--device", "cpu", "--no-progress"],
        "train": ["train", "--train", c, "--out", out / "m.pt", "--layers", "1", "--emb", "3",
                  "--hidden", "3", "--epochs", "1", "--bptt", "5", "--batch", "2",
                  "--max-tokens", "200", "--device", "cpu"],
        "signatures": ["signatures", "--model", lm, "--corpus", c, "--train-tokens", "150",
                       "--heldout-tokens", "80", "--max-delay", "1", "--bootstrap", "5",
                       "--lm-epochs", "1", "--out", out / "s", "--device", "cpu"],
        "train-asr": ["train-asr", "--data", env / "speech", "--out", out / "asr.pt",
                      "--layers", "1", "--hidden", "4", "--epochs", "1", "--batch", "2"],
    }


def _with(argv: list, option: str, value) -> list:
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    return argv


# every file input: (name, build(env, bad file dir, kind) -> argv). Each build puts the bad
# file where the reader looks for it.
def _opt(command: str, option: str, name: str, prefix: str = "", suffix: str = ""
         ) -> Callable:
    def build(env: Path, tmp: Path, kind: str) -> list:
        bad = make_bad(tmp / name, kind)
        return _with(base(env, tmp)[command], option, prefix + str(bad) + suffix)
    return build


def _speech_file(name: str, layout: str = "speech") -> Callable:
    """A copy of a speech corpus whose file ``name`` is the bad file."""
    def build(env: Path, tmp: Path, kind: str) -> list:
        import shutil

        corpus = tmp / "corpus"
        shutil.copytree(env / layout, corpus, symlinks=True)
        target = next(corpus.rglob(name))
        make_bad(target, kind)
        return _with(base(env, tmp)["train-asr"], "--data", corpus)
    return build


def _speech_cache(env: Path, tmp: Path, kind: str) -> list:
    import shutil

    corpus = tmp / "corpus"
    shutil.copytree(env / "speech", corpus)
    make_bad(corpus / "features.npz", kind)
    return _with(base(env, tmp)["train-asr"], "--data", corpus)


def _hf_file(name: str) -> Callable:
    def build(env: Path, tmp: Path, kind: str) -> list:
        d = hf_dir(tmp)
        make_bad(d / name, kind)
        return _with(base(env, tmp)["gradients"], "--model", f"hf:{d}")
    return build


def _report(name: str) -> Callable:
    def build(env: Path, tmp: Path, kind: str) -> list:
        import shutil

        d = tmp / "res"
        shutil.copytree(env / "grads", d)
        make_bad(d / name, kind)
        return ["report", d, "--out", tmp / "r.html"]
    return build


def _vectors(env: Path, tmp: Path, kind: str) -> list:
    bad = make_bad(tmp / "bad.npy", kind)
    argv = base(env, tmp)["gradients"]
    return _with(_with(argv, "--model", env / "enc.pt"), "--corpus", bad)


INPUTS = {
    "corpus": _opt("gradients", "--corpus", "c.txt"),
    "train corpus": _opt("train", "--train", "t.txt"),
    "valid corpus": _opt("train", "--valid", "v.txt"),
    "heldout": _opt("signatures", "--heldout", "h.txt"),
    "lm-train": _opt("signatures", "--lm-train", "l.txt"),
    "vocabulary": _opt("gradients", "--vocab", "v.txt"),
    "lexicon": _opt("gradients", "--classes", "lex.txt", "lexicon:"),
    "word list": _opt("gradients", "--classes", "w.txt", "words:"),
    "tag groups": _opt("gradients", "--classes", "g.txt", "lexicon:{lex}+groups:"),
    "pretrained": _opt("train", "--pretrained", "vec.txt"),
    "checkpoint": _opt("gradients", "--model", "m.pt"),
    "signatures checkpoint": _opt("signatures", "--model", "huge"),
    "npy frames": _vectors,
    "model file (FILE.py)": _opt("gradients", "--model", "m.py", suffix=":build"),
    "direction": _opt("gradients", "--direction", "d.npy"),
    "speech manifest": _speech_file("manifest.tsv"),
    "speech audio": _speech_file("u1.wav"),
    "speech transcript": _speech_file("19-198.trans.txt", "libri"),
    "speech feature cache": _speech_cache,
    "hf config": _hf_file("config.json"),
    "hf weights": _hf_file("model.safetensors"),
    "hf tokenizer": _hf_file("tokenizer.json"),
    "report result.json": _report("result.json"),
    "report plot": _report("spectra.png"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_every_file_input_refuses_special_and_huge_files(env, tmp_path, capsys, name, kind):
    argv = INPUTS[name](env, tmp_path, kind)
    argv = [str(a).replace("{lex}", str(env / "lex.txt")) for a in argv]
    line = refused(argv, capsys)
    if kind == "huge":
        assert "larger than" in line or "limit" in line or "memory" in line, line
    else:
        assert "not a regular file" in line or "file not found" in line or \
            "outside the directory" in line, line


def test_speech_text_input_refused(env, tmp_path, capsys):
    """speech-corpus --text (espeak-ng is checked first, so the gate runs only with it)."""
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    for kind in KINDS:
        bad = make_bad(tmp_path / "t.txt", kind)
        refused(["speech-corpus", "--text", bad, "--out", tmp_path / "sc", "--utterances", "2",
                 "--workers", "1"], capsys)
    assert not (tmp_path / "sc").exists()


def test_resume_checkpoint_refused(tmp_path):
    """RunCheckpoint resume files (npz and torch) pass the same gate."""
    from memlens.runtime.progress import RunCheckpoint

    for suffix in (".npz", ".pt"):
        for kind in KINDS:
            bad = make_bad(tmp_path / f"ck{suffix}", kind)
            with deadline(), pytest.raises(MemlensError):
                RunCheckpoint(bad, "f").load()


def test_gate_api(tmp_path, monkeypatch):
    """The gate itself: /proc files, directories, missing paths, wrong types, the limit and
    its environment variable; the bounded reader never reads past the limit."""
    for path, words in (("/proc/self/status", "kernel pseudo file"), (tmp_path, "directory"),
                        (tmp_path / "nope", "not found"), ("/dev/zero", "not a regular")):
        with pytest.raises(MemlensError, match=words):
            check_input_file(path, "corpus")
    with pytest.raises(MemlensError, match="str or os.PathLike"):
        check_input_file(3, "corpus")
    f = tmp_path / "a.txt"
    f.write_text("hello world\n")
    assert check_input_file(f, "corpus").st_size == 12
    monkeypatch.setenv("MEMLENS_MAX_INPUT_BYTES", "5")
    with pytest.raises(MemlensError, match="corpus file .* larger than the input limit of 5 "
                                           "bytes .*MEMLENS_MAX_INPUT_BYTES"):
        read_text(f, "corpus")
    for bad in ("abc", "-1", "nan", "inf"):
        monkeypatch.setenv("MEMLENS_MAX_INPUT_BYTES", bad)
        with pytest.raises(MemlensError, match="MEMLENS_MAX_INPUT_BYTES"):
            read_text(f, "corpus")
    monkeypatch.setenv("MEMLENS_MAX_INPUT_BYTES", "1e6")
    assert read_text(f, "corpus") == "hello world\n"


# -- the bad-file cases of the issue ----------------------------------------------------------
def _cache(path: Path, frames, offsets, ids) -> None:
    from memlens.data.speech.corpus import FEATURES

    meta = json.dumps({"features": FEATURES, "digest": "x", "ids": ids})
    with open(path, "wb") as fh:
        np.savez(fh, frames=frames, offsets=offsets, meta=np.array(meta))


@pytest.mark.parametrize("case", ["short offsets", "wrong width", "int ids", "nan frames",
                                  "int frames", "garbage"])
def test_malformed_feature_cache_refused(env, tmp_path, capsys, case):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(env / "speech", corpus)
    ids = [f"u{i}" for i in range(4)]
    frames = np.zeros((40, 80), np.float32)
    offsets = np.array([0, 10, 20, 30, 40])
    if case == "short offsets":
        offsets = offsets[:3]
    elif case == "wrong width":
        frames = np.zeros((40, 7), np.float32)
    elif case == "int ids":
        ids = [0, 1, 2, 3]
    elif case == "nan frames":
        frames[3, 4] = np.nan
    elif case == "int frames":
        frames = np.zeros((40, 80), np.int64)
    if case == "garbage":
        (corpus / "features.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    else:
        _cache(corpus / "features.npz", frames, offsets, ids)
    line = refused(base(env, tmp_path)["train-asr"][:2] + [corpus] +
                   base(env, tmp_path)["train-asr"][3:], capsys)
    assert "feature cache" in line
    assert not (tmp_path / "asr.pt").exists()


def test_valid_feature_cache_is_used(env, tmp_path):
    """A well-formed cache is read back as written; one of other settings is recomputed."""
    import shutil

    from memlens.data.speech.corpus import load_features, read_corpus, save_feature_cache

    corpus_dir = tmp_path / "corpus"
    shutil.copytree(env / "speech", corpus_dir)
    corpus = read_corpus(corpus_dir)
    feats = [np.full((5 + i, 80), float(i), np.float32) for i in range(len(corpus))]
    save_feature_cache(corpus_dir / "features.npz", corpus, feats)
    got = load_features(corpus)
    assert all(np.array_equal(a, b) for a, b in zip(got, feats))


def test_non_utf8_transcript_refused(env, tmp_path, capsys):
    import shutil

    libri = tmp_path / "libri"
    shutil.copytree(env / "libri", libri)
    t = next(libri.rglob("*.trans.txt"))
    t.write_bytes(b"19-198-0000 A CAT\n19-198-0001 TH\xff DOG\n")
    line = refused(_with(base(env, tmp_path)["train-asr"], "--data", libri), capsys)
    assert "not valid UTF-8 (line 2)" in line and "transcript" in line


@pytest.mark.parametrize("case", ["strings", "nan", "inf", "object", "empty", "bool"])
def test_bad_direction_file_refused(env, tmp_path, capsys, case):
    path = tmp_path / "d.npy"
    values = {"strings": np.array(["a", "b", "c"]), "nan": np.array([1.0, np.nan, 0.0]),
              "inf": np.array([1.0, np.inf, 0.0]), "empty": np.zeros(0),
              "bool": np.array([True, False, True])}
    if case == "object":
        np.save(path, np.array([1, "a", None], dtype=object), allow_pickle=True)
    else:
        np.save(path, values[case])
    line = refused(_with(base(env, tmp_path)["gradients"], "--direction", path), capsys)
    assert "direction vector" in line
    assert not (tmp_path / "g").exists()


def test_negative_vocabulary_count_refused(env, tmp_path, capsys):
    v = tmp_path / "v.txt"
    v.write_text("".join(f"{w}\t{5 if i != 3 else -2}\n" for i, w in enumerate(
        ["<unk>", "<eos>", *WORDS])))
    line = refused(_with(base(env, tmp_path)["gradients"], "--vocab", v), capsys)
    assert f"{v}:4" in line and "non-negative" in line


def test_eval_needs_a_language_model(env, tmp_path, capsys):
    from memlens import wrap
    from memlens.models import save_checkpoint

    enc = wrap(nn.Embedding(12, 3), nn.LSTM(3, 4), vocab=["<unk>", "<eos>", *WORDS])
    save_checkpoint(tmp_path / "tok_enc.pt", enc)
    for model in (tmp_path / "tok_enc.pt", env / "enc.pt"):
        line = refused(["eval", "--model", model, "--corpus", env / "c.txt", "--device", "cpu"],
                       capsys)
        assert "language model" in line or "token model" in line, line


def test_eval_on_asr_checkpoint(env, tmp_path, capsys):
    with deadline(120):
        rc = main([str(a) for a in base(env, tmp_path)["train-asr"]])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    line = refused(["eval", "--model", tmp_path / "asr.pt", "--corpus", env / "c.txt",
                    "--device", "cpu"], capsys)
    assert "eval needs" in line or "token model" in line or "language model" in line, line


def _safetensors(path: Path, header: dict, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("case", ["truncated", "garbage", "header too long", "bad entry",
                                  "pickle only", "no weights", "missing dir", "not a dir",
                                  "broken tokenizer", "fewer weights"])
def test_bad_hf_dir_refused(env, tmp_path, capsys, case):
    d = hf_dir(tmp_path)
    weights = d / "model.safetensors"
    spec = f"hf:{d}"
    if case == "truncated":
        blob = weights.read_bytes()
        weights.write_bytes(blob[: len(blob) - 40])
    elif case == "garbage":
        weights.write_bytes(os.urandom(4000))
    elif case == "header too long":
        weights.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    elif case == "bad entry":
        _safetensors(weights, {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
                     b"\x00" * 4)
    elif case == "pickle only":
        weights.unlink()
        (d / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    elif case == "no weights":
        weights.unlink()
    elif case == "missing dir":
        spec = f"hf:{tmp_path / 'nothing' / 'here'}"
    elif case == "not a dir":
        spec = f"hf:{weights}"
    elif case == "broken tokenizer":
        (d / "tokenizer.json").write_text("{not json")
    elif case == "fewer weights":
        _safetensors(weights, {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                     b"\x00" * 4)
    line = refused(_with(base(env, tmp_path)["gradients"], "--model", spec), capsys)
    if case == "missing dir":
        assert "no such directory" in line and "Repo id" not in line
    if case == "pickle only":
        assert "pickle" in line and "pytorch_model.bin" in line
    assert not (tmp_path / "g").exists()


def test_hf_config_too_large_refused_before_building(env, tmp_path, capsys, monkeypatch):
    """A config whose sizes imply more parameters than the memory budget is refused from the
    meta-device count, before anything is allocated (measured: peak memory stays small)."""
    import resource

    d = hf_dir(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(hidden_size=8192, intermediate_size=16384, num_hidden_layers=48,
               vocab_size=50000, state_size=64)
    (d / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("MEMLENS_MAX_MEMORY", str(2 << 30))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    line = refused(_with(base(env, tmp_path)["gradients"], "--model", f"hf:{d}"), capsys)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB
    assert "parameters" in line and "memory" in line, line
    assert grown < 500_000, grown


def test_hf_dir_still_loads(tmp_path):
    from memlens.models.hf import from_hf

    enc = from_hf(hf_dir(tmp_path))
    assert enc.vocab is None and len(enc.layers) == 1


def test_checkpoint_expanding_beyond_budget_refused(env, tmp_path, monkeypatch):
    """A torch zip checkpoint whose members declare more bytes than the memory budget is
    refused before torch.load (the members' declared sizes are read from the zip directory)."""
    from memlens.models import load_checkpoint

    big = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(600_000)}, big)  # 2.4 MB of members
    monkeypatch.setenv("MEMLENS_MAX_MEMORY", "1e6")
    with pytest.raises(MemlensError, match="larger than the input limit .*memory budget"):
        load_checkpoint(big)  # the file itself is larger than the budget
    monkeypatch.setenv("MEMLENS_MAX_INPUT_BYTES", "1e9")  # the file passes, its members not
    with pytest.raises(MemlensError, match="expands to .* more than the memory budget"):
        load_checkpoint(big)
    monkeypatch.delenv("MEMLENS_MAX_MEMORY")
    monkeypatch.delenv("MEMLENS_MAX_INPUT_BYTES")
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data/0", b"\x00" * (50 << 20))
    with pytest.raises(MemlensError, match="zip bomb"):
        load_checkpoint(bomb)


def test_npz_members_checked_before_expanding(env, tmp_path, monkeypatch):
    import shutil

    from memlens.results import load_result

    d = tmp_path / "res"
    shutil.copytree(env / "grads", d)
    name = json.loads((d / "result.json").read_text()).get("arrays_file") or "gradients.npz"
    with zipfile.ZipFile(d / name, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("a.npy", "w") as fh:
            np.lib.format.write_array(fh, np.zeros(2_000_000))  # 16 MB expanded
    monkeypatch.setenv("MEMLENS_MAX_MEMORY", "1e6")
    with pytest.raises(MemlensError, match="memory"):
        load_result(d).arrays()


@pytest.mark.parametrize("case", ["huge int", "huge int in table", "5000 digits"])
def test_report_huge_numbers_refused(env, tmp_path, capsys, case):
    import shutil

    d = tmp_path / "res"
    shutil.copytree(env / "grads", d)
    text = (d / "result.json").read_text()
    if case == "huge int":
        text = text.replace('"summary": {', '"summary": {"x": 1' + "0" * 400 + ", ", 1)
    elif case == "huge int in table":
        text = text.replace('"delay": 0', '"delay": 1' + "0" * 400, 1)
    else:
        text = text.replace('"summary": {', '"summary": {"x": ' + "9" * 5000 + ", ", 1)
    (d / "result.json").write_text(text)
    line = refused(["report", d, "--out", tmp_path / "r.html"], capsys)
    assert "result.json" in line
    assert not (tmp_path / "r.html").exists()


def test_report_lists_where_numbers_are_expected(env, tmp_path, capsys):
    """Lists and strings in a table's number columns are shown, not an internal error."""
    import shutil

    d = tmp_path / "res"
    shutil.copytree(env / "grads", d)
    doc = json.loads((d / "result.json").read_text())
    for row in doc["table"]:
        row["sum_sv"], row["delay"] = [1, 2], "x"
    doc["summary"] = {k: [1, {"a": 2}] for k in doc["summary"]}
    (d / "result.json").write_text(json.dumps(doc))
    with deadline():
        rc = main(["report", str(d), "--out", str(tmp_path / "r.html")])
    assert rc in (0, 2), capsys.readouterr().err


def test_lm_train_missing_refused_up_front(env, tmp_path, capsys):
    line = refused(_with(base(env, tmp_path)["signatures"], "--lm-train",
                         tmp_path / "missing.txt"), capsys)
    assert "--lm-train" in line and "not found" in line
    assert not (tmp_path / "s").exists()


def test_lexicon_with_no_known_word_refused(env, tmp_path, capsys):
    lex = tmp_path / "lex.txt"
    lex.write_text("zebra\tNOUN\nquux\tVERB\n")
    line = refused(_with(base(env, tmp_path)["gradients"], "--classes", f"lexicon:{lex}"),
                   capsys)
    assert "none of its 2 words" in line


def test_readers_still_read_good_files(env):
    """The gate changes no result: corpora, vocabularies, lexicons and checkpoints read."""
    from memlens.data import Vocab, load_corpus, read_lexicon
    from memlens.models import load_checkpoint

    assert len(load_corpus(env / "c.txt")) == len(TEXT.split()) + TEXT.count("\n")  # <eos>
    assert Vocab.read(env / "vocab.txt").itos[2:] == WORDS
    assert read_lexicon(env / "lex.txt")["cat"] == ["NOUN"]
    assert load_checkpoint(env / "lm.pt").vocab.itos[2:] == WORDS
