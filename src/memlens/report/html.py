"""One static, self-contained HTML page from any set of result directories.

A result directory (written by ``Result.save``: ``memlens gradients``, ``memlens signatures``,
the demo, or any new analysis kind) is read with :func:`memlens.results.load_result`. The page
renders every result only from what its ``result.json`` declares, with no per-kind code:

* model, corpus, headline numbers (``summary``), settings and any further sections;
* every PNG listed in ``plots`` with its title and caption;
* per declared ``series``: a table with one row per x value and one column per curve (one
  curve per distinct value of the series' ``group`` columns), titled by the series' title and
  caption, plus the full table behind a fold;
* a side-by-side comparison: the curves of every series with the same (kind, name) in two or
  more results overlaid in one plot, and the scalar headline numbers of each kind in one table.

A further section whose value is ``{"title", "paragraphs", "items", "table"}`` (see
:class:`ReportSection`) is shown as prose, open; any other dict or list sits behind a fold. A
prose section with ``"warning": true`` (e.g. the state gradients' stability warning) is shown
as a warning box at the top of its result's section, and listed in a warning box at the top of
the page.

The page leads with the answer: every result that declares a ``verdict`` (see
:meth:`memlens.results.Result.verdict`: title, sentences, a table such as expected vs found with
a yes/no column, its figures, findings as sentences) has it shown at the top, before the table
of contents and the sections per result; a verdict's figures are not repeated in the result's
own section.

The page embeds every PNG as a ``data:`` URI, uses inline CSS only, contains no script and
fetches nothing (a Content-Security-Policy forbids it as well), so it opens from disk. Every
string that comes from the data (paths, tokens, class names, captions) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memlens.core.errors import MemlensError
from memlens.core.seal import HTML_MARK, seal_html
from memlens.results import SavedResult, curves, load_result, plot_series
from memlens.runtime.html import sentinel_text
from memlens.runtime.io import write_atomic
from memlens.runtime.plotting import plain_text, pyplot

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SOURCE = "memlens report: result"  # the grouping column the overlays add (never a real one)
MAX_OVERLAY_CURVES = 24
MAX_DEPTH = 4  # nesting shown for dicts and lists inside sections

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:0 auto;
padding:1em 2em;color:#222;background:#fff;line-height:1.45}
h1{border-bottom:2px solid #345;padding-bottom:.2em}h2{margin-top:2em;color:#234}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right;vertical-align:top}
th{background:#eef2f6}td.k,th.k{text-align:left}
figure{margin:1em 0;padding:.5em;border:1px solid #ddd;background:#fafafa}
figure img{max-width:100%;height:auto}figcaption{font-size:.92em;color:#333}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:1em}
.grid figure.wide{grid-column:1/-1}.scroll{overflow-x:auto}
details{margin:.5em 0}summary{cursor:pointer;color:#245}
.findings li{margin:.3em 0}.note{color:#555;font-size:.9em}code{background:#f2f2f2}
section.verdict{border-left:4px solid #345;padding:.2em 1em;margin:1em 0;background:#f7f9fb}
section.verdict figure{background:#fff}
section.warning{border:2px solid #c60;border-left-width:6px;padding:.2em 1em;margin:1em 0;
background:#fff4e5}section.warning h2,section.warning h3{color:#a40}
"""


