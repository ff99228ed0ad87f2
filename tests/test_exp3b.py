"""The verdict rules and class sources of experiments/exp3b_nouns_in_domain.py (no data, no
model: hand-made rankings and a five-token corpus)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
exp3b = pytest.importorskip("exp3b_nouns_in_domain")


def _ranked(rows):
    """The same (class, value, low, high, rel) list at every verdict delay, best first."""
    vals = sorted(rows, key=lambda v: -v[1])
    return {t: vals for t in exp3b.VERDICT_DELAYS}


def test_verdict_a_rules():
    clear = _ranked([("NOUN", 1.0, 0.9, 1.1, 1), ("VERB", 0.5, 0.4, 0.6, 1)])
    assert exp3b.verdict_a(clear, "NOUN") == "agree"
    beaten = _ranked([("NOUN", 0.5, 0.4, 0.6, 1), ("VERB", 1.0, 0.9, 1.1, 1)])
    assert exp3b.verdict_a(beaten, "NOUN") == "disagree"
    overlap = _ranked([("NOUN", 1.0, 0.7, 1.1, 1), ("VERB", 0.9, 0.8, 1.2, 1)])
    assert exp3b.verdict_a(overlap, "NOUN") == "inconclusive"


def test_verdict_b_rules():
    def table(rows):
        vals = sorted(rows, key=lambda v: -v[1])
        return {t: vals for t in exp3b.VERDICT_DELAYS}

    agree = table([("NNS-NN", 0.4, 0.35, 0.45, 9), ("NNPS-NNP", 0.3, 0.25, 0.5, 9),
                   ("VBD-VB", 0.2, 0.15, 0.25, 9)])
    assert exp3b.verdict_b(agree) == "agree"
    disagree = table([("VBD-VB", 0.6, 0.55, 0.65, 9), ("NNS-NN", 0.4, 0.35, 0.45, 9),
                      ("NNPS-NNP", 0.3, 0.25, 0.5, 9)])
    assert exp3b.verdict_b(disagree) == "disagree"
    overlap = table([("NNS-NN", 0.4, 0.3, 0.45, 9), ("VBD-VB", 0.35, 0.32, 0.5, 9)])
    assert exp3b.verdict_b(overlap) == "inconclusive"
    assert exp3b.combine(["agree", "agree"]) == "agree"
    assert exp3b.combine(["agree", "inconclusive"]) == "inconclusive"


def test_position_classes_sources():
    tokens = ["dogs", "run", "zyx", "<eos>"]
    tags = {"upos": ["NOUN", "VERB", "NOUN", None], "xpos": ["NNS", "VBP", "NN", None]}
    stoi = {"<unk>": 0, "<eos>": 1, "dogs": 2, "run": 3}
    lex_x = {"dogs": ["NNS"], "run": ["VBP", "NN"], "zyx": ["NN"]}
    lex_u = {"dogs": ["NOUN"], "run": ["VERB", "NOUN"], "zyx": ["NOUN"]}
    classes, stats = exp3b.position_classes(tokens, tags, stoi, lex_x, lex_u)
    assert {"gx:NNS", "kx:NNS", "lx:NNS", "gg:nouns", "kg:nouns", "lg:nouns"} <= set(classes[0])
    # a word the lexicon gives two tags counts for both (and its groups once each)
    assert {"lx:VBP", "lx:NN", "lu:VERB", "lu:NOUN", "lg:verbs", "lg:nouns"} <= set(classes[1])
    # an out-of-vocabulary word: gold classes only, no lexicon or in-vocabulary class
    assert classes[2] == ["gu:NOUN", "gx:NN", "gg:nouns"]
    assert classes[3] is None
    assert stats["oov_rate"] == pytest.approx(1 / 3)
    assert stats["lexicon_tokens_oov_but_in_lexicon"] == 1
