"""Tag contrasts: how much of a within-class property (number, tense, degree) the state keeps.

A contrast A-B (e.g. NNS-NN, plural minus singular nouns) is the property direction
d = m_A - m_B, the difference of the class-mean embeddings (:meth:`GradientResult.direction`,
over vocabulary types by default, as the original's ``--avg_emb``). Per delay tau, on the
normalised gradient averaged over the words of the contrast (DESIGN.md section 1):

* relative memory |Gn_AB(tau) dn| / sigma_1(Gn_AB(tau)), dn = Z d / |Z d|;
* top-k alignment |V_k^T dn| (with |V_1^T dn| and the share of the singular-value sum that the
  top k carry), V the right singular vectors of Gn_AB(tau).

**Which average.** Gn_AB(tau) is the gradient averaged over the source positions whose word
belongs to A or to B (the pooled class sums (S_A + S_B) / (N_A + N_B); a word in both, with a
lexicon that gives it both tags, counts twice, as it counts in each class). We take the words
of the contrast's two classes, not of the coarse class (all nouns for NNS-NN), because (1) the
direction is made of exactly those words, so the measure asks how the state reacts to the
input words that carry the property; (2) a coarse class would add words that do not carry it
(proper nouns for NNS-NN) and dilute the average by their frequency; (3) it is defined for any
pair a user names, whether or not a coarse class exists among the classes. For a coarse-class
reading, give the coarse classes as classes (``groups:FILE``) and name a pair of them.

**Intervals.** The block bootstrap of the result (:mod:`memlens.runtime.bootstrap`, "indices"
draws, the result's seed and resamples, the same weights as
:meth:`GradientResult.class_bootstrap`) resamples the per-block class sums, kept at the delays
``raw.ci_delays`` (other delays: no interval); the direction d is held fixed (the interval is
the sampling uncertainty of the gradient average for that direction).

**Presets.** :data:`PRESETS`: ``ptb``, the within-class contrasts of the PTB tag set
(NNS-NN, NNPS-NNP, VBD-VB, VBZ-VBP, VBG-VB, VBN-VB, JJR-JJ, JJS-JJ, RBR-RB), for XPOS classes
or a PTB-tag lexicon; ``upos``, between-class contrasts of the Universal POS tags (NOUN-VERB,
NOUN-ADJ, VERB-ADJ, ADJ-ADV, PROPN-NOUN, AUX-VERB): UPOS has no tags for number, tense or
degree, so within-class contrasts need XPOS. A preset pair whose class is not among the
result's classes, or has no words in the data, is left out with one warning line; a pair the
user names must name two different classes of the result.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memlens.analyses.gradients import metrics
from memlens.core.errors import MemlensError, TrustWarning
from memlens.core.limits import check_int, shown
from memlens.runtime.bootstrap import block_weights, percentile_interval

PRESETS: dict[str, tuple[tuple[str, str], ...]] = {
    "ptb": (("NNS", "NN"), ("NNPS", "NNP"), ("VBD", "VB"), ("VBZ", "VBP"), ("VBG", "VB"),
            ("VBN", "VB"), ("JJR", "JJ"), ("JJS", "JJ"), ("RBR", "RB")),
    "upos": (("NOUN", "VERB"), ("NOUN", "ADJ"), ("VERB", "ADJ"), ("ADJ", "ADV"),
             ("PROPN", "NOUN"), ("AUX", "VERB")),
}
#: delays of the compact report table (those within 0..K), besides K
REPORT_DELAYS = (0, 1, 2, 5, 10)
CSV_FILE = "contrasts.csv"
PLOT_FILE = "contrasts.png"


@dataclass(frozen=True)
class Contrast:
    """One contrast A-B: the direction mean embedding of A minus that of B; ``preset``: it came
    from a preset (left out, with a warning, when its classes are missing)."""

    a: str
    b: str
    preset: bool = False

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"


# -- parsing -------------------------------------------------------------------------------------
def _split_pair(item: str, names: Sequence[str]) -> tuple[str, str]:
    """``A-B`` -> (A, B), split at the one ``-`` that leaves two class names (tags may hold a
    ``-``, e.g. ``-LRB-``)."""
    cuts = [(item[:i], item[i + 1:]) for i, ch in enumerate(item)
            if ch == "-" and item[:i] and item[i + 1:]]
    if not cuts:
        raise MemlensError(f"contrast {item!r}: give two classes as A-B, or a preset "
                           f"({', '.join(PRESETS)})")
    known = set(names)
    valid = [c for c in cuts if c[0] in known and c[1] in known]
    if len(valid) > 1:
        raise MemlensError(f"contrast {item!r} is ambiguous: "
                           + " or ".join(f"{a} - {b}" for a, b in valid))
    if not valid:
        a, b = cuts[0] if len(cuts) == 1 else next(
            (c for c in cuts if c[0] in known or c[1] in known), cuts[0])
        missing = a if a not in known else b
        raise MemlensError(f"contrast {item!r}: class {missing!r} is not among the classes "
                           f"({_few(names)})")
    return valid[0]


def _few(names: Sequence[str], n: int = 12) -> str:
    return ", ".join(list(names)[:n]) + (", ..." if len(names) > n else "") or "(none)"


def _items(spec: Any) -> list:
    """The items of a contrasts spec: a comma-separated string or a sequence of strings and
    (A, B) pairs."""
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",")]
    elif isinstance(spec, (list, tuple)) and not isinstance(spec, (bytes, bytearray)):
        items = list(spec)
    else:
        raise MemlensError(f"contrasts must be a preset ({', '.join(PRESETS)}), pairs 'A-B,C-D' "
                           f"or a list of 'A-B' / (A, B), got {shown(spec)}")
    if not items or any(isinstance(i, str) and not i for i in items):
        raise MemlensError(f"contrasts {shown(spec)}: an empty pair (give A-B,C-D or a "
                           "preset)")
    return items


def parse_contrasts(spec: Any, class_names: Sequence[str]) -> list[Contrast]:
    """The contrasts of ``spec`` among ``class_names``, in order, without repeats.

    Parameters
    ----------
    spec : str or sequence
        A preset name (:data:`PRESETS`), pairs ``"A-B,C-D"`` (presets may be mixed in,
        ``"ptb,NOUN-VERB"``), or a sequence of ``"A-B"`` strings, preset names and (A, B)
        pairs.
    class_names : sequence of str
        The classes of the result.

    Returns
    -------
    list of Contrast
        Preset pairs are kept even when a class is missing (marked ``preset``; the
        computation leaves them out with one warning line).

    Raises
    ------
    MemlensError
        One line: no classes; a named pair that does not name two different classes among
        ``class_names``; a preset none of whose pairs applies; a malformed spec.
    """
    names = list(class_names or [])
    if not names:
        raise MemlensError("contrasts need word classes (--classes xpos, upos or "
                           "lexicon:FILE): the result has none")
    out: list[Contrast] = []
    for item in _items(spec):
        if isinstance(item, str) and item.lower() in PRESETS:
            pairs = [Contrast(a, b, True) for a, b in PRESETS[item.lower()]]
            if not any(c.a in names and c.b in names for c in pairs):
                raise MemlensError(f"no {item.lower()} contrast has both classes among the "
                                   f"classes ({_few(names)}): {item.lower()} needs "
                                   + ("PTB tags (--classes xpos, or a lexicon of PTB tags)"
                                      if item.lower() == "ptb" else "UPOS tags (--classes upos)"))
        elif isinstance(item, str):
            pairs = [Contrast(*_split_pair(item, names))]
        elif (isinstance(item, (tuple, list)) and len(item) == 2
              and all(isinstance(x, str) for x in item)):
            for x in item:
                if x not in names:
                    raise MemlensError(f"contrast {item[0]}-{item[1]}: class {x!r} is not "
                                       f"among the classes ({_few(names)})")
            pairs = [Contrast(item[0], item[1])]
        else:
            raise MemlensError(f"a contrast must be 'A-B', a preset or a pair (A, B) of class "
                               f"names, got {shown(item)}")
        for c in pairs:
            if c.a == c.b:
                raise MemlensError(f"contrast {c.name}: a class against itself (give two "
                                   "different classes)")
            if any((o.a, o.b) == (c.a, c.b) for o in out):
                continue
            out.append(c)
    return out


def spec_text(spec: Any) -> Any:
    """The JSON-able record of a contrasts spec (settings["contrasts"]): a string as given,
    a sequence as a list of strings ``A-B`` / preset names."""
    if isinstance(spec, str):
        return spec
    return [s if isinstance(s, str) else f"{s[0]}-{s[1]}" for s in _items(spec)]


# -- the measures --------------------------------------------------------------------------------
def _measures(gn: np.ndarray, dn: np.ndarray, k: int) -> np.ndarray:
    """For a stack of normalised gradients (N x H x r) and a unit direction dn (r): N x 4 of
    (relative memory, |V_1^T dn|, |V_k^T dn|, share of the top k); NaN rows where Gn is not
    finite or zero. The formulas of :func:`metrics.relative_memory` / :func:`metrics.alignment`
    on a stack."""
    out = np.full((gn.shape[0], 4), np.nan)
    ok = np.isfinite(gn).all(axis=(1, 2))
    if not ok.any():
        return out
    _, s, vt = np.linalg.svd(gn[ok], full_matrices=True)
    k = min(k, vt.shape[1])
    s1, total = s[:, 0], s.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.linalg.norm(gn[ok] @ dn, axis=1) / s1
        share = s[:, :k].sum(1) / total
    rel[~(s1 > 0)] = np.nan
    share[~(total > 0)] = np.nan
    out[ok] = np.stack([rel, np.abs(vt[:, 0] @ dn), np.linalg.norm(vt[:, :k] @ dn, axis=1),
                        share], axis=1)
    return out


def _pooled(result, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts S, normalised mean S x H x r) of the gradient averaged over classes a and b."""
    raw = result.raw
    counts = raw.class_counts[a] + raw.class_counts[b]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (raw.class_sums[a] + raw.class_sums[b]) / counts[:, None, None]
    mean[counts == 0] = np.nan
    return counts, result.normalization.apply(mean)


