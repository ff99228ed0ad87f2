"""Selectiveness of the spectrum and reading the directions of a :class:`GradientResult`.

**Selectiveness** (issue 24, item 1; docs/selectiveness.md): per delay (and class), how
concentrated the spectrum sigma of Gn(tau) is, :func:`metrics.selectiveness`: the effective
rank exp(H(p)), p = sigma / sum(sigma) (the verdicts' measure: scale free and it uses the
whole spectrum), sigma_1 / sum(sigma) and the top-5 share. Intervals come from the result's
block bootstrap (the same draws as those of sum(sigma), :meth:`GradientResult.bootstrap` and
:func:`class_boot`).

**Reading the directions** (item 4): each top right-singular vector v_i of Gn(tau) is a
direction of normalised embedding space (the basis of Z, :mod:`.normalize`). Every vocabulary
word w has the normalised embedding xn_w = Z (x_w - mu); its projection on v_i is xn_w . v_i.
The words with the largest and smallest projections are the poles of v_i; the Pearson
correlation of the projections with log(1 + count_w) says how much v_i is a frequency
direction, and with each class's indicator (1 when w occurs in the analysed stream with that
class) how much it is a class direction (over the words that occur in the stream). Counts are
the vocabulary's training counts when it has them, else the counts in the analysed stream.
Sign: an SVD fixes v_i only up to sign; we orient v_i so that the word with the largest
absolute projection lies at the positive pole.

Memory: the result keeps the normalised table (V x r float32, 4 V r bytes) when that is at
most :data:`TABLE_LIMIT` bytes, so any delay, class and k can be read; otherwise only the
projections of every word on the top :data:`KEPT` vectors of the overall Gn(tau) at each
delay (S x KEPT x V float32, 12 S V bytes), computed once at the end of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memlens.analyses.gradients import metrics
from memlens.core.errors import MemlensError
from memlens.core.limits import check_int, check_memory

TABLE_LIMIT = 64 << 20  # bytes of the normalised table kept in the result
KEPT = 3                # top vectors kept per delay when the table is not
REPORT_WORDS = 5        # pole words shown in the report and the summary
DIRECTIONS_CSV = "directions.csv"
PLOT_FILE = "selectiveness.png"
NAMES = {"eff_rank": "effective rank exp(H(sigma / sum sigma))",
         "sv1_share": "sigma_1 / sum(sigma)", "sv5_share": "top-5 share of sum(sigma)"}


@dataclass
class WordTable:
    """The vocabulary side of :func:`read_directions`: ``words`` (V), ``counts`` (V, the
    frequency source ``freq_source``: "vocabulary" or "stream"), ``seen`` (V bool, occurs in
    the analysed stream), ``members`` (V x C bool class indicators or None), and either
    ``normalized`` (V x r float32) or ``projections`` (S x KEPT x V float32)."""

    words: list[str]
    counts: np.ndarray
    freq_source: str
    seen: np.ndarray
    members: np.ndarray | None = None
    normalized: np.ndarray | None = None
    projections: np.ndarray | None = None


def word_table(result, vocab, table: np.ndarray, values, positions: np.ndarray,
               memberships) -> WordTable:
    """Build the :class:`WordTable` of a token run (vocab: a Vocab or None; table: V x E;
    values: the stream's ids; positions/memberships: the rows and class lists per engine
    position)."""
    V = table.shape[0]
    words = list(vocab.itos) if vocab is not None else [str(i) for i in range(V)]
    stream = np.bincount(np.asarray(values, dtype=np.int64).ravel(), minlength=V)[:V]
    vc = getattr(vocab, "counts", None)
    if vc is not None and sum(vc) > 0:
        counts, source = np.asarray(vc, dtype=np.int64), "vocabulary"
    else:
        counts, source = stream, "stream"
    members = None
    C = len(result.class_names)
    if C and memberships is not None:
        check_memory(V * C, "the word x class indicators")
        members = np.zeros((V, C), dtype=bool)
        for row, m in zip(positions, memberships):
            if m:
                members[row, m] = True
    norm = result.normalization
    out = WordTable(words, counts, source, stream > 0, members)
    r = norm.Z.shape[0]
    if 4 * V * r <= TABLE_LIMIT:
        out.normalized = ((table - norm.mu) @ norm.Z.T).astype(np.float32)
    else:
        S, k = result.max_delay + 1, min(KEPT, r)
        check_memory(4.0 * S * k * V + 8.0 * V * r, "the word projections")
        xn = (table - norm.mu) @ norm.Z.T
        out.projections = np.stack([(xn @ result.right_singular_vectors(t)[:k].T).T
                                    for t in range(S)]).astype(np.float32)
    return out


# -- selectiveness --------------------------------------------------------------------------------
def _measure(measure: str) -> int:
    if measure not in metrics.SELECTIVENESS:
        raise MemlensError(f"unknown selectiveness measure {measure!r}: choose "
                           f"{', '.join(metrics.SELECTIVENESS)}")
    return metrics.SELECTIVENESS.index(measure)


def selectiveness(result, tau: int | None, cls, measure: str = "eff_rank"):
    """The measure for one delay (float) or every delay (S,)."""
    j = _measure(measure)
    if tau is None:
        return metrics.selectiveness(result.spectrum(cls))[:, j]
    return float(metrics.selectiveness(result.singular_values(tau, cls))[j])


def class_boot(result, c: int, resamples: int, level: float, seed: int) -> dict:
    """The block bootstrap of class ``c`` at ``raw.ci_delays`` (sum(sigma) and selectiveness,
    :func:`metrics.block_bootstrap`), cached on the result."""
    key = (c, resamples, level, seed)
    cache = result.__dict__.setdefault("_class_boot", {})
    if key not in cache:
        raw = result.raw
        counts = raw.class_block_counts[:, c][:, raw.ci_delays]
        cache[key] = metrics.block_bootstrap(raw.class_block_sums[:, c], counts,
                                             result.normalization.D, resamples, level, seed,
                                             stat=metrics.selectiveness)
    return cache[key]


def interval(result, cls, measure: str, resamples: int | None, level: float,
             seed: int | None) -> dict[str, np.ndarray]:
    """{"se", "low", "high"} (each S) of one selectiveness measure."""
    from memlens.analyses.gradients.result import _boot_args

    j = _measure(measure)
    resamples, level, seed = _boot_args(result.resamples if resamples is None else resamples,
                                        level, result.seed if seed is None else seed)
    S = result.max_delay + 1
    out = {k: np.full(S, np.nan) for k in ("se", "low", "high")}
    if cls is None:
        boot = result.bootstrap(resamples, level, seed)
        for k in out:
            out[k] = boot[f"stat_{k}"][:, j].copy()
        return out
    c = result._cls(cls)
    if result.raw.class_block_sums is None or not result.raw.ci_delays:
        return out
    boot = class_boot(result, c, resamples, level, seed)
    for i, d in enumerate(result.raw.ci_delays):
        for k in out:
            out[k][d] = boot[f"stat_{k}"][i, j]
    return out


def cells(result, cls, tau: int, sv: np.ndarray | None, resamples: int) -> dict[str, Any]:
    """The selectiveness columns of one table row: eff_rank, sv1_share, sv5_share and their
    ``_low`` / ``_high`` interval bounds (None where undefined)."""
    values = metrics.selectiveness(sv) if sv is not None else np.full(3, np.nan)
    row: dict[str, Any] = {}
    ci = None
    if sv is not None and resamples:
        key = (cls, resamples)
        cache = result.__dict__.setdefault("_sel_rows", {})
        if key not in cache:
            cache[key] = [interval(result, cls, m, resamples, 0.95, None)
                          for m in metrics.SELECTIVENESS]
        ci = cache[key]
    for j, m in enumerate(metrics.SELECTIVENESS):
        row[m] = _num(values[j])
        row[f"{m}_low"] = _num(ci[j]["low"][tau]) if ci else None
        row[f"{m}_high"] = _num(ci[j]["high"][tau]) if ci else None
    return row


# -- reading the directions -----------------------------------------------------------------------
def _label(word: str) -> str:
    return word if word and word.split() == [word] else repr(word)


def _corr(x: np.ndarray, y: np.ndarray) -> float | None:
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return _num(np.corrcoef(x, y)[0, 1])


def read_directions(result, tau: int, k: int = 3, words: int = 10, cls=None) -> list[dict]:
    """One dict per top right-singular vector v_i (i = 1..k) of Gn(tau) (class ``cls``).

    Returns
    -------
    list of dict
        delay, direction (i), sigma, sigma_share (sigma_i / sum sigma), positive and negative
        (lists of (word, projection, count), ``words`` each, strongest first), corr_log_freq
        (Pearson r of the projections with log(1 + count) over the words with count > 0),
        corr_class ({class: r} over the words seen in the stream; empty without classes),
        freq_source.

    Raises
    ------
    MemlensError
        Continuous inputs (no vocabulary); k beyond the kept vectors when only projections
        were kept (large V x r), or a class then.
    """
    wt = result.words
    if wt is None:
        raise MemlensError("reading the directions needs token inputs (an embedding table "
                           "and its vocabulary): this result has none")
    tau = result._tau(tau)
    k = check_int(k, "k", 1, 1 << 16)
    words = check_int(words, "words", 1, 1 << 20)
    sv = result.singular_values(tau, cls)
    if not np.isfinite(sv).all():
        return []
    if wt.normalized is not None:
        vt = result.right_singular_vectors(tau, cls)[:k]
        proj = (wt.normalized.astype(np.float64) @ vt.T).T          # k x V
    else:
        if cls is not None or k > wt.projections.shape[1]:
            raise MemlensError(f"only the top {wt.projections.shape[1]} directions of the "
                               "overall gradient were kept (a large vocabulary table): "
                               f"ask for k <= {wt.projections.shape[1]} without a class")
        proj = wt.projections[tau, :k].astype(np.float64)
    total = sv.sum()
    logf = np.log1p(wt.counts.astype(np.float64))
    freq = wt.counts > 0
    out = []
    for i, p in enumerate(proj):
        if p[np.argmax(np.abs(p))] < 0:
            p = -p
        order = np.argsort(-p, kind="stable")
        pos = [(wt.words[j], float(p[j]), int(wt.counts[j])) for j in order[:words]]
        neg = [(wt.words[j], float(p[j]), int(wt.counts[j])) for j in order[::-1][:words]]
        corr_class = {}
        if wt.members is not None:
            for c, name in enumerate(result.class_names):
                corr_class[name] = _corr(p[wt.seen], wt.members[wt.seen, c].astype(float))
        out.append({"delay": tau, "direction": i + 1, "sigma": _num(sv[i]) if i < sv.size
                    else None, "sigma_share": _num(sv[i] / total) if i < sv.size and total > 0
                    else None, "positive": pos, "negative": neg,
                    "corr_log_freq": _corr(p[freq], logf[freq]), "corr_class": corr_class,
                    "freq_source": wt.freq_source})
    return out


def _flat(d: dict, classes: list[str]) -> dict[str, Any]:
    row = {k: d[k] for k in ("delay", "direction", "sigma", "sigma_share")}
    row["positive"] = " ".join(_label(w) for w, _, _ in d["positive"])
    row["negative"] = " ".join(_label(w) for w, _, _ in d["negative"])
    row["corr_log_freq"] = d["corr_log_freq"]
    for c in classes:
        row[f"corr_{c}"] = d["corr_class"].get(c)
    return row


def direction_rows(result, k: int = KEPT, words: int = 10) -> list[dict]:
    """The flat rows of :func:`directions_frame` (cached on the result)."""
    k = check_int(k, "k", 1, 1 << 16)
    words = check_int(words, "words", 1, 1 << 20)
    if result.words is None:
        return []
    key = (k, words)
    hit = result.__dict__.get("_direction_rows")
    if hit is None or hit[0] != key:
        k = min(k, result.normalization.rank)
        rows = [_flat(d, result.class_names) for t in range(result.max_delay + 1)
                for d in read_directions(result, t, k, words)]
        hit = (key, rows)
        result.__dict__["_direction_rows"] = hit
    return hit[1]


def directions_frame(result, k: int = KEPT, words: int = 10):
    """DataFrame of :func:`read_directions` at every delay: delay, direction, sigma,
    sigma_share, positive, negative (words joined by spaces), corr_log_freq, corr_<class>."""
    import pandas as pd

    from memlens.runtime.result import clean

    return pd.DataFrame(clean(direction_rows(result, k, words)))


def saved_frame(result):
    """The directions of a result as a DataFrame: computed for a GradientResult, read back
    from result.json's ``direction_table`` for a loaded one."""
    import pandas as pd

    if hasattr(result, "raw"):
        return directions_frame(result)
    return pd.DataFrame(result.extra().get("direction_table") or [])


