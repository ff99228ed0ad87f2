"""CTC forced alignment (Viterbi over the CTC graph) and per-frame grapheme labels.

For targets y_1..y_U the CTC graph has S = 2U + 1 states z = (blank, y_1, blank, ..., y_U,
blank). With per-frame log-probabilities lp (T x C), the best path maximises
sum_t lp[t, z_{s_t}] subject to s_0 in {0, 1}, s_{T-1} in {S-1, S-2} and
s_t - s_{t-1} in {0, 1}, or 2 when z_{s_t} is not blank and differs from z_{s_t - 2}
(Graves et al. 2006). The recursion is
delta[t, s] = lp[t, z_s] + max(delta[t-1, s], delta[t-1, s-1], delta[t-1, s-2] if allowed),
then backtracking. (torchaudio's ``forced_align`` is not used: torchaudio would replace the
pinned torch build.)

Frame labels (:func:`frame_positions`): the grapheme "being spoken" at frame t is the last
grapheme whose first frame is at or before t (blank frames after a grapheme's emission belong
to it); frames before the first grapheme have none (-1). Lag k in graphemes: the grapheme
k positions before it in the transcript.
"""

from __future__ import annotations

import numpy as np

from memlens.core.errors import MemlensError


def ctc_viterbi(logp: np.ndarray, targets, blank: int = 0) -> tuple[np.ndarray, float]:
    """Best CTC path: (states T (index into the extended sequence, 0..2U), its log score).

    ``logp``: T x C log-probabilities; ``targets``: U label ids (no blanks). Raises a
    one-line error when no path exists (T smaller than U plus the repeats).
    """
    lp = np.asarray(logp, dtype=np.float64)
    y = np.asarray(list(targets), dtype=np.int64)
    T, U = lp.shape[0], len(y)
    if U == 0:
        raise MemlensError("forced alignment needs at least one target symbol")
    if (y == blank).any():
        raise MemlensError("forced alignment targets must not contain the blank")
    need = U + int((y[1:] == y[:-1]).sum())
    if T < need:
        raise MemlensError(f"cannot align {U} symbols to {T} frames (need at least {need})")
    S = 2 * U + 1
    z = np.full(S, blank, dtype=np.int64)
    z[1::2] = y
    skip = np.zeros(S, dtype=bool)
    skip[3::2] = y[1:] != y[:-1]           # s-2 -> s allowed for non-blank z_s != z_{s-2}
    neg = -np.inf
    delta = np.full(S, neg)
    delta[0], delta[1] = lp[0, z[0]], lp[0, z[1]]
    back = np.zeros((T, S), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    for t in range(1, T):
        stay = delta
        one = np.concatenate(([neg], delta[:-1]))
        two = np.where(skip, np.concatenate(([neg, neg], delta[:-2])), neg)
        cand = np.stack([stay, one, two])
        arg = cand.argmax(0)
        back[t] = arg
        delta = cand[arg, np.arange(S)] + lp[t, z]
    end = S - 1 if delta[S - 1] >= delta[S - 2] else S - 2
    score = float(delta[end])
    if not np.isfinite(score):
        raise MemlensError("no CTC path aligns the targets to these frames")
    path = np.empty(T, dtype=np.int64)
    s = end
    for t in range(T - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    return path, score


def path_labels(path: np.ndarray, targets, blank: int = 0) -> np.ndarray:
    """Label per frame of a state path (blank or the target id)."""
    y = np.asarray(list(targets), dtype=np.int64)
    return np.where(path % 2 == 1, y[(path - 1) // 2], blank)


def frame_positions(path: np.ndarray) -> np.ndarray:
    """Index u (0..U-1) of the grapheme being spoken at each frame (module docstring), -1
    before the first grapheme."""
    u = np.where(path % 2 == 1, (path - 1) // 2, -1)
    return np.maximum.accumulate(u) if len(u) else u


def boundaries(path: np.ndarray) -> np.ndarray:
    """First frame of each grapheme (U,), from a state path."""
    pos = frame_positions(path)
    U = int(pos.max()) + 1
    first = np.full(U, -1, dtype=np.int64)
    for t in range(len(pos) - 1, -1, -1):
        if pos[t] >= 0:
            first[pos[t]] = t
    return first


def lag_labels(positions: np.ndarray, targets, max_delay: int) -> np.ndarray:
    """N x (K+1) target ids (K = ``max_delay``): [t, k] = the grapheme k graphemes before the
    one spoken at t (targets[positions[t] - k]), -1 where there is none (before the
    utterance's start)."""
    y = np.asarray(list(targets), dtype=np.int64)
    out = np.full((len(positions), max_delay + 1), -1, dtype=np.int64)
    for k in range(max_delay + 1):
        src = positions - k
        ok = (positions >= 0) & (src >= 0)
        out[ok, k] = y[src[ok]]
    return out