def _bootstrap(result, a: int, b: int, dn: np.ndarray, k: int, weights: np.ndarray,
               level: float) -> dict[int, np.ndarray]:
    """{delay: 3 x 4 (se, low, high) of the measures} at the delays with per-block class
    sums, from the result's resample ``weights`` (R x B)."""
    raw = result.raw
    if raw.class_block_sums is None or not raw.ci_delays or not len(weights):
        return {}
    out = {}
    for j, tau in enumerate(raw.ci_delays):
        sums = raw.class_block_sums[:, a, j] + raw.class_block_sums[:, b, j]   # B x H x E
        counts = raw.class_block_counts[:, a, tau] + raw.class_block_counts[:, b, tau]
        tot = weights @ counts.astype(np.float64)
        good = tot > 0
        if good.sum() < 2:
            continue
        means = (weights[good] @ sums.reshape(len(sums), -1)) / tot[good, None]
        gn = result.normalization.apply(means.reshape(-1, *sums.shape[1:]))
        draws = _measures(gn, dn, k)
        draws = draws[np.isfinite(draws).all(1)]
        if len(draws) < 2:
            continue
        low, high = percentile_interval(draws, level)
        out[tau] = np.stack([draws.std(0, ddof=1), low, high])
    return out


def contrast_rows(result, pairs: Any = "ptb", k: int = 5, resamples: int | None = None,
                  level: float = 0.95, seed: int | None = None) -> tuple[list[dict], list[str]]:
    """The tag contrasts of a :class:`GradientResult` (see the module docstring).

    Parameters
    ----------
    result : GradientResult
        The state-gradient result (with classes).
    pairs : str or sequence
        The contrasts (:func:`parse_contrasts`).
    k : int
        Top right-singular vectors of the alignment (at most the input rank).
    resamples : int or None
        Bootstrap resamples; None: the result's (``settings["bootstrap"]``); 0: none.
    level : float
        Interval level.
    seed : int or None
        Bootstrap seed; None: the result's.

    Returns
    -------
    rows : list of dict
        One per (contrast, delay): contrast, a, b, delay, count (pairs of the pooled
        average), relmem, relmem_se, relmem_low, relmem_high, k, alignment (|V_k^T dn|),
        alignment_low, alignment_high, align1 (|V_1^T dn|), share (the top k's share of the
        singular-value sum); None where undefined (no pair, no interval at that delay).
    skipped : list of str
        The contrasts left out, each with why.
    """
    from memlens.analyses.gradients.result import _boot_args

    k = check_int(k, "k", 1, 1 << 16)
    resamples, level, seed = _boot_args(result.resamples if resamples is None else resamples,
                                        level, result.seed if seed is None else seed)
    contrasts = parse_contrasts(pairs, result.class_names)
    skipped: list[str] = []
    rows: list[dict] = []
    B = result.raw.block_counts.shape[0]
    weights = block_weights(B, resamples, seed, draw="indices") if B > 1 else np.zeros((0, B))
    for c in contrasts:
        if c.a not in result.class_names or c.b not in result.class_names:  # preset pairs
            absent = [x for x in (c.a, c.b) if x not in result.class_names]
            skipped.append(f"{c.name} ({_classes(absent)} not among the classes)")
            continue
        a, b = result.class_names.index(c.a), result.class_names.index(c.b)
        emb = result.class_embeddings
        empty = [x for x, i in ((c.a, a), (c.b, b)) if emb is None or not np.isfinite(emb[i]).all()]
        if empty:
            skipped.append(f"{c.name} ({_classes(empty)} "
                           f"{'has' if len(empty) == 1 else 'have'} no words in the data)")
            continue
        try:
            dn = metrics.unit_direction(emb[a] - emb[b], result.normalization.Z)
        except ValueError as exc:
            skipped.append(f"{c.name} ({exc})")
            continue
        counts, gn = _pooled(result, a, b)
        point = _measures(gn, dn, k)
        boot = _bootstrap(result, a, b, dn, k, weights, level)
        for tau in range(result.max_delay + 1):
            v, ci = point[tau], boot.get(tau)
            rows.append({"contrast": c.name, "a": c.a, "b": c.b, "delay": tau,
                         "count": int(counts[tau]), "relmem": _num(v[0]),
                         "relmem_se": _num(ci[0, 0]) if ci is not None else None,
                         "relmem_low": _num(ci[1, 0]) if ci is not None else None,
                         "relmem_high": _num(ci[2, 0]) if ci is not None else None,
                         "k": min(k, gn.shape[2]), "alignment": _num(v[2]),
                         "alignment_low": _num(ci[1, 2]) if ci is not None else None,
                         "alignment_high": _num(ci[2, 2]) if ci is not None else None,
                         "align1": _num(v[1]), "share": _num(v[3])})
    return rows, skipped


