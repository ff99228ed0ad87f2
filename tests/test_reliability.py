"""Issue 9: never destroy the user's files, one error contract, bounded resources, resume.

Every command is run against a directory holding a file memlens did not write (with and
without --overwrite) and must leave it byte-for-byte untouched; hostile sizes are refused
quickly and with little memory (measured in a child process); interrupted runs are resumable
and give the same result as uninterrupted ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import memlens.analyses.signatures.study as study
from memlens.cli import main
from memlens.data import Vocab
from memlens.models import LanguageModel, save_checkpoint
from memlens.models.checkpoint import _digest
from memlens.runtime.io import MANIFEST, output_lock
from memlens.training import TrainConfig, train

WORDS = ["the", "cat", "sees", "dogs", "a", "bird", "runs", "and", "big", "$x^"]
TAGS = {"the": "DET", "cat": "NOUN", "sees": "VERB", "dogs": "NOUN", "a": "DET",
        "bird": "NOUN", "runs": "VERB", "and": "CCONJ", "big": "ADJ", "$x^": "X"}
TEXT = "\n".join(" ".join(WORDS[(i * 7 + j * 3) % 10] for j in range(8))
                 for i in range(60)) + "\n"


def conllu(xpos: bool = True) -> str:
    lines = []
    for s, line in enumerate(TEXT.split("\n")[:15]):
        lines.append(f"# sent_id = {s}")
        for i, w in enumerate(line.split()):
            lines.append(f"{i + 1}\t{w}\t_\t{TAGS[w]}\t{'XX' if xpos else '_'}\t_\t0\t_\t_\t_")
        lines.append("")
    return "\n".join(lines) + "\n"


@pytest.fixture
def env(tmp_path):
    vocab = Vocab(["<unk>", "<eos>", *WORDS], [1, 60] + [50 - i for i in range(10)])
    torch.manual_seed(0)
    model = LanguageModel({"arch": "lstm", "layers": 1, "emb": 3, "hidden": 4}, len(vocab))
    model.vocab = vocab
    save_checkpoint(tmp_path / "$x^.pt", model)
    (tmp_path / "c.txt").write_text(TEXT)
    (tmp_path / "c.conllu").write_text(conllu())
    return tmp_path


def grad(env, *extra, out="out"):
    return ["gradients", "--model", str(env / "$x^.pt"), "--corpus", str(env / "c.txt"),
            "--out", str(env / out), "--no-progress", "--max-delay", "3", "--bootstrap", "10",
            *extra]


def sig(env, *extra, out="sig"):
    return ["signatures", "--model", str(env / "$x^.pt"), "--corpus", str(env / "c.txt"),
            "--out", str(env / out), "--max-delay", "2", "--bootstrap", "20", "--blocks", "4",
            "--control", "none", "--symbols", "top:10", *extra]


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None,
                                       p.stat().st_mode)
            for p in sorted(root.rglob("*"))}


def one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert err.startswith("memlens: error:") and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


# -- 1. data loss --------------------------------------------------------------------------------
def commands(env, out):
    return {
        "gradients": grad(env, out=out),
        "signatures": sig(env, out=out),
        "demo": ["demo", "--quick", "--no-progress", "--out", str(env / out)],
        "train": ["train", "--train", str(env / "c.txt"), "--epochs", "1", "--emb", "4",
                  "--hidden", "4", "--out", str(env / out)],
        "ngram": ["ngram", "--train", str(env / "c.txt"), "--order", "2", "--out",
                  str(env / out)],
        "report": ["report", str(env / "res"), "--out", str(env / out)],
    }


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("name", ["gradients", "signatures", "demo", "train", "ngram",
                                  "report"])
def test_foreign_directory_is_never_touched(env, capsys, name, overwrite):
    target = env / "mine"
    (target / "sub").mkdir(parents=True)
    (target / "model.pt").write_bytes(b"the model being analysed")
    (target / "sub" / "notes.txt").write_text("notes")
    before, names = snapshot(target), sorted(p.name for p in env.iterdir())
    capsys.readouterr()
    argv = commands(env, "mine")[name] + (["--overwrite"] if overwrite else [])
    assert main(argv) == 2
    one_line_error(capsys)
    assert snapshot(target) == before
    assert sorted(p.name for p in env.iterdir()) == names  # no lock, temp or partial left


@pytest.mark.parametrize("name", ["gradients", "signatures"])
def test_out_dot_and_existing_file_refused(env, capsys, monkeypatch, name):
    (env / "precious.txt").write_text("keep me")
    before = snapshot(env)
    assert main(commands(env, "precious.txt")[name]) == 2
    one_line_error(capsys, "not a directory")
    monkeypatch.chdir(env)
    argv = commands(env, "x")[name]
    argv[argv.index("--out") + 1] = "."
    assert main(argv) == 2
    one_line_error(capsys)
    assert snapshot(env) == before


def test_overwrite_replaces_only_a_memlens_result(env, capsys):
    assert main(grad(env)) == 0
    out = env / "out"
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["kind"] == "gradients" and "result.json" in manifest["files"]
    assert main(grad(env)) == 2
    one_line_error(capsys, "--overwrite")
    assert main(grad(env, "--overwrite", "--max-delay", "2")) == 0
    assert json.loads((out / "result.json").read_text())["settings"]["max_delay"] == 2
    (out / "mine.txt").write_text("added by the user")  # now it holds a foreign file
    before = snapshot(out)
    capsys.readouterr()
    assert main(grad(env, "--overwrite")) == 2
    one_line_error(capsys, "mine.txt")
    assert snapshot(out) == before


def test_file_outputs_need_overwrite_and_are_memlens_files(env, capsys):
    out = env / "lm.json"
    argv = ["ngram", "--train", str(env / "c.txt"), "--order", "2", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 2
    one_line_error(capsys, "--overwrite")
    assert main(argv + ["--overwrite"]) == 0
    (env / "mine.json").write_text('{"mine": 1}')
    argv[-1] = str(env / "mine.json")
    assert main(argv + ["--overwrite"]) == 2
    one_line_error(capsys, "not written by memlens")
    assert (env / "mine.json").read_text() == '{"mine": 1}'
    page = env / "page.html"
    assert main(["report", str(out.parent / "nope"), "--out", str(page)]) == 2
    assert main(grad(env)) == 0
    assert main(["report", str(env / "out"), "--out", str(page)]) == 0
    assert main(["report", str(env / "out"), "--out", str(page), "--overwrite"]) == 0


# -- 9. concurrent runs --------------------------------------------------------------------------
def test_second_run_on_the_same_out_is_refused(env, capsys):
    with output_lock(env / "out"):
        assert main(grad(env)) == 2
        one_line_error(capsys, "another memlens run")
        assert not (env / "out").exists()
    assert main(grad(env)) == 0
    assert not list(env.glob(".out*"))  # lock file removed


def test_lock_between_processes(env):
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(env / ".out.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(grad(env)) == 2
    finally:
        holder.kill()
        holder.wait()


# -- 2. bounded resources ------------------------------------------------------------------------
HOSTILE_RUNNER = """
import json, resource, sys
# the peak resident memory of this process only: a forked child inherits its parent's peak
# (pytest's, after memory-hungry tests), so reset it (Linux: clear_refs 5) and read VmHWM
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
from memlens.cli import main

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

