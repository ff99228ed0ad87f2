"""One static, self-contained HTML page from any set of result directories.

A result directory (written by ``memlens gradients`` or ``memlens signatures``) holds
``result.json`` (kind, model, corpus, settings, summary, table, plots) plus the PNG files that
``plots`` names. The page embeds every PNG as a ``data:`` URI, uses inline CSS only, contains no
script and fetches nothing (a Content-Security-Policy forbids it as well), so it opens from disk.
Every string that comes from the data (paths, tokens, class names, captions) is HTML-escaped.
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

from memlens.errors import MemlensError
from memlens.io import write_atomic
from memlens.plotting import plain_text, pyplot

KINDS = ("gradients", "signatures", "ablation")
STANDARD_KEYS = ("kind", "memlens_version", "model", "corpus", "settings", "summary", "table",
                 "plots")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

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
"""


@dataclass
class ResultDir:
    """A loaded result directory: its path, parsed ``result.json`` and plot PNG bytes."""

    path: Path
    data: dict[str, Any]
    images: dict[str, bytes] = field(default_factory=dict)
    label: str = ""

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @property
    def table(self) -> list[dict[str, Any]]:
        return self.data.get("table") or []


@dataclass
class ReportSection:
    """An extra section (e.g. the demo's planted-vs-recovered summary).

    ``paragraphs`` are plain-language sentences; ``table`` is a list of flat dicts;
    ``plots`` are (png bytes, title, caption) triples. All text is escaped on output.
    """

    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] | None = None
    plots: list[tuple[bytes, str, str]] = field(default_factory=list)


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


