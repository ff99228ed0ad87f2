"""CTC forced alignment: Viterbi against brute-force path enumeration, per-frame labels, and
the acceptance test on tones with boundaries known by construction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from memlens.analyses.speech.align import (
    boundaries,
    ctc_viterbi,
    frame_positions,
    lag_labels,
    path_labels,
)
from memlens.core.errors import MemlensError


def collapse(seq, blank=0):
    out = []
    for i, s in enumerate(seq):
        if s != blank and (i == 0 or s != seq[i - 1]):
            out.append(s)
    return out


def brute_force(lp, y):
    """Best frame labelling that collapses to y, by enumerating all C^T labellings."""
    T, C = lp.shape
    best, arg = -np.inf, None
    for seq in itertools.product(range(C), repeat=T):
        if collapse(seq) == list(y):
            score = sum(lp[t, s] for t, s in enumerate(seq))
            if score > best:
                best, arg = score, seq
    return best, arg


@pytest.mark.parametrize("T,C,y", [(4, 3, [1, 2]), (5, 3, [1, 1]), (6, 4, [2, 3, 2]),
                                   (5, 2, [1]), (7, 3, [1, 2, 2]), (3, 3, [1, 2, 1])])
def test_viterbi_matches_brute_force(T, C, y):
    rng = np.random.default_rng(T * 10 + C)
    for _ in range(5):
        lp = np.log(rng.dirichlet(np.ones(C), size=T))
        path, score = ctc_viterbi(lp, y)
        best, arg = brute_force(lp, y)
        assert score == pytest.approx(best, abs=1e-9)
        labels = path_labels(path, y)
        assert collapse(list(labels)) == list(y)
        assert sum(lp[t, s] for t, s in enumerate(labels)) == pytest.approx(best, abs=1e-9)
        assert list(labels) == list(arg)  # continuous scores: the optimum is unique


def test_viterbi_refuses_impossible_and_bad_targets():
    lp = np.log(np.full((3, 3), 1 / 3))
    with pytest.raises(MemlensError, match="cannot align"):
        ctc_viterbi(lp, [1, 1, 2])          # needs 4 frames (a blank between the 1s)
    with pytest.raises(MemlensError, match="blank"):
        ctc_viterbi(lp, [0, 1])
    with pytest.raises(MemlensError, match="at least one"):
        ctc_viterbi(lp, [])


def test_frame_positions_and_lag_labels_known_answer():
    # states: blank, a, a, blank, b, b, blank, c  (y = [5, 6, 7]; state 2u+1 = grapheme u)
    path = np.array([0, 1, 1, 2, 3, 3, 4, 5])
    pos = frame_positions(path)
    assert pos.tolist() == [-1, 0, 0, 0, 1, 1, 1, 2]
    assert boundaries(path).tolist() == [1, 4, 7]
    lab = lag_labels(pos, [5, 6, 7], 2)
    assert lab[:, 0].tolist() == [-1, 5, 5, 5, 6, 6, 6, 7]
    assert lab[:, 1].tolist() == [-1, -1, -1, -1, 5, 5, 5, 6]
    assert lab[:, 2].tolist() == [-1] * 7 + [5]


def test_tone_boundaries_within_one_frame():
    """Acceptance: concatenated tones, one frequency per symbol, segment boundaries known by
    construction (true boundary: the onset sample in frame units, (onset - 200) / 160, the
    frame whose window is centred on it); emissions built from the tones' log-mel bands;
    >= 95% of the forced alignment's boundaries within one 10 ms frame of the truth."""
    pytest.importorskip("librosa")
    from memlens.data.speech.corpus import HOP, SAMPLE_RATE, WIN, logmel

    rng = np.random.default_rng(0)
    freqs = {s: 300.0 * 1.25 ** (s - 1) for s in range(1, 9)}    # 8 symbols, 300..1430 Hz

    def tone(f, n):
        t = np.arange(n) / SAMPLE_RATE
        return 0.5 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))

    templates = np.stack([logmel(tone(freqs[s], 8000).astype(np.float32)).mean(0)
                          for s in range(1, 9)])
    hits, total = 0, 0
    for _ in range(20):
        syms = [int(rng.integers(1, 9))]
        while len(syms) < 12:
            s = int(rng.integers(1, 9))
            if s != syms[-1]:
                syms.append(s)
        lengths = rng.integers(8 * HOP, 30 * HOP, size=len(syms))  # 80..300 ms segments
        audio = np.concatenate([tone(freqs[s], n) for s, n in zip(syms, lengths)])
        feats = logmel(audio.astype(np.float32))
        # emission score of symbol s: the log-mel energy in the band of its tone (the band
        # where its template peaks); blank: 5 nats below the best symbol
        e = feats[:, templates.argmax(1)]
        scores = np.concatenate([e.max(1, keepdims=True) - 5.0, e], axis=1)
        logp = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
        path, _ = ctc_viterbi(logp, syms)
        found = boundaries(path)[1:]
        starts = np.cumsum(lengths)[:-1]                        # sample where symbol u starts
        true = (starts - WIN / 2) / HOP                          # frame centred on the onset
        hits += int((np.abs(found - true) <= 1.0).sum())
        total += len(true)
    assert hits / total >= 0.95, f"{hits}/{total} boundaries within one frame"