# -- the result format ----------------------------------------------------------------------------
def _later(K: int) -> int:
    """The larger delay of the summary and report: 5, or K when smaller."""
    return min(5, K)


def summary(result) -> dict[str, Any]:
    """Effective rank at delays 0, 1, 5, K (with interval when computed) and the pole words
    of v_1 at delay 0 and at :func:`_later`."""
    out: dict[str, Any] = {}
    er = selectiveness(result, None, None)
    ci = interval(result, None, "eff_rank", None, 0.95, None) if result.resamples else None
    for tau in sorted({0, 1, 5, result.max_delay}):
        if tau <= result.max_delay:
            out[f"eff_rank_tau{tau}"] = _num(er[tau])
            if ci is not None:
                out[f"eff_rank_tau{tau}_ci"] = [_num(ci["low"][tau]), _num(ci["high"][tau])]
    if result.words is not None:
        rows = {(r["delay"], r["direction"]): r for r in direction_rows(result)}
        for tau in sorted({0, _later(result.max_delay)}):
            r = rows.get((tau, 1))
            if r is not None:
                out[f"v1_tau{tau}_positive"] = " ".join(r["positive"].split(" ")[:REPORT_WORDS])
                out[f"v1_tau{tau}_negative"] = " ".join(r["negative"].split(" ")[:REPORT_WORDS])
    return out


