"""A result as a small HTML table, for Jupyter (:meth:`memlens.results.Result._repr_html_`).

The kind, the headline numbers (:meth:`Result.summary`), the first rows of the table and the
trust warnings (a result's ``trust_messages()`` and any ``*flags`` entry of its summary that
is not ``"none"``); numbers are rounded, text is escaped, and missing values show as "-".
"""

from __future__ import annotations

import html
import math
from typing import Any

MAX_SUMMARY = 16   # headline numbers shown
MAX_ROWS = 8       # rows of the table shown


def span_text(span: int, unit: str = "") -> str:
    """A memory span as words: ``"no span found"`` for the -1 that means none.

    Parameters
    ----------
    span : int
        A memory span (``Signature.memory_span()``; -1 when no lag is above the baseline).
    unit : str, optional
        The lag unit appended to a found span ("graphemes"; default none).

    Returns
    -------
    str
        ``"no span found"`` or e.g. ``"6 graphemes"``.
    """
    if span < 0:
        return "no span found"
    return f"{span} {unit}".strip()


def sentinel_text(key: str, value: Any) -> str | None:
    """The words for a sentinel value of a result's field, or None when it is none.

    Parameters
    ----------
    key : str
        The field (summary entry or table column) name.
    value : Any
        Its value.

    Returns
    -------
    str or None
        ``"no span found"`` for a negative integer ``memory_span``; None otherwise.
    """
    if str(key).endswith("memory_span") and isinstance(value, int) \
            and not isinstance(value, bool) and value < 0:
        return span_text(value)
    return None


def _cell(value: Any, key: str = "") -> str:
    words = sentinel_text(key, value)
    if words is not None:
        return words
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        value = ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) \
            else ", ".join(map(str, value))
    return html.escape(str(value))


def _table(rows: list[dict[str, Any]]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c), c)}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def warnings_of(result: Any) -> list[str]:
    """The trust warnings of ``result``, as sentences.

    Parameters
    ----------
    result : memlens.results.Result
        Any result.

    Returns
    -------
    list of str
        Its ``trust_messages()`` (when it has them) and every summary entry whose name ends
        in ``flags`` and whose value is neither empty nor ``"none"``.
    """
    found = [str(m) for m in (getattr(result, "trust_messages", lambda: [])() or [])]
    for key, value in (result.summary() or {}).items():
        if str(key).endswith("flags") and value not in (None, "", "none", [], {}):
            found.append(f"{key}: {_cell(value)}")
    return found


def result_html(result: Any) -> str:
    """The HTML that Jupyter shows for ``result``.

    Parameters
    ----------
    result : memlens.results.Result
        Any result.

    Returns
    -------
    str
        A heading with the kind, the trust warnings, the headline numbers and the first
        :data:`MAX_ROWS` rows of the table, as HTML tables.
    """
    rows = result.rows()
    parts = [f"<div class='memlens-result'><strong>memlens {html.escape(result.kind)} "
             f"result</strong> ({len(rows)} rows)"]
    for message in warnings_of(result):
        parts.append(f"<p style='color:#a00'>warning: {html.escape(message)}</p>")
    summary = [(k, v) for k, v in (result.summary() or {}).items()
               if not isinstance(v, (dict, list))][:MAX_SUMMARY]
    if summary:
        parts.append(_table([{"summary": k, "value": sentinel_text(k, v) or v}
                             for k, v in summary]))
    if rows:
        parts.append(_table(rows[:MAX_ROWS]))
        if len(rows) > MAX_ROWS:
            parts.append(f"<p>... {len(rows) - MAX_ROWS} more rows: "
                         "<code>result.to_frame()</code></p>")
    return "".join(parts) + "</div>"
