"""Issue 21, item 4: a second SIGTERM while a save is under way, and a full disk (ENOSPC).

* A real process (``memlens train``) whose checkpoint save is slowed down (``torch.save``
  sleeps 2 s first, leaving a marker file): two SIGTERMs arrive during the save. The save
  must finish, the process exit 130 with "memlens: interrupted" (not die of signal 15), both
  files load, and ``--resume`` completes the run.
* ENOSPC: the disk fills up while a result is written (``os.fsync`` of the temporary file
  raises ``OSError(ENOSPC)``, where a full disk reports it on many file systems), for every
  command that writes a file: exit 2, one error line naming the file, nothing left but the
  user's own files.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_output_safety import argv, bases, run, snapshot  # noqa: E402,F401 - fixture

SLOW_SAVE = """
import pathlib, sys, time, torch
marker = pathlib.Path(sys.argv[1])
original = torch.save
def slow_save(*args, **kwargs):
    if not marker.exists():
        marker.write_text("saving")
        time.sleep(2.0)
    return original(*args, **kwargs)
torch.save = slow_save
from memlens.cli import run
sys.argv = ["memlens", *sys.argv[2:]]
sys.exit(run())
"""


def _train(tmp_path: Path, *extra: str) -> list[str]:
    corpus = tmp_path / "c.txt"
    if not corpus.exists():
        corpus.write_text("the cat sees the dog and a bird runs over the hill\n" * 60)
    return ["train", "--train", str(corpus), "--out", str(tmp_path / "m.pt"), "--epochs", "3",
            "--emb", "8", "--hidden", "16", "--bptt", "10", "--no-progress", "--device", "cpu",
            *extra]


def test_a_second_sigterm_during_a_save_waits_for_the_save(tmp_path):
    from memlens import load_checkpoint
    from memlens.training.lm import progress_path

    marker = tmp_path / "saving.marker"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(marker), *_train(tmp_path)],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # during the save of epoch 1
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)  # the second one, still during the save
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err  # not -15: the save finished, then the run stopped
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("memlens: interrupted"), err
    ck = progress_path(tmp_path / "m.pt")
    assert ck.exists() and (tmp_path / "m.pt").exists()
    load_checkpoint(tmp_path / "m.pt")  # complete, not truncated
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no half-written file
    r = subprocess.run([sys.executable, "-m", "memlens", *_train(tmp_path, "--resume")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "resuming after epoch 1" in r.stdout
    assert "epoch 3:" in r.stdout and "epoch 1:" not in r.stdout  # it went on from 2
    assert not ck.exists()


WRITERS = ["train", "gradients", "signatures", "ablation", "report", "demo"]


@pytest.mark.parametrize("command", WRITERS)
def test_a_full_disk_while_writing_gives_one_line_and_nothing_partial(
        command, bases, tmp_path, monkeypatch, capsys):  # noqa: F811 - fixture
    import memlens.core.files as files

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("the user's own file\n")
    before = snapshot(tmp_path)
    out = {"train": "m.pt", "report": "r.html"}.get(command, "out")
    args = argv(bases, command, tmp_path / out)
    if "--no-progress" not in args and command != "report":
        args.append("--no-progress")
    code = run(args)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("memlens")]
    assert code == 2, err
    assert len(errors) == 1 and errors[0].startswith("memlens: error: cannot write"), err
    assert "disk full" in errors[0] and "Traceback" not in "\n".join(err)
    assert snapshot(tmp_path) == before  # nothing written, nothing partial, scratch removed
