"""Sentinel values never reach a message or the report as numbers: a memory span of -1 (no lag
above the baseline) reads "no span found" in the speech signatures' log lines, the HTML
report and a result's Jupyter view; the numbers in result.json stay as they were."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest

from memlens.analyses.signatures.signature import Signature
from memlens.cli import main
from memlens.runtime.html import sentinel_text, span_text


def test_span_text_and_sentinel_text():
    assert span_text(-1, "graphemes") == "no span found"
    assert span_text(0, "graphemes") == "0 graphemes" and span_text(4) == "4"
    assert sentinel_text("memory_span", -1) == "no span found"
    assert sentinel_text("memory_span", 3) is None and sentinel_text("lag", -1) is None
    assert sentinel_text("memory_span", True) is None


def cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue() + err.getvalue()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_speech_signatures_say_no_span_found(tmp_path, monkeypatch):
    pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on the mat . A dog ran in the park today .\n"
                    "She said hello to the old man . We went home early that night .\n")
    code, log = cli("speech-corpus", "--text", text, "--out", tmp_path / "corpus",
                    "--utterances", 4, "--test-fraction", 0.5, "--seed", 1)
    assert code == 0, log
    code, log = cli("train-asr", "--data", tmp_path / "corpus", "--out", tmp_path / "asr.pt",
                    "--layers", 1, "--hidden", 8, "--epochs", 1, "--batch", 2, "--seed", 0)
    assert code == 0, log
    monkeypatch.setattr(Signature, "memory_span", lambda self, margin=0.05: -1)
    code, log = cli("signatures", "--model", tmp_path / "asr.pt", "--corpus",
                    tmp_path / "corpus", "--max-delay", 2, "--bootstrap", 0, "--out",
                    tmp_path / "sig")
    assert code == 0, log
    assert "memory span: no span found" in log and "-1 graphemes" not in log
    doc = json.loads((tmp_path / "sig" / "result.json").read_text())
    assert {row["memory_span"] for row in doc["summary"]["signatures"]} == {-1}
    code, log = cli("report", tmp_path / "sig", "--out", tmp_path / "report.html")
    assert code == 0, log
    html = (tmp_path / "report.html").read_text()
    assert "no span found" in html and "<td>-1</td>" not in html
    assert ">-1<" not in html
