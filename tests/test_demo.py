"""memlens demo: the synthetic experiment with a known answer, end to end."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from memlens.cli import main
from memlens.data import make_synthetic
from memlens.data.synthetic import noun_words
from memlens.demo import (
    IRRELEVANT_COORD,
    NUMBER_COORD,
    DemoConfig,
    first_delay_not_first,
    first_delay_weak,
    first_lag_at_baseline,
    planted_embeddings,
)
from memlens.errors import MemlensError

IMG = re.compile(r'<img src="data:image/png;base64,')


def test_recovery_rules():
    assert first_delay_not_first(np.array([1, 1, 1, 2, 1])) == 3
    assert first_delay_not_first(np.array([2, 1, 1])) == 0
    assert first_delay_not_first(np.array([1, 1])) == 2
    acc = np.array([0.99, 0.98, 0.9, 0.53, 0.51, 0.6])
    assert first_lag_at_baseline(acc, np.full(6, 0.5), 0.05) == 3
    assert first_lag_at_baseline(np.ones(4), np.full(4, 0.5), 0.05) == 4
    # a lag whose interval reaches the baseline is no longer memory, even above the margin
    low = np.array([0.97, 0.95, 0.49, 0.45, 0.4, 0.5])
    assert first_lag_at_baseline(acc, np.full(6, 0.5), 0.05, low) == 2
    assert first_delay_weak(np.array([1.0, 2.0, 1.5, 0.9, 0.1])) == 3
    assert first_delay_weak(np.array([1.0, 0.9])) == 2
    assert first_delay_weak(np.array([0.2, 0.3, 1.0, 0.6, 0.4])) == 4  # search from the peak


def test_planted_geometry():
    nouns = noun_words(10)
    words = ["<unk>", "<eos>", *nouns["sg"], *nouns["pl"], "is", "are",
             *[f"w{i}" for i in range(40)]]
    table = planted_embeddings(words, 16, 10, 10.0, seed=0)
    var = table.var(axis=0)
    assert np.argmax(var) == IRRELEVANT_COORD and var[IRRELEVANT_COORD] > 20 * np.median(var)
    pl = table[[words.index(w) for w in nouns["pl"]]].mean(0)
    sg = table[[words.index(w) for w in nouns["sg"]]].mean(0)
    d = (pl - sg) / np.linalg.norm(pl - sg)
    assert abs(d[NUMBER_COORD]) > 0.9       # the planted direction is the number coordinate
    assert var[NUMBER_COORD] < var[IRRELEVANT_COORD] / 50


def test_synthetic_without_eos():
    c = make_synthetic(4, 3, seed=1, eos=False)
    assert len(c) == 4 * 4 and "<eos>" not in c.tokens
    for i in range(0, len(c), 4):
        verb = {"sg": "is", "pl": "are"}[c.tags["number"][i]]
        assert c.tokens[i + 3] == verb and c.tags["role"][i + 3] == "verb"
    assert make_synthetic(3, 2, seed=1).tokens == make_synthetic(3, 2, seed=1).tokens


def test_bad_config():
    with pytest.raises(MemlensError):
        DemoConfig(distance=0).check()
    with pytest.raises(MemlensError):
        DemoConfig(archs=("transformer",)).check()
    assert main(["demo", "--distance", "0", "--no-progress", "--out", "/nonexistent/x"]) == 2


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
                 if Path(p).exists()), None)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed
    report = out / "report.html"
    text = report.read_text()
    # every plot of every result directory is embedded
    n_plots = 0
    for rj in out.glob("*/result.json"):
        data = json.loads(rj.read_text())
        n_plots += len(data["plots"])
        for plot in data["plots"]:
            assert plot["title"].replace("&", "&amp;") in text
    assert n_plots == 6  # (2 gradient plots + 1 signature plot) x (LSTM, GRU)
    assert len(IMG.findall(text)) >= n_plots
    assert "<script" not in text.lower()
    # the planted-vs-recovered statement, with at least one method within one step
    assert "What was planted, and what each method recovered" in text
    assert "Planted memory: the number (singular or plural) of a noun decides the verb " \
           "exactly 5 steps later" in text
    summary = json.loads((out / "demo.json").read_text())
    trained = [r for r in summary["recovered"] if r["role"] == "trained"]
    assert {r["model"] for r in trained} == {"LSTM", "GRU"}
    matches = [r for r in trained if abs(r["recovered"] - r["planted"]) <= 1]
    assert matches, summary["recovered"]
    assert "Recovered within one step of the planted distance by:" in text
    for r in matches:
        assert f"{r['model']} {r['method']} ({r['recovered']})" in text
    # the trigram oracle's memory is its window: 2 tokens
    window = [r for r in summary["recovered"] if r["role"] == "oracle"]
    assert window and all(r["recovered"] == 2 for r in window)
    if CHROMIUM is not None:
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.resolve().as_uri()],
            capture_output=True, text=True, timeout=120).stdout
        assert len(IMG.findall(dom)) == len(IMG.findall(text))
        assert "What was planted" in dom
