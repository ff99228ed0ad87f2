"""A stability diagnostic from the state-gradient pass itself (no second pass).

The engine keeps, for every counted pair (target t, delay tau), the Frobenius norm
n_t(tau) = ||G_t(tau)||_F of the raw (unnormalised) Jacobian G_t(tau) = d r_t / d x_{t-tau}
(:attr:`memlens.analyses.gradients.engine.Sums.norms`). From those, with N(tau) pairs at delay
tau:

* mean norm m(tau) = sum_t n_t(tau) / N(tau) and rms norm sqrt(sum_t n_t(tau)^2 / N(tau));
* a finite-time Lyapunov exponent estimate lambda (per step): the least-squares slope of
  log m(tau) over tau = 1..K (delay 0 is left out: G_t(0) is the direct input map, not a
  propagated tangent; the delays with no pair or a zero mean norm too; needs two delays, so
  K >= 2, else None). m(tau) ~ exp(lambda tau): lambda > 0 means the propagated tangents grow
  with delay (exploding, chaotic dynamics), lambda < 0 that they contract;
* the top-1% share per delay: the share of the norm mass sum_t n_t(tau) carried by its
  k = ceil(0.01 N(tau)) largest pairs (0.01 when all pairs are equal, near 1 when a few
  positions dominate the delay's average);
* the memory growth from the memory curve M(tau) = sum of singular values of the normalised
  mean gradient: the ratio M(K) / M(0) and the least-squares slope of log M(tau) over
  tau = 0..K.

Verdict, flags (:data:`FLAGS`):

* "exploding": lambda > :data:`EXPLODING_LAMBDA` (0: any growth of the mean norm);
* "memory grows with delay": M(K) / M(0) > :data:`MEMORY_GROWTH_LIMIT` (1);
* "dominated by few positions": the top-1% share exceeds :data:`TOP1_LIMIT` (0.25) at some
  delay with at least :data:`MIN_PAIRS` (100) pairs whose mean norm is still at least
  :data:`MIN_NORM_FRACTION` (1%) of delay 0's. Far delays of a contracting model are left
  out: there the norms are products of many factors, heavy-tailed by nature (a 1-epoch word
  LSTM on WikiText-2 in window:35 reaches a share of 0.30 at delay 10, where the mean norm is
  0.2% of delay 0's and the memory 0.08%), and too small to move any number a reader uses.
  Measured (K = 20, 2,000-3,000 positions):
  small LSTM LMs trained on PTB (word, H = 64; char on 40-char windows, H = 128), streamed or
  in their training window, give at most 0.024-0.061 (lambda -0.15..-0.18, M(K)/M(0)
  0.03-0.05); contracting random Elman RNNs (gain 0.3-1.2) 0.02-0.07 and random LSTMs (gain
  0.5-5) 0.02-0.10; exploding Elman RNNs (gain 3-4) 0.4-0.8 (lambda 0.2-0.3).

A flagged result carries :attr:`Stability.advice` (analyse the model in the context it was
trained in: a window regime or sentences; rerun in float64 to check), :func:`warn` issues one
line as a :class:`~memlens.core.errors.TrustWarning`, and :meth:`Stability.section` is the
warning box of the HTML report.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memlens.core.errors import TrustWarning

#: the fraction of the largest pairs whose share of the norm mass is reported
TOP_FRACTION = 0.01
#: the top-1% share above which a delay's average counts as dominated by few positions
TOP1_LIMIT = 0.25
#: delays with fewer pairs are not judged by their top-1% share (one pair would be 1/N of it)
MIN_PAIRS = 100
#: delays whose mean norm is below this fraction of delay 0's are not judged by their share
MIN_NORM_FRACTION = 0.01
#: the Lyapunov estimate (per step) above which the gradients count as exploding
EXPLODING_LAMBDA = 0.0
#: M(K) / M(0) above which the memory counts as growing with delay
MEMORY_GROWTH_LIMIT = 1.0
FLAGS = ("exploding", "memory grows with delay", "dominated by few positions")


@dataclass
class Stability:
    """The diagnostic of one result (module docstring). Per delay (S = K + 1 entries):
    ``counts`` N(tau), ``mean_norm`` m(tau), ``rms_norm``, ``top1_share``, ``memory`` M(tau);
    scalars: ``lyapunov`` (per step, None when K < 2), ``memory_ratio`` M(K)/M(0),
    ``memory_slope`` (of log M per step); ``flags`` (a subset of :data:`FLAGS`) and the
    ``advice`` that applies."""

    counts: np.ndarray
    mean_norm: np.ndarray
    rms_norm: np.ndarray
    top1_share: np.ndarray
    memory: np.ndarray
    lyapunov: float | None
    memory_ratio: float | None
    memory_slope: float | None
    flags: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    @property
    def max_top1_share(self) -> float | None:
        """The largest top-1% share over the delays with at least :data:`MIN_PAIRS` pairs and
        a mean norm of at least :data:`MIN_NORM_FRACTION` of delay 0's."""
        ok = (self.counts >= MIN_PAIRS) & np.isfinite(self.top1_share)
        if self.mean_norm.size and np.isfinite(self.mean_norm[0]) and self.mean_norm[0] > 0:
            with np.errstate(invalid="ignore"):
                ok &= self.mean_norm >= MIN_NORM_FRACTION * self.mean_norm[0]
        return float(self.top1_share[ok].max()) if ok.any() else None

    def message(self) -> str:
        """One line: what was found and the advice (the text of the warning)."""
        found = []
        if "exploding" in self.flags:
            found.append(f"the gradient norm grows with delay (Lyapunov estimate "
                         f"{self.lyapunov:.3g} per step)")
        if "memory grows with delay" in self.flags:
            found.append(f"memory grows with delay (sum of singular values x"
                         f"{self.memory_ratio:.3g} from delay 0 to {len(self.memory) - 1})")
        if "dominated by few positions" in self.flags:
            found.append(f"the top 1% of positions carry {self.max_top1_share:.0%} of a "
                         "delay's gradient norm")
        grows = bool({"exploding", "memory grows with delay"} & set(self.flags))
        why = ("the averages are dominated by exploding terms, not a measure of memory" if grows
               else "the averages rest on a few positions")
        return ("state gradients look unstable: " + "; ".join(found) + f". {why.capitalize()}: "
                + "; ".join(self.advice))

    def headline(self) -> dict[str, Any]:
        """The summary entries (headline numbers)."""
        return {"lyapunov_per_step": self.lyapunov, "memory_ratio_K_to_0": self.memory_ratio,
                "top1_share_max": self.max_top1_share,
                "stability_flags": ", ".join(self.flags) or "none"}

    def to_dict(self) -> dict[str, Any]:
        """The "stability" section of result.json (plain JSON values)."""
        return {"lyapunov_per_step": self.lyapunov,
                "lyapunov_fit": "least-squares slope of log mean ||G_t(tau)||_F over tau=1..K",
                "memory_ratio_K_to_0": self.memory_ratio,
                "memory_log_slope": self.memory_slope,
                "top1_share_max": self.max_top1_share, "top1_limit": TOP1_LIMIT,
                "flags": list(self.flags), "advice": list(self.advice),
                "mean_norm": _list(self.mean_norm), "rms_norm": _list(self.rms_norm),
                "top1_share": _list(self.top1_share)}

    def section(self) -> dict[str, Any]:
        """The report's warning box (a prose section with ``warning``)."""
        return {"title": "Warning: the state gradients look unstable",
                "paragraphs": [self.message()], "items": list(self.advice),
                "table": [{"delay": tau, "mean_norm": _num(self.mean_norm[tau]),
                           "top1_share": _num(self.top1_share[tau]),
                           "sum_sv": _num(self.memory[tau])}
                          for tau in _shown(len(self.mean_norm) - 1)],
                "warning": True}


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _list(a: np.ndarray) -> list[float | None]:
    return [_num(v) for v in a]