@dataclass
class ReportSection:
    """A prose section: given to :func:`build_report`, or declared by a result as a further
    section of result.json with the same keys (``{"title", "paragraphs", "items", "table"}``).

    ``paragraphs`` are plain-language sentences; ``items`` a bulleted list of sentences;
    ``table`` a list of flat dicts; ``plots`` (only when given in Python) are (png bytes,
    title, caption) triples. All text is escaped on output.
    """

    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] | None = None
    plots: list[tuple[bytes, str, str]] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    warning: bool = False  # shown as a warning box

    @classmethod
    def from_data(cls, value: Any) -> ReportSection | None:
        """The section a result.json value declares, or None when it is no prose section."""
        if not (isinstance(value, dict) and isinstance(value.get("title"), str)
                and set(value) <= {"title", "paragraphs", "items", "table", "warning"}):
            return None
        paragraphs, items = value.get("paragraphs") or [], value.get("items") or []
        table = value.get("table")
        if not (isinstance(paragraphs, list) and isinstance(items, list)):
            return None
        if table is not None and not (isinstance(table, list)
                                      and all(isinstance(r, dict) for r in table)):
            return None
        return cls(value["title"], [str(p) for p in paragraphs], table,
                   items=[str(i) for i in items], warning=value.get("warning") is True)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """Format one table cell (numbers compactly) and escape it."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return _esc(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return _esc(f"{value:.3e}")
        return _esc(f"{value:.4g}")
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value)
        return _esc(text if len(text) <= 200 else text[:197] + "...")
    return _esc(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


# -- labels ------------------------------------------------------------------------------------
def _label(res: SavedResult) -> str:
    model = res.model_info()
    name = Path(str(model.get("path") or res.path.name)).name or res.path.name
    arch = model.get("arch")
    return f"{name} ({arch})" if arch and str(arch) not in name else name


def _labels(results: Sequence[SavedResult]) -> list[str]:
    """One distinct label per result (model name and architecture; the directory name and a
    counter where two results of a kind would share one)."""
    bases = [_label(r) for r in results]
    out, seen = [], {}
    for res, base in zip(results, bases):
        if sum(1 for r, b in zip(results, bases) if r.kind == res.kind and b == base) > 1:
            base = f"{base} [{res.path.name}]"
        n = seen.get((res.kind, base), 0)
        seen[(res.kind, base)] = n + 1
        out.append(base if n == 0 else f"{base} #{n + 1}")
    return out


# -- pieces of HTML ----------------------------------------------------------------------------
def _value(value: Any, depth: int = 0) -> str:
    """Any JSON value: dicts as key/value tables, lists of dicts as tables, else one cell."""
    if depth < MAX_DEPTH and isinstance(value, dict):
        return _kv_table(value, depth + 1)
    if depth < MAX_DEPTH and isinstance(value, list) and value \
            and all(isinstance(r, dict) for r in value):
        return _table(value)
    if isinstance(value, list) and all(_is_scalar(v) for v in value):
        return ", ".join(_fmt(v) for v in value) if value else "&ndash;"
    return _fmt(value)


def _kv_table(d: dict[str, Any], depth: int = 0) -> str:
    if not d:
        return "<p class='note'>(none)</p>"
    rows = "".join(f"<tr><th class='k'>{_esc(k)}</th><td class='k'>"
                   f"{sentinel_text(k, v) or _value(v, depth)}</td></tr>" for k, v in d.items())
    return f"<table>{rows}</table>"


def _table(rows: Sequence[dict[str, Any]], max_rows: int | None = None) -> str:
    if not rows:
        return "<p class='note'>(no rows)</p>"
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    shown = rows if max_rows is None else rows[:max_rows]
    body = "".join("<tr>" + "".join(f"<td>{sentinel_text(c, r.get(c)) or _fmt(r.get(c))}</td>"
                                    for c in cols) + "</tr>" for r in shown)
    more = ("" if len(shown) == len(rows) else
            f"<p class='note'>{len(rows) - len(shown)} more rows not shown.</p>")
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>{more}"


def series_table(rows: Sequence[dict[str, Any]], decl: dict[str, Any]) -> list[dict[str, Any]]:
    """One declared series as a table: a row per x value, a column per curve (y values)."""
    grid: dict[float, dict[str, float]] = {}
    found = curves(rows, decl)
    for name, points in found.items():
        for x, y, _, _ in points:
            grid.setdefault(x, {}).setdefault(name, y)
    xkey = str(decl["x"])
    return [{xkey: int(x) if float(x).is_integer() else x,
             **{name: grid[x].get(name) for name in found}} for x in sorted(grid)]


def _img(blob: bytes, alt: str) -> str:
    data = base64.b64encode(blob).decode("ascii")
    return f"<img src=\"data:image/png;base64,{data}\" alt=\"{_esc(alt)}\">"


def _is_wide(blob: bytes) -> bool:
    """A PNG more than twice as wide as high (read from its IHDR header)."""
    if len(blob) < 24:
        return False
    width, height = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
    return height > 0 and width > 2 * height


def _figure(blob: bytes, title: str, caption: str) -> str:
    cap = f"<b>{_esc(title)}</b>" + (f"<br>{_esc(caption)}" if caption else "")
    wide = " class='wide'" if _is_wide(blob) else ""
    return f"<figure{wide}>{_img(blob, title)}<figcaption>{cap}</figcaption></figure>"


def _prose(sec: ReportSection, level: int = 2) -> str:
    parts = [f"<h{level}>{_esc(sec.title)}</h{level}>"]
    parts += [f"<p>{_esc(p)}</p>" for p in sec.paragraphs]
    if sec.items:
        parts.append("<ul class='findings'>" + "".join(f"<li>{_esc(i)}</li>" for i in sec.items)
                     + "</ul>")
    if sec.table:
        parts.append(_table(sec.table))
    if sec.plots:
        parts.append("<div class='grid'>" + "".join(_figure(b, t, c) for b, t, c in sec.plots)
                     + "</div>")
    if sec.warning:
        return "<section class='warning'>" + "\n".join(parts) + "</section>"
    return "\n".join(parts)


def _warnings(results: Sequence[SavedResult], labels: Sequence[str]) -> str:
    """A box at the top of the page listing every result's warning sections, or ""."""
    items = [f"<li><a href='#r{i}'>{_esc(r.kind)}: {_esc(label)}</a>: {_esc(sec.title)}</li>"
             for i, (r, label) in enumerate(zip(results, labels))
             for sec in map(ReportSection.from_data, r.extra().values())
             if sec is not None and sec.warning]
    if not items:
        return ""
    return ("<section class='warning'><h2>Warnings</h2><ul class='findings'>" + "".join(items)
            + "</ul></section>")