def load_result(path: str | os.PathLike) -> ResultDir:
    """Read and check one result directory; raise :class:`MemlensError` on bad input."""
    path = Path(path)
    if not path.exists():
        raise MemlensError(f"result directory not found: {path}")
    if not path.is_dir():
        raise MemlensError(f"not a result directory: {path}")
    rfile = path / "result.json"
    if not rfile.is_file():
        raise MemlensError(f"{path} has no result.json (not a memlens result directory)")
    try:
        data = json.loads(rfile.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MemlensError(f"malformed result.json in {path}: {exc}") from None
    except RecursionError:
        raise MemlensError(f"malformed result.json in {path}: nested too deeply") from None
    except OSError as exc:
        raise MemlensError(f"cannot read {rfile}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise MemlensError(f"malformed result.json in {path}: top level is not an object")
    kind = data.get("kind")
    if kind not in KINDS:
        raise MemlensError(f"unknown result kind {kind!r} in {rfile}: expected one of "
                           f"{', '.join(KINDS)}")
    for key in ("model", "corpus", "settings", "summary"):
        if not isinstance(data.get(key, {}), dict):
            raise MemlensError(f"malformed result.json in {path}: {key!r} is not an object")
    table = data.get("table", [])
    if not isinstance(table, list) or not all(isinstance(r, dict) for r in table):
        raise MemlensError(f"malformed result.json in {path}: 'table' is not a list of objects")
    plots = data.get("plots", [])
    if not isinstance(plots, list) or not all(isinstance(p, dict) and isinstance(
            p.get("file"), str) for p in plots):
        raise MemlensError(f"malformed result.json in {path}: 'plots' entries need a 'file'")
    images: dict[str, bytes] = {}
    root = path.resolve()
    for plot in plots:
        file = (path / plot["file"]).resolve()
        if root not in file.parents:
            raise MemlensError(f"plot {plot['file']!r} in {rfile} lies outside the directory")
        if not file.is_file():
            raise MemlensError(f"plot {plot['file']!r} listed in {rfile} is missing")
        blob = file.read_bytes()
        if not blob.startswith(PNG_MAGIC):
            raise MemlensError(f"plot {plot['file']!r} in {path} is not a PNG image")
        images[plot["file"]] = blob
    return ResultDir(path, data, images)


# -- labels and series -------------------------------------------------------------------------
def _label(res: ResultDir) -> str:
    model = res.data.get("model") or {}
    name = Path(str(model.get("path") or res.path.name)).name or res.path.name
    arch = model.get("arch")
    return f"{name} ({arch})" if arch and str(arch) not in name else name


def _assign_labels(results: Sequence[ResultDir]) -> None:
    seen: dict[str, int] = {}
    for res in results:
        base = _label(res)
        if sum(1 for r in results if r.kind == res.kind and _label(r) == base) > 1:
            base = f"{base} [{res.path.name}]"
        n = seen.get(f"{res.kind}:{base}", 0)
        seen[f"{res.kind}:{base}"] = n + 1
        res.label = base if n == 0 else f"{base} #{n + 1}"


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _grad_class(row: dict) -> str:
    cls = row.get("class")
    return "all" if cls in (None, "") else str(cls)


def _sig_series(row: dict) -> str:
    parts = [str(row.get("model", "model"))]
    for key in ("layer", "readout", "units"):
        if row.get(key) not in (None, "", "all"):
            parts.append(f"{key} {row[key]}")
    return ", ".join(parts)


def _series(res: ResultDir) -> dict[str, list[tuple[float, float]]]:
    """x/y points per series: gradients sum_sv vs delay per class; signatures accuracy vs lag."""
    out: dict[str, list[tuple[float, float]]] = {}
    if res.kind == "gradients":
        xkey, ykey, name = "delay", "sum_sv", _grad_class
    else:
        xkey, ykey, name = "lag", "accuracy", _sig_series
    for row in res.table:
        x, y = _num(row.get(xkey)), _num(row.get(ykey))
        if x is None or y is None:
            continue
        out.setdefault(name(row), []).append((x, y))
    return {k: sorted(v) for k, v in out.items()}


# -- pieces of HTML ----------------------------------------------------------------------------
def _kv_table(d: dict[str, Any]) -> str:
    if not d:
        return "<p class='note'>(none)</p>"
    rows = "".join(f"<tr><th class='k'>{_esc(k)}</th><td class='k'>{_fmt(v)}</td></tr>"
                   for k, v in d.items())
    return f"<table>{rows}</table>"


def _table(rows: Sequence[dict[str, Any]], max_rows: int | None = None) -> str:
    if not rows:
        return "<p class='note'>(no rows)</p>"
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    shown = rows if max_rows is None else rows[:max_rows]
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>"
                   for r in shown)
    more = ("" if len(shown) == len(rows) else
            f"<p class='note'>{len(rows) - len(shown)} more rows not shown.</p>")
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>{more}"


def _pivot(rows: Sequence[dict], xkey: str, colname, ykey: str) -> list[dict[str, Any]]:
    """rows x = ``xkey``, one column per ``colname(row)``, cell = ``ykey`` (first seen)."""
    grid: dict[Any, dict[str, Any]] = {}
    cols: list[str] = []
    for r in rows:
        if xkey not in r:
            continue
        c = colname(r)
        if c not in cols:
            cols.append(c)
        grid.setdefault(r[xkey], {}).setdefault(c, r.get(ykey))
    try:
        keys = sorted(grid)
    except TypeError:
        keys = list(grid)
    return [{xkey: k, **{c: grid[k].get(c) for c in cols}} for k in keys]


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


def _result_section(res: ResultDir, index: int) -> str:
    d = res.data
    parts = [f"<h2 id='r{index}'>{_esc(res.kind.capitalize())}: {_esc(res.label)}</h2>",
             f"<p class='note'>Result directory <code>{_esc(res.path)}</code>; memlens "
             f"{_esc(d.get('memlens_version', '?'))}.</p>"]
    parts.append("<div class='grid'><div><h3>Model</h3>" + _kv_table(d.get("model") or {})
                 + "</div><div><h3>Corpus</h3>" + _kv_table(d.get("corpus") or {})
                 + "</div></div>")
    parts.append("<h3>Headline numbers</h3>" + _kv_table(d.get("summary") or {}))
    if d.get("plots"):
        figs = "".join(_figure(res.images[p["file"]], str(p.get("title") or p["file"]),
                               str(p.get("caption") or "")) for p in d["plots"])
        parts.append(f"<h3>Plots</h3><div class='grid'>{figs}</div>")
    table = res.table
    if table:
        if res.kind == "gradients" and any("delay" in r for r in table):
            parts.append("<h3>Sum of singular values by delay and class</h3>"
                         "<p class='note'>How strongly the state still reacts to the input "
                         "that many steps back (larger = remembered more).</p>"
                         + _table(_pivot(table, "delay", _grad_class, "sum_sv")))
        elif res.kind == "signatures" and any("lag" in r for r in table):
            parts.append("<h3>Decoding accuracy by lag</h3>"
                         "<p class='note'>How often a decoder reading the state recovers the "
                         "symbol that many steps back; compare with the majority baseline.</p>"
                         + _table(_pivot(table, "lag", _sig_series, "accuracy")))
        parts.append(f"<details><summary>Full table ({len(table)} rows)</summary>"
                     f"{_table(table)}</details>")
    parts.append("<details><summary>Settings</summary>" + _kv_table(d.get("settings") or {})
                 + "</details>")
    for key, value in d.items():  # anything else the analysis recorded (probe, timing, ...)
        if key not in STANDARD_KEYS and isinstance(value, dict) and value:
            parts.append(f"<details><summary>{_esc(key.capitalize())}</summary>"
                         f"{_kv_table(value)}</details>")
    return "\n".join(parts)


@plain_text
def _overlay_png(curves: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str,
                 title: str, logy: bool = False) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=90)
    for name, pts in curves.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
    if logy and all(p[1] > 0 for pts in curves.values() for p in pts):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _comparison(results: Sequence[ResultDir]) -> str:
    parts: list[str] = []
    for kind, xlabel, ylabel, caption, logy in (
            ("gradients", "delay (steps back)", "sum of singular values",
             "Each line is one model or word class: how strongly its state still reacts to "
             "input that many steps back. Higher and flatter lines mean longer memory.", True),
            ("signatures", "lag (steps back)", "decoding accuracy",
             "Each line is one model (or control): how often the symbol that many steps back "
             "can be read from the state. Where a line meets its baseline, memory has run "
             "out.", False)):
        curves: dict[str, list[tuple[float, float]]] = {}
        for res in results:
            if res.kind != kind:
                continue
            for name, pts in _series(res).items():
                curves[f"{res.label}: {name}"] = pts
        if len(curves) < 2:
            continue
        png = _overlay_png(curves, xlabel, ylabel, f"{kind}: side by side", logy)
        parts.append(_figure(png, f"{kind.capitalize()} side by side", caption))
    for kind in KINDS:
        group = [r for r in results if r.kind == kind]
        if len(group) < 2:
            continue
        keys: list[str] = []
        for res in group:
            keys += [k for k in (res.data.get("summary") or {}) if k not in keys]
        rows = [{"headline": k, **{res.label: (res.data.get("summary") or {}).get(k)
                                   for res in group}} for k in keys]
        parts.append(f"<h3>Headline numbers side by side: {_esc(kind)}</h3>" + _table(rows))
    if not parts:
        return ""
    return "<h2 id='compare'>Side-by-side comparison</h2>" + "".join(parts)