out = []
for argv in json.loads(sys.argv[1]):
    t = cpu()
    code = main(argv)
    out.append([code, cpu() - t])
def peak():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

print(json.dumps({"runs": out, "max_rss": peak()}))
"""


def test_hostile_sizes_refused_fast_and_small(env):
    # a checkpoint with a valid digest that declares 10**7 layers
    payload = torch.load(env / "$x^.pt", weights_only=True)
    payload["config"]["layers"] = 10 ** 7
    payload["sha256"] = _digest(payload["config"], payload["vocab"], payload["state_dict"])
    torch.save(payload, env / "deep.pt")
    # weights that do not match their config (digest valid)
    payload = torch.load(env / "$x^.pt", weights_only=True)
    payload["config"]["hidden"] = 5
    payload["sha256"] = _digest(payload["config"], payload["vocab"], payload["state_dict"])
    torch.save(payload, env / "shapes.pt")
    # a zip bomb named .pt: 64 MB of zeros in a few kB
    with zipfile.ZipFile(env / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\0" * (64 << 20))
    m, c = str(env / "$x^.pt"), str(env / "c.txt")
    cases = [
        (["eval", "--model", str(env / "deep.pt"), "--corpus", c], "--layers must be in"),
        (["eval", "--model", str(env / "shapes.pt"), "--corpus", c], "do not match"),
        (["eval", "--model", str(env / "bomb.pt"), "--corpus", c], "zip bomb"),
        (["gradients", "--model", m, "--corpus", c, "--classes", "freq:1000000", "--out",
          str(env / "g")], "frequency bins"),
        (["demo", "--distance", "1000000000", "--out", str(env / "d")], "--distance"),
        (["train", "--train", c, "--hidden", "1000000000", "--out", str(env / "t.pt")],
         "--hidden"),
    ]
    # one child process runs the CLI on every case (as `python -m memlens` would) and reports
    # the CPU seconds of each and its peak resident memory (torch included); RLIMIT_AS would
    # be too blunt: torch maps far more address space than it ever touches
    r = subprocess.run([sys.executable, "-c", HOSTILE_RUNNER, json.dumps([a for a, _ in cases])],
                       capture_output=True, text=True, timeout=300)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    errors = [line for line in r.stderr.strip().splitlines() if line.startswith("memlens:")]
    assert len(errors) == len(cases), r.stderr
    for (argv, message), (code, seconds), err in zip(cases, res["runs"], errors):
        assert code == 2 and message in err, (argv, err)
        assert seconds < 10, (argv, seconds)
    assert res["max_rss"] < 1 << 30, res["max_rss"]


# -- 3. `$` in labels ----------------------------------------------------------------------------
def test_dollar_in_tokens_classes_files_and_model_names(env, capsys):
    (env / "$x^.txt").write_text("$x^ cat\n")
    (env / "b.txt").write_text("sees runs\n")
    spec = f"words:{env / '$x^.txt'},{env / 'b.txt'}"
    assert main(grad(env, "--classes", spec)) == 0, capsys.readouterr().err
    doc = json.loads((env / "out" / "result.json").read_text())
    assert "$x^" in doc["settings"]["class_names"]
    assert main(sig(env)) == 0, capsys.readouterr().err
    assert main(["report", str(env / "out"), str(env / "sig"), "--out",
                 str(env / "$x^.html"), "--title", "$x^"]) == 0


# -- 4, 5. the gradients partial checkpoint -----------------------------------------------------
def _term(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)


def test_gradients_sigterm_after_accumulation_is_resumable(env, capsys, monkeypatch):
    assert main(grad(env, "--classes", "upos", "--format", "conllu", "--corpus",
                     str(env / "c.conllu"), out="straight")) == 0
    import memlens.analyses.gradients.plots as plots
    from memlens.analyses.gradients.result import GradientResult

    for where in ("bootstrap", "plots"):
        with monkeypatch.context() as mp:
            if where == "plots":
                mp.setattr(plots, "write_plots", _term)
            else:
                mp.setattr(GradientResult, "bootstrap", _term)
            assert main(grad(env, "--classes", "upos", "--format", "conllu", "--corpus",
                             str(env / "c.conllu"))) == 130
        assert "--resume" in capsys.readouterr().err
        assert (env / ".out.partial.pt").exists() and not (env / "out").exists()
    assert main(grad(env, "--classes", "upos", "--format", "conllu", "--corpus",
                     str(env / "c.conllu"), "--resume")) == 0
    assert not (env / ".out.partial.pt").exists()
    a, b = np.load(env / "straight" / "gradients.npz"), np.load(env / "out" / "gradients.npz")
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("edit,resign,message", [  # resign: a digest that matches the edit
    (lambda ck: ck.__setitem__("position", 10 ** 6), True, "position"),
    (lambda ck: ck.__setitem__("position", 7), False, "digest"),
    (lambda ck: ck.__setitem__("master", ck["master"][:, :1]), True, "master"),
    (lambda ck: ck["master"].add_(1.0), False, "digest"),
    (lambda ck: ck.__setitem__("counts", ck["counts"].double()), True, "float64"),
])
def test_gradients_partial_is_validated(env, capsys, monkeypatch, edit, resign, message):
    import memlens.analyses.gradients.plots as plots
    from memlens.runtime.progress import META, fingerprint

    monkeypatch.setattr(plots, "write_plots", _term)
    assert main(grad(env)) == 130
    monkeypatch.undo()
    ck_path = env / ".out.partial.pt"
    ck = torch.load(ck_path, weights_only=True)
    edit(ck["payload"])
    if resign:
        meta = ck[META]
        meta["digest"] = fingerprint(meta["kind"], meta["fingerprint"], ck["payload"])
    torch.save(ck, ck_path)
    capsys.readouterr()
    assert main(grad(env, "--resume")) == 2
    one_line_error(capsys, "damaged or was edited", message)
    assert not (env / "out").exists()


# -- 6, 7. error contract and nonsense options ---------------------------------------------------
def test_unreadable_corpus_and_unwritable_out(env, capsys, monkeypatch):
    real = os.open  # the input gate opens user files with os.open (core.files.open_input)

    def deny(path, flags, *args, **kwargs):
        if Path(path).name == "c.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, flags, *args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(os, "open", deny)
        assert main(grad(env)) == 2
        one_line_error(capsys, "cannot read corpus file", "Permission denied")
    ro = env / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
    else:  # root may write anywhere: simulate the read-only directory
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == ro
                            else real_access(p, m))
    assert main(grad(env, out="ro/out")) == 2
    one_line_error(capsys, "not writable")
    assert not list(ro.iterdir())


@pytest.mark.parametrize("argv,message", [
    (lambda e: ["train", "--train", str(e / "c.txt"), "--out", str(e)], "is a directory"),
    (lambda e: ["ngram", "--train", str(e / "c.txt"), "--out", str(e)], "is a directory"),
    (lambda e: ["report", str(e), "--out", str(e)], "is a directory"),
    (lambda e: grad(e, out="c.txt/sub"), "not a directory"),
    (lambda e: ["demo", "--out", str(e / "c.txt")], "not a directory"),
    (lambda e: ["train", "--train", str(e / "c.txt"), "--hidden", "1000000000", "--out",
                str(e / "m.pt")], "--hidden"),
    (lambda e: ["train", "--train", str(e / "c.txt"), "--clip", "-1", "--out",
                str(e / "m.pt")], "--clip must be > 0"),
    (lambda e: ["train", "--train", str(e / "c.txt"), "--max-tokens", "0", "--out",
                str(e / "m.pt")], "--max-tokens must be positive"),
    (lambda e: ["train", "--train", str(e / "c.txt"), "--min-freq", "1000", "--out",
                str(e / "m.pt")], "at least 3"),
    (lambda e: grad(e, "--max-tokens", "0"), "--max-tokens must be positive"),
    (lambda e: ["ngram", "--train", str(e / "c.txt"), "--max-tokens", "0"],
     "--max-tokens must be positive"),
    (lambda e: ["ngram", "--train", str(e / "c.txt"), "--max-tokens", "-5"],
     "--max-tokens must be positive"),
    (lambda e: sig(e, "--train-tokens", "0"), "--train-tokens must be positive"),
    (lambda e: sig(e, "--heldout-tokens", "0"), "--heldout-tokens must be positive"),
    (lambda e: sig(e, "--blocks", "0"), "--blocks must be in 1.."),
    (lambda e: grad(e, "--classes", "xpos", "--format", "conllu", "--corpus",
                    str(e / "nox.conllu")), "no XPOS tags"),
])
def test_user_errors_exit_2(env, capsys, argv, message):
    (env / "nox.conllu").write_text(conllu(xpos=False))
    before = sorted(p.name for p in env.iterdir())
    assert main(argv(env)) == 2
    one_line_error(capsys, message)
    assert sorted(p.name for p in env.iterdir()) == before


def test_deeply_nested_result_json(env, capsys):
    d = env / "deep"
    d.mkdir()
    (d / "result.json").write_text('{"kind": "gradients", "x": ' + "[" * 100000
                                   + "]" * 100000 + "}")
    assert main(["report", str(d), "--out", str(env / "r.html")]) == 2
    one_line_error(capsys, "nested too deeply")


def test_degenerate_but_valid_options_work(env, capsys):
    assert main(grad(env, "--max-delay", "0", out="k0")) == 0
    assert main(grad(env, "--bootstrap", "0", out="b0")) == 0
    rows = json.loads((env / "b0" / "result.json").read_text())["table"]
    assert all(r["ci_low"] is None for r in rows)
    assert main(sig(env, "--bootstrap", "0")) == 0
    rows = json.loads((env / "sig" / "result.json").read_text())["table"]
    assert all(r["ci_low"] is None for r in rows) and rows[0]["accuracy"] is not None


# -- 8. the demo interrupted ---------------------------------------------------------------------
@pytest.mark.parametrize("sig_", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_demo_leaves_nothing(tmp_path, sig_):
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "memlens", "demo", "--quick",
                             "--no-progress", "--out", str(tmp_path / "demo")],
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".demo.*.tmp/*.pt")):
        time.sleep(0.1)  # wait until training has written into the temporary directory
    proc.send_signal(sig_)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert not list((tmp_path / "tmp").iterdir())


# -- 10. resume for signatures and train ---------------------------------------------------------
def test_signatures_resume_equals_uninterrupted(env, capsys, monkeypatch):
    extra = ["--control", "random-init", "--ngram", "2"]
    assert main(sig(env, *extra, out="straight")[:-0 or None]) == 0
    real, calls = study.signature_from_states, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "signature_from_states", flaky)
    assert main(sig(env, *extra)) == 130
    assert "--resume" in capsys.readouterr().err
    partial = env / ".sig.partial.npz"
    assert partial.is_file() and not (env / "sig").exists()
    monkeypatch.setattr(study, "signature_from_states", real)
    assert main(sig(env, *extra, "--resume")) == 0
    assert not partial.exists()
    a = json.loads((env / "straight" / "result.json").read_text())
    b = json.loads((env / "sig" / "result.json").read_text())
    assert a["table"] == b["table"] and a["summary"] == b["summary"]
    ra, rb = np.load(env / "straight" / "recall.npz"), np.load(env / "sig" / "recall.npz")
    assert all(np.array_equal(ra[k], rb[k], equal_nan=ra[k].dtype.kind == "f")
               for k in ra.files)


def test_signatures_progress_is_validated(env, capsys, monkeypatch):
    real, calls = study.signature_from_states, []

    def stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "signature_from_states", stop)
    assert main(sig(env, "--control", "random-init")) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(sig(env, "--control", "random-init", "--resume", "--max-delay", "1")) == 2
    one_line_error(capsys, "different model, corpus or settings")
    entry = env / ".sig.partial.npz"  # the checkpoint is kept by a refused resume
    entry.write_bytes(entry.read_bytes()[:-10] + b"0123456789")
    assert main(sig(env, "--control", "random-init", "--resume")) == 2
    one_line_error(capsys, "damaged or was edited")


def test_train_resume_equals_uninterrupted(env, monkeypatch):
    tr = sys.modules["memlens.training.lm"]  # the module (memlens.training.lm is the function)

    cfg = dict(train=str(env / "c.txt"), valid=str(env / "c.txt"), emb=4, hidden=8, epochs=3,
               bptt=5, batch=4, dropout=0.3, progress=False)
    straight = train(TrainConfig(out=str(env / "a.pt"), **cfg), log=lambda *_: None)
    real, calls = tr.evaluate, []

    def stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # in epoch 2, after epoch 1 was saved
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tr, "evaluate", stop)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(env / "b.pt"), **cfg), log=lambda *_: None)
    monkeypatch.undo()
    assert (env / ".b.pt.partial.pt").exists()
    resumed = train(TrainConfig(out=str(env / "b.pt"), resume=True, **cfg),
                    log=lambda *_: None)
    assert not (env / ".b.pt.partial.pt").exists()
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k



# -- after the 0.2.0 restructuring -------------------------------------------------------------
@pytest.mark.parametrize("which", ["corpus", "model", "vocab", "direction"])
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_special_files_refused_not_read(env, capsys, which, special):
    """A FIFO (blocks forever) or /dev/zero (never ends) is refused before it is opened."""
    path = str(env / "pipe") if special == "fifo" else special
    if special == "fifo":
        os.mkfifo(path)
    direction = path + ".npy" if which == "direction" else None
    if direction and special == "fifo":
        os.rename(path, direction)
    argv = {"corpus": lambda: ["gradients", "--model", str(env / "$x^.pt"), "--corpus", path,
                               "--out", str(env / "out"), "--max-delay", "3"],
            "model": lambda: ["gradients", "--model", path, "--corpus", str(env / "c.txt"),
                              "--out", str(env / "out"), "--max-delay", "3"],
            "vocab": lambda: grad(env, "--vocab", path),
            "direction": lambda: grad(env, "--direction", direction)}[which]()
    if which == "direction" and special != "fifo":
        pytest.skip("/dev/zero has no .npy name")
    assert main(argv) == 2
    one_line_error(capsys, "not a regular file")
    assert not (env / "out").exists()


@pytest.mark.parametrize("suffix,extra", [(".pt", []), (".npz", ["ablation"]),
                                          (".npz", ["signatures"])])
def test_resume_from_a_fifo_checkpoint_refused(env, capsys, suffix, extra):
    out = env / "res"
    os.mkfifo(env / f".res.partial{suffix}")
    if not extra:
        argv = grad(env, "--resume", out="res")
    elif extra == ["ablation"]:
        argv = ["ablation", "--model", str(env / "$x^.pt"), "--corpus", str(env / "c.txt"),
                "--out", str(out), "--no-progress", "--targets", "100", "--resume"]
    else:
        argv = sig(env, "--resume", out="res")
    assert main(argv) == 2
    one_line_error(capsys, "not a regular file")
    assert not out.exists()


@pytest.mark.parametrize("extra,message", [
    (["--window-lm", "99999999999999999999"], "--window-lm must be in 0..64"),
    (["--ngram", "1000000"], "--ngram must be in 0..64"),
    (["--lm-epochs", "99999999999999999999", "--window-lm", "2"], "--lm-epochs must be in"),
])
def test_signatures_huge_comparison_options_refused(env, capsys, extra, message):
    assert main(sig(env, *extra)) == 2
    one_line_error(capsys, message)
    assert not (env / "sig").exists() and not (env / ".sig.partial.npz").exists()


def test_gradients_huge_segment_refused(env, capsys):
    assert main(grad(env, "--context", "segment:99999999999999999999")) == 2
    one_line_error(capsys, "cannot read context")
    assert not (env / "out").exists()


@pytest.mark.parametrize("argv", [
    lambda e: ["train", "--train", str(e / "c.txt"), "--out", str(e / "m.pt"), "--seed", "-1"],
    lambda e: ["demo", "--out", str(e / "d"), "--quick", "--seed", str(2**63)],
    lambda e: ["speech-corpus", "--text", str(e / "c.txt"), "--out", str(e / "sp"),
               "--seed", "-1"],
    lambda e: ["train-asr", "--data", str(e / "sp"), "--out", str(e / "a.pt"), "--seed", "-1"],
])
def test_schema_options_checked_on_every_command(env, capsys, argv):
    """--seed (declared once in the runtime schema) is refused on every command taking it."""
    before = sorted(p.name for p in env.iterdir())
    assert main(argv(env)) == 2
    one_line_error(capsys, "--seed must be in 0..")
    assert sorted(p.name for p in env.iterdir()) == before


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_speech_corpus_text_special_file_refused(env, capsys, special):
    path = str(env / "pipe") if special == "fifo" else special
    if special == "fifo":
        os.mkfifo(path)
    assert main(["speech-corpus", "--text", path, "--out", str(env / "sp")]) == 2
    one_line_error(capsys, "not a regular file")
    assert not (env / "sp").exists()