def _classes(names: Sequence[str]) -> str:
    return f"class{'es' if len(names) > 1 else ''} {' and '.join(names)}"


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# -- the result format ---------------------------------------------------------------------------
def cached(result, k: int = 5) -> tuple[list[dict], list[str]] | None:
    """The saved contrasts of ``result`` (``settings["contrasts"]``; None: none) with its
    bootstrap setting, computed once (the writer asks for them several times); the left-out
    contrasts are one warning line, once."""
    spec = result.settings.get("contrasts")
    if not spec:
        return None
    key = (repr(spec), k, result.resamples, result.seed)
    hit = result.__dict__.get("_contrast_cache")
    if hit is None or hit[0] != key:
        rows, skipped = contrast_rows(result, spec, k)
        if skipped:
            warnings.warn("contrasts left out: " + "; ".join(skipped), TrustWarning,
                          stacklevel=2)
        hit = (key, rows, skipped)
        result.__dict__["_contrast_cache"] = hit
    return hit[1], hit[2]


def mean_relmem(rows: Sequence[dict], max_delay: int) -> dict[str, float | None]:
    """{contrast: mean relative memory over delays 1..K (delay 0 when K = 0)}."""
    first = 1 if max_delay > 0 else 0
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["contrast"], [])
        if r["delay"] >= first and r["relmem"] is not None:
            out[r["contrast"]].append(r["relmem"])
    return {c: (float(np.mean(v)) if v else None) for c, v in out.items()}


