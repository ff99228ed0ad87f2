"""Can the signatures of a study be trusted as they stand? Two checks, flags and warnings.

1. **The control decodes better than the model.** Per model site with a random-init control
   at the same site, the lags k where the control decodes better
   (:func:`~memlens.analyses.signatures.table.control_better`: the control's 95% accuracy
   interval lies above the model's, control ci_low[k] > model ci_high[k]; without intervals
   control accuracy[k] > model accuracy[k] + 0.05). An untrained copy that reads the recent
   input better than the trained model usually means the model is analysed outside its
   training regime (e.g. a model trained on single words run with the state carried over a
   stream), not that training destroyed memory.
2. **Saturated states.** A signature whose held-out states have more than 50% of their values
   at |h| > 0.99 (:attr:`~memlens.analyses.signatures.signature.Signature.saturated`; only for
   states bounded by 1, see :func:`~memlens.analyses.signatures.signature.state_saturation`).

:func:`trust_flags` gives the flags (``extras["trust"]`` and ``summary["trust"]`` of the
study), :func:`trust_messages` one line per check that fires (issued by :func:`check_trust` as
:class:`~memlens.core.errors.TrustWarning`), :func:`trust_section` the warning box of the HTML
report (a prose section with ``"warning": true``, :mod:`memlens.report.html`).

Entries are duck-typed (``label``, ``role``, ``site``, ``sig``: the study's ``Entry``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from memlens.analyses.signatures.signature import SATURATED_SHARE, SATURATION_LEVEL
from memlens.analyses.signatures.table import CONTROL_BETTER_DEFINITION, control_better, num
from memlens.core.errors import TrustWarning

SATURATION_DEFINITION = (f"share of the held-out state values with |h| > {SATURATION_LEVEL} "
                         f"(flagged above {SATURATED_SHARE:.0%}); only for states bounded by "
                         "1 (none for unbounded states such as an LSTM cell state, or n-gram "
                         "windows)")


def lag_ranges(lags: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    parts: list[str] = []
    lags = sorted(lags)
    i = 0
    while i < len(lags):
        j = i
        while j + 1 < len(lags) and lags[j + 1] == lags[j] + 1:
            j += 1
        parts.append(str(lags[i]) if i == j else f"{lags[i]}-{lags[j]}")
        i = j + 1
    return ", ".join(parts)


def _where(e: Any) -> dict:
    return {"model": e.label, "role": e.role, "layer": e.site.layer,
            "readout": e.site.readout, "units": e.site.units}


def _beaten(entries: Sequence[Any]) -> list[tuple[Any, Any, list[int], int]]:
    """(model entry, control signature, lags where the control is better, the lag of the
    largest accuracy gap) per model site beaten by its control at some lag."""
    controls = {e.site: e.sig for e in entries if e.role == "control"}
    out = []
    for e in entries:
        ctrl = controls.get(e.site) if e.role == "model" else None
        if ctrl is None:
            continue
        lags = [int(k) for k in control_better(e.sig, ctrl).nonzero()[0]]
        if lags:
            worst = max(lags, key=lambda k: float(ctrl.accuracy[k] - e.sig.accuracy[k]))
            out.append((e, ctrl, lags, worst))
    return out


def control_comparisons(entries: Sequence[Any]) -> list[dict]:
    """Per model entry whose site has a control and where the control decodes better at some
    lag: its site, ``lags`` (where better), ``worst`` (the lag of the largest gap) and per
    such lag the two accuracies with their intervals (``table``)."""
    out = []
    for e, c, lags, worst in _beaten(entries):
        m = e.sig
        table = [{"lag": k, "model_accuracy": num(m.accuracy[k]), "model_ci_low": num(
                  m.acc_low[k]), "model_ci_high": num(m.acc_high[k]),
                  "control_accuracy": num(c.accuracy[k]), "control_ci_low": num(c.acc_low[k]),
                  "control_ci_high": num(c.acc_high[k])} for k in lags]
        out.append({**_where(e), "site": e.site.label, "lags": lags, "worst": worst,
                    "table": table})
    return out


def saturated_entries(entries: Sequence[Any]) -> list[dict]:
    """The entries whose held-out states are saturated (more than 50% of the values)."""
    return [{**_where(e), "site": e.site.label, "saturation": num(e.sig.saturation),
             "saturated_units": num(e.sig.saturated_units)}
            for e in entries if getattr(e.sig, "saturated", False)]


def trust_flags(entries: Sequence[Any]) -> dict:
    """The flags of a study (``extras["trust"]``): ``control_better_lags`` (the union over the
    model's sites), ``control_better`` (per flagged site, see :func:`control_comparisons`),
    ``saturated`` (:func:`saturated_entries`), ``flagged`` and the two rules in words."""
    comps = control_comparisons(entries)
    sat = saturated_entries(entries)
    lags = sorted({k for c in comps for k in c["lags"]})
    return {"flagged": bool(comps or sat), "control_better_lags": lags,
            "control_better": comps, "saturated": sat,
            "control_better_rule": CONTROL_BETTER_DEFINITION,
            "saturation_rule": SATURATION_DEFINITION}


def _more(n: int, what: str) -> str:
    return f" (and at {n} more {what}; see trust in the summary)" if n else ""


def trust_messages(entries: Sequence[Any], context: str | None = "stream") -> list[str]:
    """One line per check that fires (the first flagged site named, the others counted).
    ``context``: the study's context regime (the hint depends on it)."""
    out = []
    beaten = _beaten(entries)
    if beaten:
        e, ctrl, lags, k = beaten[0]
        sites = len({x.site for x in entries if x.role == "model"})
        where = f" ({e.site.label})" if sites > 1 else ""
        hint = ("try --context sentence or window:N" if context in (None, "stream")
                or str(context).startswith("segment") else
                f"check that context {context} matches how it was trained")
        at = f"{'lag' if len(lags) == 1 else 'lags'} {lag_ranges(lags)}"
        out.append(f"the random-init control decodes better than the trained model{where} at "
                   f"{at} (lag {k}: {float(ctrl.accuracy[k]):.2f} vs "
                   f"{float(e.sig.accuracy[k]):.2f}): the model may be analysed outside its "
                   f"training regime; {hint}{_more(len(beaten) - 1, 'sites')}")
    sat = [e for e in entries if getattr(e.sig, "saturated", False)]
    if sat:
        e = sat[0]
        out.append(e.sig.saturation_message(f"{e.label} {e.site.label}")
                   + _more(len(sat) - 1, "signatures"))
    return out


def trust_section(flags: dict, messages: Sequence[str]) -> dict | None:
    """The report's warning box (a prose section with ``"warning": true``), or None when
    nothing is flagged."""
    if not flags.get("flagged"):
        return None
    table = [{"site": c["site"], **row} for c in flags["control_better"] for row in c["table"]]
    table += [{"site": s["site"], "model": s["model"], "saturation": s["saturation"],
               "saturated_units": s["saturated_units"]} for s in flags["saturated"]]
    return {"title": "Trust warning: check these signatures before reading them",
            "paragraphs": list(messages) + [
                f"Control better: {CONTROL_BETTER_DEFINITION}. A random-init network can "
                "also keep more of the recent input than a trained one for a benign reason "
                "(training discards what does not help prediction): the flag asks for a "
                "check, e.g. the signature under the context the model was trained with.",
                f"Saturation: {SATURATION_DEFINITION}."],
            "table": table, "warning": True}


def check_trust(entries: Sequence[Any], context: str | None = "stream",
                stacklevel: int = 2) -> dict:
    """Compute the flags, issue every message as a :class:`TrustWarning`, return the flags."""
    for message in trust_messages(entries, context):
        warnings.warn(message, TrustWarning, stacklevel=stacklevel + 1)
    return trust_flags(entries)


__all__ = ["SATURATION_DEFINITION", "check_trust", "control_comparisons",
           "lag_ranges", "saturated_entries", "trust_flags", "trust_messages", "trust_section"]