def _verdict(res: SavedResult, index: int) -> str:
    """The answer ``res`` declares (title, sentences, table, figures, findings), or ""."""
    v = res.verdict()
    if not v:
        return ""
    parts = [f"<section class='verdict' id='v{index}'><h2>{_esc(v['title'])}</h2>"]
    parts += [f"<p>{_esc(p)}</p>" for p in v.get("paragraphs") or []]
    if v.get("table"):
        parts.append(_table(v["table"]))
    captions = {p["file"]: p for p in res.plots}
    for name in v.get("figures") or []:
        plot = captions[name]
        parts.append(_figure(res.images[name], str(plot.get("title") or name),
                             str(plot.get("caption") or "")))
    if v.get("findings"):
        parts.append("<h3>Findings</h3><ul class='findings'>" + "".join(
            f"<li>{_esc(f)}</li>" for f in v["findings"]) + "</ul>")
    parts.append(f"<p class='note'>From <a href='#r{index}'>{_esc(res.kind)}</a> "
                 f"(<code>{_esc(res.path)}</code>); the sections per result follow.</p>"
                 "</section>")
    return "\n".join(parts)


def _result_section(res: SavedResult, label: str, index: int) -> str:
    parts = [f"<h2 id='r{index}'>{_esc(res.kind.capitalize())}: {_esc(label)}</h2>",
             f"<p class='note'>Result directory <code>{_esc(res.path)}</code>; memlens "
             f"{_esc(res.data.get('memlens_version', '?'))}.</p>"]
    extra = res.extra()
    prose = {k: ReportSection.from_data(v) for k, v in extra.items()}
    parts += [_prose(sec, 3) for sec in sorted((s for s in prose.values() if s is not None),
                                               key=lambda s: not s.warning)]
    if res.model_info() or res.corpus_info():
        parts.append("<div class='grid'><div><h3>Model</h3>" + _kv_table(res.model_info())
                     + "</div><div><h3>Corpus</h3>" + _kv_table(res.corpus_info())
                     + "</div></div>")
    parts.append("<h3>Headline numbers</h3>" + _kv_table(res.summary()))
    shown = set(res.verdict().get("figures") or [])  # already at the top of the page
    plots = [p for p in res.plots if p["file"] not in shown]
    if shown:
        parts.append(f"<p class='note'>Shown with the verdict at the top: "
                     f"{_esc(', '.join(sorted(shown)))}.</p>")
    if plots:
        figs = "".join(_figure(res.images[p["file"]], str(p.get("title") or p["file"]),
                               str(p.get("caption") or "")) for p in plots)
        parts.append(f"<h3>Plots</h3><div class='grid'>{figs}</div>")
    table = res.rows()
    for decl in res.series():
        pivot = series_table(table, decl)
        if pivot:
            caption = decl.get("caption")
            parts.append(f"<h3>{_esc(decl.get('title') or decl.get('name') or decl['y'])}</h3>"
                         + (f"<p class='note'>{_esc(caption)}</p>" if caption else "")
                         + f"<p class='note'>Column values: {_esc(decl['y'])}.</p>"
                         + _table(pivot))
    if table:
        parts.append(f"<details><summary>Full table ({len(table)} rows)</summary>"
                     f"{_table(table)}</details>")
    parts.append("<details><summary>Settings</summary>" + _kv_table(res.settings_info())
                 + "</details>")
    for key, value in extra.items():  # anything else the analysis recorded (probe, timing, ...)
        if prose[key] is None and isinstance(value, (dict, list)) and value:
            parts.append(f"<details><summary>{_esc(key.capitalize())}</summary>"
                         f"{_value(value)}</details>")
    return "\n".join(parts)