def _shown(K: int) -> list[int]:
    return sorted({t for t in (0, 1, 2, 5, 10, 20, 50, 100, K) if t <= K})


def slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """Least-squares slope of y over x (None with fewer than two points)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2:
        return None
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def lyapunov_estimate(mean_norm: np.ndarray) -> float | None:
    """lambda: the least-squares slope of log m(tau) over tau = 1..K (finite, positive m only);
    None with fewer than two such delays."""
    tau = np.arange(len(mean_norm))
    ok = (tau >= 1) & np.isfinite(mean_norm) & (mean_norm > 0)
    return slope(tau[ok], np.log(mean_norm[ok]))


def top_share(norms: np.ndarray, counts: np.ndarray, fraction: float = TOP_FRACTION
              ) -> np.ndarray:
    """Per delay (column of the T x S ``norms``, zero where no pair): sum of the
    ceil(fraction N(tau)) largest norms / sum of all (NaN without pairs or mass). The top
    values are summed in descending order in float64 (the same bits for the same norms)."""
    S = norms.shape[1]
    out = np.full(S, np.nan)
    for tau in range(S):
        n = int(counts[tau])
        col = norms[:, tau].astype(np.float64)
        total = col.sum()
        if n < 1 or not total > 0:
            continue
        k = min(col.size, math.ceil(fraction * n))
        top = np.sort(np.partition(col, col.size - k)[col.size - k:])[::-1]
        out[tau] = top.sum() / total
    return out


def advice(context: str, dtype: str) -> list[str]:
    """What to do about a flagged result, for the run's context regime and dtype."""
    out = []
    if not context.startswith(("window", "sentence")):
        out.append("analyse the model in the context it was trained in: --context window:N "
                   "(N = its training window) or --context sentence (context=... in the API)")
    else:
        out.append(f"the context regime is already {context}: check that it matches how the "
                   "model was trained (window length, resets)")
    if dtype != "float64":
        out.append("rerun in float64 (--dtype float64) to check the numbers")
    return out