def extra(result) -> dict[str, Any]:
    """The report sections ``selectiveness`` and ``directions`` and the tidy
    ``direction_table`` of result.json."""
    from memlens.analyses.gradients.contrasts import REPORT_DELAYS

    K = result.max_delay
    delays = sorted({d for d in REPORT_DELAYS if d <= K} | {K})
    rows = {(r["class"], r["delay"]): r for r in result.rows()}
    table = []
    for d in delays:
        r = rows[("all", d)]
        entry: dict[str, Any] = {"delay": d}
        for m in metrics.SELECTIVENESS:
            v = r.get(m)
            cell = "n/a" if v is None else f"{v:.3g}"
            if r.get(f"{m}_low") is not None:
                cell += f" [{r[f'{m}_low']:.3g}, {r[f'{m}_high']:.3g}]"
            entry[NAMES[m]] = cell
        table.append(entry)
    out: dict[str, Any] = {"selectiveness": {
        "title": "Selectiveness: how concentrated the memory is",
        "paragraphs": [
            "Per delay, the spectrum sigma of the normalised average gradient (all words): "
            "the effective rank exp(H(p)), p = sigma / sum(sigma), is the effective number of "
            "embedding directions the state reacts to (1: one direction; lower = more "
            "selective); it is the measure the verdicts use (scale free, whole spectrum). "
            "sigma_1 / sum(sigma) and the top-5 share are given too. Brackets: 95% block "
            "bootstrap interval. Per class: the table columns eff_rank, sv1_share, sv5_share."],
        "table": table}}
    drows = direction_rows(result)
    if drows:
        shown = [r for r in drows if r["delay"] in {0, _later(K)}]
        compact = [{"delay": r["delay"], "direction": r["direction"],
                    "sigma share": r["sigma_share"],
                    "positive pole": " ".join(r["positive"].split(" ")[:REPORT_WORDS]),
                    "negative pole": " ".join(r["negative"].split(" ")[:REPORT_WORDS]),
                    "r(log freq)": r["corr_log_freq"], **_best_class(r, result.class_names)}
                   for r in shown]
        source = result.words.freq_source
        out["directions"] = {
            "title": "Reading the directions: words at the poles of the top singular vectors",
            "paragraphs": [
                "Each right-singular vector v_i of the normalised average gradient is a "
                "direction of normalised embedding space; the words whose normalised "
                "embeddings project most positively and most negatively on it are its poles "
                "(sign: the word with the largest absolute projection is positive). r(log "
                f"freq): Pearson correlation of the projections with log(1 + count) (counts "
                f"from the {source}); best class: the class whose indicator correlates most "
                "strongly with the projection.",
                f"All delays and directions, {KEPT} per delay: {DIRECTIONS_CSV}."],
            "table": compact}
        out["direction_table"] = drows
    return out


