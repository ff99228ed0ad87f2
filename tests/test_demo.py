"""memlens demo: the synthetic experiment with a known answer, end to end."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from memlens.cli import main
from memlens.core.errors import MemlensError
from memlens.data import make_synthetic
from memlens.data.synthetic import noun_words
from memlens.demo import (
    IRRELEVANT_COORD,
    NUMBER_COORD,
    DemoConfig,
    end_of_dominance,
    end_of_strength,
    first_delay_not_first,
    first_delay_weak,
    first_lag_at_baseline,
    planted_embeddings,
)

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
    # the demo's strength reading: 1 + the last delay at half the peak or more, so a memory
    # that dips and is re-read before use (a GRU at long distances) is not cut at the dip
    assert end_of_strength(np.array([1.0, 0.7, 0.45, 0.42, 0.62, 0.25, 0.1])) == 5
    assert end_of_strength(np.array([0.4, 1.0, 0.2, 0.1])) == 2
    assert end_of_strength(np.array([1.0, 0.9])) == 2          # not over by the last delay
    # dominance: 1 + the last delay with relative memory >= 0.9; None if never
    assert end_of_dominance(np.array([0.3, 0.5, 0.94, 0.8, 0.7])) == 3
    assert end_of_dominance(np.array([0.3, 0.5, 0.6])) is None
    assert end_of_dominance(np.array([0.95, 0.99])) == 2


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
    # (2 gradient plots + 1 signature plot + 1 ablation plot) x (LSTM, GRU) + the three views
    assert n_plots == 9
    assert len(IMG.findall(text)) >= n_plots
    assert "<script" not in text.lower()
    # demo.json: one record per (model, method), every length reading within one step
    summary = json.loads((out / "demo.json").read_text())
    for r in summary["recovered"]:
        assert {"model", "role", "method", "planted", "recovered", "match"} <= set(r)
        assert r["planted"] == 5
    trained = [r for r in summary["recovered"] if r["role"] == "trained"]
    views = {"state gradients", "memory signature", "context ablation"}
    for model in ("LSTM", "GRU"):
        rows = [r for r in trained if r["model"] == model]
        assert {v for v in views for r in rows if r["method"].startswith(v)} == views
        for r in rows:
            assert r["recovered"] != 0 and r["match"], r
            assert abs(r["recovered"] - 5) <= 1, r
    # the trigram oracle's memory is its window: 2 tokens
    window = [r for r in summary["recovered"] if r["role"] == "oracle"]
    assert window and all(r["recovered"] == 2 for r in window)
    # the report leads with the answer: verdict table, the combined figure, findings
    head = text.index("Verdict: planted 5 steps, recovered by each view")
    assert head < text.index("<h2>Results</h2>")
    verdict = text[head:text.index("</section>", head)]
    assert "<th>model</th><th>view</th><th>method</th><th>role</th><th>planted</th>" \
           "<th>recovered</th><th>match</th>" in verdict
    assert verdict.count("<td>yes</td>") >= 6
    assert "The three views of the planted memory (5 steps), per model" in verdict
    assert len(IMG.findall(verdict)) == 1
    assert "All three views find the planted memory" in verdict
    assert "state gradients, normalised 0" not in text  # sentences, not concatenated lists
    assert "Planted memory: the number (singular or plural) of a noun decides the verb " \
           "exactly 5 steps later" in text
    if CHROMIUM is not None:
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.resolve().as_uri()],
            capture_output=True, text=True, timeout=120).stdout
        assert len(IMG.findall(dom)) == len(IMG.findall(text))
        assert "What was planted" in dom


def test_planted_result_verdict_figure_and_findings(tmp_path):
    """The study's own result, from known per-delay readings (no training): the verdict table,
    the one combined figure and the findings as sentences, rendered first by the report."""
    from memlens.report import build_report
    from memlens.studies.planted import PlantedResult, recovered_rows

    cfg = DemoConfig(distance=3)
    curves = []
    for model in ("LSTM", "GRU"):
        for tau in range(cfg.max_delay + 1):
            held = tau < 3
            curves.append({
                "model": model, "delay": tau, "lag": tau, "rank_normalised": 1,
                "rank_unnormalised": 1, "relmem_normalised": 0.95 if tau == 2 else 0.5,
                "relmem_unnormalised": 0.95, "strength": 1.0 if held else 0.1,
                "strength_of_peak": 1.0 if held else 0.1, "accuracy": 1.0 if held else 0.6,
                "control_accuracy": 0.6, "window_accuracy": 0.5, "majority": 0.5,
                "accuracy_over_control": 0.4 if held else 0.0,
                "ablation_swap_bits": None if tau == 0 else 3.0 if held else 0.0,
                "ablation_swap_low_bits": None if tau == 0 else 2.5 if held else -0.1,
                "ablation_swap_high_bits": None if tau == 0 else 3.5 if held else 0.1,
                "ablation_drop_bits": None if tau == 0 else 3.0 if tau < 5 else 0.0})
    rec = []
    for model in ("LSTM", "GRU"):
        rec += recovered_rows(model, {"strength": 3, "normalised": 3 if model == "LSTM"
                                      else None, "unnormalised": 8},
                              {"trained_vs_control": 3, "trained": 8, "random-init": 4,
                               "trigram": 2}, {"swap": 3, "drop": 5}, cfg)
    res = PlantedResult(cfg, curves=curves, recovered=rec,
                        training={"lstm": {"valid_ppl": 9.0, "epoch": 6},
                                  "gru": {"valid_ppl": 9.5, "epoch": 6}})
    d = res.save(tmp_path / "planted-memory")
    v = json.loads((d / "result.json").read_text())["verdict"]
    assert v["figures"] == ["three_views.png"] and (d / "three_views.png").is_file()
    trained = [r for r in v["table"] if r["role"] == "trained"]
    assert len(trained) == 6 and all(r["match"] for r in trained)
    assert {r["recovered"] for r in v["table"]} >= {"3", "never dominant",
                                                    "not over by 7"}
    oracle = [r for r in rec if r["role"] == "oracle"]
    assert all(r["match"] and r["expected"] == 2 for r in oracle)
    assert all(r["match"] is None for r in rec if r["role"] == "control")
    text = " ".join(v["findings"])
    assert text.startswith("All three views find the planted memory")
    assert "the effective context is 3 tokens for both models" in text
    assert "last at delay 2 for the LSTM and never for the GRU" in text
    assert "costs about 3.0 bits" in text
    page = build_report([d], tmp_path / "report.html").read_text()
    assert page.index("Verdict: planted 3 steps") < page.index("<h2>Results</h2>")
    assert len(IMG.findall(page)) == 1  # the combined figure, once


@pytest.mark.slow
@pytest.mark.parametrize("distance", [3, 8])
def test_other_distances_recovered_by_every_view(tmp_path, distance):
    """`memlens demo --distance 3 / 8` through the Python API (the demo's own sizes, no
    report): every length reading of the trained LSTM and GRU within one step, none 0."""
    from memlens.studies.planted import run_planted

    res = run_planted(DemoConfig(out=str(tmp_path / "d"), distance=distance, progress=False))
    trained = [r for r in res.recovered if r["role"] == "trained"]
    assert len(trained) == 6 and {r["model"] for r in trained} == {"LSTM", "GRU"}
    for r in trained:
        assert r["recovered"] not in (0, None) and r["match"], r
        assert abs(r["recovered"] - distance) <= 1, r
