"""Issue 21, items 4 and 5: a user's own code is reported as theirs; signals during start-up
and while saving; a full disk gives one line and no partial file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from memlens import state_gradients, wrap
from memlens.core.errors import MemlensError, UserCodeError
from memlens.models import StepLayer
from memlens.runtime.options import as_options

REPO = Path(__file__).resolve().parents[1]


def _layer(step):
    d = 3
    return StepLayer(step=step, init_state=lambda b, device, dtype: (
        torch.zeros(b, d, device=device, dtype=dtype),), input_size=d,
        readouts={"h": lambda s: s[0]})


def test_a_user_step_that_raises_is_reported_as_theirs():
    def bad(x, state):
        raise ValueError("boom in my cell")

    model = wrap(None, [_layer(bad)])
    with pytest.raises(UserCodeError, match=r"^your model's step raised ValueError: boom in "
                       r"my cell$"):
        state_gradients(model, torch.randn(20, 3), 2, options=as_options(bootstrap=0))
    assert issubclass(UserCodeError, MemlensError)  # the CLI: one line, exit 2


def test_a_user_step_with_the_wrong_state_shape_is_named():
    model = wrap(None, [_layer(lambda x, s: (torch.zeros(x.shape[0], 5),))])
    with pytest.raises(MemlensError, match="step"):
        state_gradients(model, torch.randn(20, 3), 2, options=as_options(bootstrap=0))


def test_sigterm_during_start_up_is_exit_130_with_a_line():
    proc = subprocess.Popen([sys.executable, "-m", "memlens", "demo", "--quick", "--out",
                             "never"], cwd=REPO / "tests", stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # still importing
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "memlens: interrupted"
    assert not (REPO / "tests" / "never").exists()


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from memlens.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_file_size_limit_while_saving_a_checkpoint(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sees the dog and a bird runs\n" * 40)
    r = subprocess.run([sys.executable, "-c", FULL_DISK, "train", "--train", str(corpus),
                        "--out", str(tmp_path / "m.pt"), "--epochs", "1", "--emb", "8",
                        "--hidden", "64", "--no-progress", "--device", "cpu"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [x for x in r.stderr.strip().splitlines() if x.startswith("memlens")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("memlens: error:")
    assert sorted(os.listdir(tmp_path)) == ["c.txt"]  # no checkpoint, no partial, no scratch