def summary(result) -> dict[str, Any]:
    """Headline numbers: each contrast's mean relative memory over delays 1..K and the
    contrast remembered best by that measure."""
    got = cached(result)
    if got is None:
        return {}
    means = mean_relmem(got[0], result.max_delay)
    out: dict[str, Any] = {f"contrast_{c}_relmem_mean": v for c, v in means.items()}
    ranked = [c for c, v in means.items() if v is not None]
    if ranked:
        out["contrast_best"] = max(ranked, key=lambda c: means[c])
    return out


def extra(result) -> dict[str, Any]:
    """The report section (``contrasts``: title, paragraphs, a compact table) and the full
    tidy rows (``contrast_table``) of result.json."""
    got = cached(result)
    if got is None:
        return {}
    rows, skipped = got
    K = result.max_delay
    delays = sorted({d for d in REPORT_DELAYS if d <= K} | {K})
    means = mean_relmem(rows, K)
    compact = []
    for name in means:
        mine = {r["delay"]: r for r in rows if r["contrast"] == name}
        entry: dict[str, Any] = {"contrast": name, "positions (delay 0)": mine[0]["count"],
                                 "mean relmem (1..K)": means[name]}
        for d in delays:
            r = mine[d]
            cell = "n/a" if r["relmem"] is None else f"{r['relmem']:.3g}"
            if r["relmem_low"] is not None:
                cell += f" [{r['relmem_low']:.3g}, {r['relmem_high']:.3g}]"
            entry[f"relmem tau={d}"] = cell
        one = mine[min(1, K)]
        entry[f"align top-{one['k']} tau={min(1, K)}"] = one["alignment"]
        compact.append(entry)
    paragraphs = [
        "Relative memory |Gn(tau) dn| / sigma_1(tau) of each contrast direction d = mean "
        "embedding of A minus that of B (dn: normalised, unit length), on the gradient "
        "averaged over the words of A and B: 1 means the state keeps the property as "
        "strongly as its best-kept direction, 0 that it keeps none of it. Alignment: the "
        "norm of dn's projection on the top-k right singular vectors. Brackets: 95% block "
        "bootstrap interval (direction held fixed), at the delays with per-block class sums.",
        f"All rows (every delay, with alignment and intervals): {CSV_FILE}."]
    if skipped:
        paragraphs.append("Left out: " + "; ".join(skipped) + ".")
    return {"contrasts": {"title": "Tag contrasts: relative memory of property directions",
                          "paragraphs": paragraphs, "table": compact},
            "contrast_table": rows}