def _extra_section(sec: ReportSection) -> str:
    parts = [f"<h2>{_esc(sec.title)}</h2>"]
    parts += [f"<p>{_esc(p)}</p>" for p in sec.paragraphs]
    if sec.table:
        parts.append(_table(sec.table))
    if sec.plots:
        parts.append("<div class='grid'>" + "".join(_figure(b, t, c) for b, t, c in sec.plots)
                     + "</div>")
    return "\n".join(parts)


def render_report(results: Sequence[ResultDir], title: str = "memlens report",
                  findings: Sequence[str] | None = None,
                  sections: Sequence[ReportSection] = ()) -> str:
    """The HTML text of the report (see module docstring)."""
    _assign_labels(results)
    from memlens import __version__

    body = [f"<h1>{_esc(title)}</h1>",
            "<p class='note'>Generated by memlens " + _esc(__version__) + ". State gradients: "
            "how strongly the recurrent state reacts to input some steps back (Verwimp et al., "
            "2020). Memory signatures: how well a decoder reads the input some steps back out "
            "of the state (Koppula et al., 2018; the decoders are memlens' own design).</p>"]
    if findings:
        body.append("<h2>Findings</h2><ul class='findings'>"
                    + "".join(f"<li>{_esc(f)}</li>" for f in findings) + "</ul>")
    for sec in sections:
        body.append(_extra_section(sec))
    if results:
        toc = "".join(f"<li><a href='#r{i}'>{_esc(r.kind)}: {_esc(r.label)}</a></li>"
                      for i, r in enumerate(results))
        body.append(f"<h2>Results</h2><ul>{toc}</ul>")
    body.append(_comparison(results))
    body += [_result_section(r, i) for i, r in enumerate(results)]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f'<meta name="generator" content="memlens {_esc(__version__)}">'
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
    write_atomic(out, lambda p: p.write_text(text, encoding="utf-8"))
    out.chmod(0o644)  # a page to open and share (the atomic temp file is created 0600)
    return out