def diagnose(counts: np.ndarray, norms: np.ndarray | None, memory: np.ndarray,
             context: str = "stream", dtype: str = "float32") -> Stability | None:
    """The :class:`Stability` of one run from its pair counts (S), per-pair norms (T x S,
    :attr:`~memlens.analyses.gradients.engine.Sums.norms`) and memory curve M(tau) (S);
    None when the norms were not kept."""
    if norms is None:
        return None
    counts = np.asarray(counts)
    total = norms.astype(np.float64).sum(0)
    squares = np.square(norms.astype(np.float64)).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
        rms = np.where(counts > 0, np.sqrt(squares / np.maximum(counts, 1)), np.nan)
    share = top_share(norms, counts)
    memory = np.asarray(memory, dtype=np.float64)
    lam = lyapunov_estimate(mean)
    ratio = (float(memory[-1] / memory[0]) if memory.size > 1 and np.isfinite(memory[[0, -1]])
             .all() and memory[0] > 0 else None)
    ok = np.isfinite(memory) & (memory > 0)
    mslope = slope(np.arange(memory.size)[ok], np.log(memory[ok]))
    st = Stability(counts, mean, rms, share, memory, lam, ratio, mslope)
    if lam is not None and lam > EXPLODING_LAMBDA:
        st.flags.append("exploding")
    if ratio is not None and ratio > MEMORY_GROWTH_LIMIT:
        st.flags.append("memory grows with delay")
    top = st.max_top1_share
    if top is not None and top > TOP1_LIMIT:
        st.flags.append("dominated by few positions")
    if st.flags:
        st.advice = advice(context, dtype)
    return st


def of_result(result: Any) -> Stability | None:
    """The diagnostic of a :class:`~memlens.analyses.gradients.result.GradientResult`."""
    raw = result.raw
    memory = result.spectrum(None).sum(1)  # NaN where a delay has no pair
    s = result.settings
    return diagnose(raw.counts, raw.norms, memory, str(s.get("context") or "stream"),
                    str(s.get("dtype") or "float32"))


def warn(result: Any, stacklevel: int = 2) -> None:
    """One :class:`TrustWarning` line when ``result.stability`` is flagged."""
    st = getattr(result, "stability", None)
    if st is not None and st.flagged:
        warnings.warn(st.message(), TrustWarning, stacklevel=stacklevel)


def attach(result: Any) -> Any:
    """Diagnose ``result`` (a GradientResult), set ``result.stability``, warn once if flagged;
    return ``result``."""
    result.stability = of_result(result)
    warn(result, stacklevel=5)  # the caller of state_gradients (via _result)
    return result