def figures(result, out: Path) -> list[dict[str, str]]:
    """Write contrasts.csv and contrasts.png (relative memory vs delay, one line per
    contrast) into ``out``; returns the plot's entry (none without contrasts)."""
    from memlens.runtime.plotting import pyplot
    from memlens.runtime.result import plot_series, write_table_csv

    got = cached(result)
    if got is None:
        return []
    rows = got[0]
    write_table_csv(out / CSV_FILE, rows)
    if not rows:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        plot_series(ax, rows, {"x": "delay", "y": "relmem", "group": ["contrast"],
                               "low": "relmem_low", "high": "relmem_high",
                               "title": "Relative memory of tag contrasts",
                               "xlabel": "delay tau", "ylabel": "|Gn dn| / sigma_1"})
        fig.tight_layout()
        fig.savefig(out / PLOT_FILE, dpi=110)
    finally:
        plt.close(fig)
    return [{"file": PLOT_FILE, "title": "Relative memory of tag contrasts",
             "caption": "How much of each property direction (mean embedding of A minus that "
                        "of B) reaches the state tau steps later, relative to the direction "
                        "that reaches it most (1 = as much); gradient averaged over the words "
                        "of A and B. Bands: 95% block bootstrap at the delays with per-block "
                        "class sums."}]


def saved_frame(result):
    """The contrasts of a result as a DataFrame: computed for a :class:`GradientResult`
    (its ``settings["contrasts"]``), read back for a loaded one (result.json's
    ``contrast_table``); empty without contrasts."""
    import pandas as pd

    from memlens.runtime.result import clean

    if hasattr(result, "raw"):
        got = cached(result)
        return pd.DataFrame(clean(got[0]) if got else [])
    return pd.DataFrame(result.extra().get("contrast_table") or [])


__all__ = ["PRESETS", "Contrast", "contrast_rows", "parse_contrasts", "saved_frame"]