@plain_text
def _png(draw) -> bytes:
    """Render ``draw(ax)`` into PNG bytes (Agg, labels as plain text, no file)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=90)
    try:
        draw(ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


def _overlays(results: Sequence[SavedResult], labels: Sequence[str]) -> list[str]:
    """One figure per (kind, series name) that two or more results declare: all their curves,
    each named by its result's label and then its own curve name."""
    groups: dict[tuple[str, str], list[tuple[str, SavedResult, dict]]] = {}
    for res, label in zip(results, labels):
        for decl in res.series():
            key = (res.kind, str(decl.get("name") or decl["y"]))
            groups.setdefault(key, []).append((label, res, decl))
    figs = []
    for (kind, _), members in groups.items():
        first = members[0][2]
        members = [m for m in members if (m[2]["x"], m[2]["y"]) == (first["x"], first["y"])
                   and curves(m[1].rows(), m[2])]
        if len(members) < 2:
            continue
        rows = [{**row, SOURCE: label} for label, res, _ in members for row in res.rows()]
        title = str(first.get("title") or first.get("name") or first["y"])
        merged = {**first, "group": [SOURCE, *(first.get("group") or [])],
                  "title": f"{kind}: {title}, side by side"}
        png = _png(lambda ax, rows=rows, merged=merged:
                   plot_series(ax, rows, merged, MAX_OVERLAY_CURVES))
        caption = (f"{first.get('caption') or ''} Each line is one curve of one result "
                   "(result label first).").strip()
        figs.append(_figure(png, f"{kind.capitalize()} side by side: {title}", caption))
    return figs


def _comparison(results: Sequence[SavedResult], labels: Sequence[str]) -> str:
    parts = _overlays(results, labels)
    kinds = list(dict.fromkeys(r.kind for r in results))
    for kind in kinds:
        group = [(label, r) for r, label in zip(results, labels) if r.kind == kind]
        if len(group) < 2:
            continue
        keys: list[str] = []
        for _, res in group:
            keys += [k for k, v in res.summary().items() if _is_scalar(v) and k not in keys]
        rows = [{"headline": k, **{label: res.summary().get(k) for label, res in group}}
                for k in keys]
        if rows:
            parts.append(f"<h3>Headline numbers side by side: {_esc(kind)}</h3>" + _table(rows))
    if not parts:
        return ""
    return "<h2 id='compare'>Side-by-side comparison</h2>" + "".join(parts)


def render_report(results: Sequence[SavedResult], title: str = "memlens report",
                  findings: Sequence[str] | None = None,
                  sections: Sequence[ReportSection] = ()) -> str:
    """The HTML text of the report (see module docstring)."""
    from memlens.core.version import __version__

    labels = _labels(results)
    body = [f"<h1>{_esc(title)}</h1>",
            "<p class='note'>Generated by memlens " + _esc(__version__) + ". State gradients: "
            "how strongly the recurrent state reacts to input some steps back (Verwimp et al., "
            "2020). Memory signatures: how well a decoder reads the input some steps back out "
            "of the state (Koppula et al., 2018; the decoders are memlens' own design). "
            "Context ablation: how much a language model's loss rises when the context "
            "beyond some distance is destroyed (Khandelwal et al., 2018).</p>"]
    body.append(_warnings(results, labels))
    body += [_verdict(r, i) for i, r in enumerate(results)]
    if findings:
        body.append(_prose(ReportSection("Findings", items=list(findings))))
    body += [_prose(sec) for sec in sections]
    if results:
        toc = "".join(f"<li><a href='#r{i}'>{_esc(r.kind)}: {_esc(label)}</a></li>"
                      for i, (r, label) in enumerate(zip(results, labels)))
        body.append(f"<h2>Results</h2><ul>{toc}</ul>")
    body.append(_comparison(results, labels))
    body += [_result_section(r, label, i) for i, (r, label) in enumerate(zip(results, labels))]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f'<meta name="generator" content="memlens {_esc(__version__)}">{HTML_MARK}'
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")


def build_report(dirs: Sequence[str | os.PathLike], out: str | os.PathLike = "report.html",
                 title: str = "memlens report", findings: Sequence[str] | None = None,
                 sections: Sequence[ReportSection] = ()) -> Path:
    """Load every result directory, render the page and write it to ``out`` atomically.

    Raises :class:`MemlensError` (and writes nothing) when any directory is unusable.
    """
    if not dirs and not sections:
        raise MemlensError("no result directories given")
    results = [load_result(d) for d in dirs]
    text = render_report(results, title, findings, sections)
    out = Path(out)
    write_atomic(out, lambda p: p.write_text(seal_html(text), encoding="utf-8"))
    out.chmod(0o644)  # a page to open and share (the atomic temp file is created 0600)
    return out