def _best_class(row: dict, classes: list[str]) -> dict[str, Any]:
    found = [(abs(row[f"corr_{c}"]), c) for c in classes if row.get(f"corr_{c}") is not None]
    if not found:
        return {}
    _, c = max(found)
    return {"best class": c, "r(class)": row[f"corr_{c}"]}


def figures(result, out: Path) -> list[dict[str, str]]:
    """Write selectiveness.png (effective rank vs delay per class) and directions.csv."""
    from memlens.runtime.plotting import pyplot
    from memlens.runtime.result import plot_series, write_table_csv

    drows = direction_rows(result)
    if drows:
        write_table_csv(out / DIRECTIONS_CSV, drows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        plot_series(ax, result.rows(), {"x": "delay", "y": "eff_rank", "group": ["class"],
                                        "low": "eff_rank_low", "high": "eff_rank_high",
                                        "title": "Selectiveness: effective rank by delay",
                                        "xlabel": "delay tau",
                                        "ylabel": "exp(H(sigma / sum sigma))"})
        fig.tight_layout()
        fig.savefig(out / PLOT_FILE, dpi=110)
    finally:
        plt.close(fig)
    return [{"file": PLOT_FILE, "title": "Selectiveness: effective rank by delay",
             "caption": "The effective number of embedding directions the state reacts to "
                        "tau steps later, exp of the entropy of the normalised singular "
                        "values (lower = more selective); bands: 95% block bootstrap."}]


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


__all__ = ["WordTable", "read_directions", "directions_frame", "saved_frame", "word_table"]
