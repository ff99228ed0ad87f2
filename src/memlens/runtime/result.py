"""The base of every analysis result: :class:`Result` and its one writer.

A result is a table (one flat dict per row) plus what it declares about itself, so that the
writer, the loader, ``plot`` and the HTML report need no per-kind code:

* ``kind``: "gradients", "signatures", ... (any name);
* ``series``: plot declarations ``{"name", "title", "x", "y", "group": [columns], "low",
  "high", "xlabel", "ylabel", "log_x", "log_y", "caption"}``: one curve per distinct value of the
  ``group`` columns, y against x, with an interval band where ``low``/``high`` are given;
* ``summary`` (headline numbers), ``settings``, ``model`` and ``corpus`` descriptions;
* optional arrays (saved as ``<kind>.npz`` or the name in ``arrays_file``) and extra PNG
  figures (``figures(dir)``), plus any other JSON-able sections (``extra``);
* optionally a ``verdict`` (:meth:`Result.verdict`): the answer a report leads with, a title,
  sentences, a table (e.g. expected vs found, match yes/no), figures (names of its own PNGs)
  and findings as sentences. See :data:`VERDICT_KEYS` and :func:`check_verdict`.

``result.save(dir)`` writes the standard result directory (``result.json``, ``table.csv``,
arrays, PNGs) atomically through one writer (:func:`write_result_dir`);
:func:`memlens.results.load_result` reads any kind back.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from memlens.core.errors import MemlensError
from memlens.core.files import as_path
from memlens.runtime.plotting import plain_text, pyplot

RESULT_FILE = "result.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STANDARD_KEYS = ("kind", "memlens_version", "model", "corpus", "settings", "summary", "table",
                 "series", "plots", "arrays_file", "verdict")
# what a verdict may hold: title (str), paragraphs and findings (lists of sentences), table (a
# list of flat objects), figures (file names among the result's plots)
VERDICT_KEYS = ("title", "paragraphs", "table", "figures", "findings")
MAX_JSON_DEPTH = 64


def clean(value: Any) -> Any:
    """JSON-able copy: numpy scalars/arrays to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if not math.isfinite(value) else value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def curves(rows: Sequence[dict], decl: dict) -> dict[str, list[tuple[float, float, Any, Any]]]:
    """Points (x, y, low, high) per curve of one series declaration, sorted by x."""
    out: dict[str, list] = {}
    group = decl.get("group") or []
    for row in rows:
        x, y = row.get(decl["x"]), row.get(decl["y"])
        if not _is_num(x) or not _is_num(y):
            continue
        parts = [f"{row[g]}" for g in group if row.get(g) not in (None, "")]
        name = ", ".join(parts) or "all"
        lo = row.get(decl["low"]) if decl.get("low") else None
        hi = row.get(decl["high"]) if decl.get("high") else None
        out.setdefault(name, []).append((float(x), float(y), lo if _is_num(lo) else None,
                                         hi if _is_num(hi) else None))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in out.items()}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and math.isfinite(float(v))


def _plain_log_ticks(axis) -> None:
    """Tick labels of a log axis as plain numbers (1, 10, 100): with math parsing off (plain
    text labels) matplotlib's default would print the raw mathtext."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_series(ax, rows: Sequence[dict], decl: dict, max_curves: int = 12):
    """Draw one declared series on ``ax`` (labels as plain text); return ``ax``."""
    drawn = 0
    for name, pts in curves(rows, decl).items():
        if drawn == max_curves:
            break
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        line, = ax.plot(xs, ys, marker="o", markersize=3, label=name)
        band = [(p[0], p[2], p[3]) for p in pts if p[2] is not None and p[3] is not None]
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                            color=line.get_color(), alpha=0.15, linewidth=0)
        drawn += 1
    positive = all(p[1] > 0 for c in curves(rows, decl).values() for p in c)
    if decl.get("log_y") and positive and drawn:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    if decl.get("log_x") and drawn and all(p[0] > 0 for c in curves(rows, decl).values()
                                           for p in c):
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    ax.set_xlabel(str(decl.get("xlabel") or decl["x"]), parse_math=False)
    ax.set_ylabel(str(decl.get("ylabel") or decl["y"]), parse_math=False)
    ax.set_title(str(decl.get("title") or decl.get("name") or ""), parse_math=False)
    if drawn > 1:
        legend = ax.legend(fontsize=8)
        for text in legend.get_texts():
            text.set_parse_math(False)
    ax.grid(alpha=0.3)
    return ax


class Result:
    """Base of every analysis result: a table plus what it declares about itself.

    Subclasses implement :meth:`rows` and :meth:`series` and may override :meth:`summary`,
    :meth:`arrays`, :meth:`figures`, :meth:`extra` and :meth:`verdict`; :meth:`save`,
    :meth:`to_frame`, :meth:`plot` and :meth:`memlens.results.load_result` then need no
    per-kind code.

    Attributes
    ----------
    kind : str
        The result's kind: "gradients", "signatures", "ablation", ... (class attribute).
    arrays_file : str or None
        The file name of the saved arrays; None: ``<kind>.npz`` (class attribute).
    """

    kind: ClassVar[str] = "result"
    arrays_file: ClassVar[str | None] = None

    # -- what a result declares (override) -------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """The result table (subclasses implement it).

        Returns
        -------
        list of dict
            One flat dict per row, column name -> number, string, bool or None; written as
            ``table.csv`` and the ``table`` of result.json.
        """
        raise NotImplementedError

    def series(self) -> list[dict[str, Any]]:
        """The plot declarations over :meth:`rows` (default: none).

        Returns
        -------
        list of dict
            One dict per plot: ``{"name", "title", "x", "y", "group": [columns], "low",
            "high", "xlabel", "ylabel", "log_x", "log_y", "caption"}``; one curve per
            distinct value of the ``group`` columns, y against x, with an interval band
            where ``low``/``high`` name columns.
        """
        return []

    def summary(self) -> dict[str, Any]:
        """The headline numbers (default: none).

        Returns
        -------
        dict
            JSON-able name -> value, the ``summary`` of result.json.
        """
        return {}

    def settings_info(self) -> dict[str, Any]:
        """How the result was computed.

        Returns
        -------
        dict
            A copy of the result's ``settings`` attribute (empty when it has none).
        """
        return dict(getattr(self, "settings", {}) or {})

    def model_info(self) -> dict[str, Any]:
        """A description of the model analysed.

        Returns
        -------
        dict
            A copy of the result's ``model_meta`` attribute (empty when it has none).
        """
        return dict(getattr(self, "model_meta", {}) or {})

    def corpus_info(self) -> dict[str, Any]:
        """A description of the input analysed.

        Returns
        -------
        dict
            A copy of the result's ``corpus_meta`` attribute (empty when it has none).
        """
        return dict(getattr(self, "corpus_meta", {}) or {})

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays saved with the result (default: none).

        Returns
        -------
        dict of str to numpy.ndarray
            Saved compressed as ``arrays_file`` (default ``<kind>.npz``) when not empty.
        """
        return {}

    @plain_text
    def figures(self, out: Path) -> list[dict[str, str]]:
        """Write the result's PNG figures into a directory.

        Default: one PNG per declared series (:meth:`series`), named ``<name>.png``.

        Parameters
        ----------
        out : pathlib.Path
            The (existing) directory to write into.

        Returns
        -------
        list of dict
            One ``{"file", "title", "caption"}`` per PNG written.
        """
        plt = pyplot()
        made, rows = [], self.rows()
        for decl in self.series():
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            try:
                plot_series(ax, rows, decl)
                fig.tight_layout()
                name = f"{decl.get('name', 'series')}.png"
                fig.savefig(out / name, dpi=110)
            finally:
                plt.close(fig)
            made.append({"file": name, "title": str(decl.get("title") or name),
                         "caption": str(decl.get("caption") or "")})
        return made

    def extra(self) -> dict[str, Any]:
        """Further sections of result.json (default: none).

        Returns
        -------
        dict
            JSON-able section name -> content (e.g. probe, performance); a name may not be
            one of the standard keys.
        """
        return {}

    def verdict(self) -> dict[str, Any]:
        """The answer a report shows first, before any result's own section (empty: none).

        Keys (all optional but ``title``): ``title``; ``paragraphs``: sentences; ``table``: a
        list of flat dicts (e.g. expected vs found per method, with a yes/no column);
        ``figures``: file names of PNGs that :meth:`figures` writes (shown with the verdict,
        not again in the result's section); ``findings``: sentences, one finding each.

        Returns
        -------
        dict
            The verdict (see :func:`check_verdict`), or an empty dict for none.
        """
        return {}

    # -- the common interface --------------------------------------------------------------
    def _repr_html_(self) -> str:
        """Jupyter's view: the headline numbers, the first rows and the trust warnings."""
        from memlens.runtime.html import result_html

        return result_html(self)

    def to_frame(self):
        """The result table as a pandas DataFrame.

        Returns
        -------
        pandas.DataFrame
            One row per row of :meth:`rows`, NaN and infinities as missing values.
        """
        import pandas as pd

        return pd.DataFrame(clean(self.rows()))

    @plain_text
    def plot(self, ax=None, series: int | str = 0):
        """Draw one declared series with matplotlib.

        Parameters
        ----------
        ax : matplotlib.axes.Axes or None, optional
            The axes to draw on (default None: a new figure).
        series : int or str, optional
            The series' index in :meth:`series` or its name (default 0: the first).

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on: one curve per group, interval bands where declared.

        Raises
        ------
        MemlensError
            When the result declares no series, or none of that name.
        """
        decls = self.series()
        if not decls:
            raise MemlensError(f"{self.kind} result declares no series to plot")
        if isinstance(series, str):
            found = [d for d in decls if d.get("name") == series]
            if not found:
                raise MemlensError(f"no series {series!r}: choose from "
                                   f"{', '.join(str(d.get('name')) for d in decls)}")
            decl = found[0]
        else:
            decl = decls[series]
        if ax is None:
            _, ax = pyplot().subplots()
        return plot_series(ax, self.rows(), decl)

    def document(self) -> dict[str, Any]:
        """The content of result.json (without plots, which :meth:`save` adds).

        Returns
        -------
        dict
            ``kind``, ``memlens_version``, ``model``, ``corpus``, ``settings``, ``summary``,
            ``table``, ``series``, ``arrays_file`` and ``verdict`` when set, and the
            :meth:`extra` sections; JSON-able (NaN and infinities as None).

        Raises
        ------
        MemlensError
            When an extra section clashes with a standard key.
        """
        from memlens.core.version import __version__

        doc = {"kind": self.kind, "memlens_version": __version__, "model": self.model_info(),
               "corpus": self.corpus_info(), "settings": self.settings_info(),
               "summary": self.summary(), "table": self.rows(), "series": self.series()}
        if self.arrays_file:
            doc["arrays_file"] = self.arrays_file
        verdict = self.verdict()
        if verdict:
            doc["verdict"] = verdict
        for key, value in self.extra().items():
            if key in STANDARD_KEYS:
                raise MemlensError(f"extra section {key!r} clashes with a standard key")
            doc[key] = value
        return clean(doc)

    def save(self, out: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the standard result directory: complete, or absent on error.

        The directory holds ``result.json`` (:meth:`document` plus the plots), ``table.csv``,
        the arrays and the PNGs, and a manifest; it is built under a temporary name and
        renamed, and :func:`memlens.results.load_result` reads it back.

        Parameters
        ----------
        out : str or os.PathLike
            The directory to write.
        overwrite : bool, optional
            Replace a previous memlens result at ``out`` (default False).

        Returns
        -------
        pathlib.Path
            ``out``.

        Raises
        ------
        MemlensError
            When ``out`` holds a previous result and ``overwrite`` is False, holds other
            files, or the verdict is malformed.
        """
        as_path(out, "out", "directory path")
        return write_result_dir(self, out, overwrite=overwrite)

    def __repr__(self) -> str:
        settings = {k: v for k, v in self.settings_info().items()
                    if isinstance(v, (int, float, str, bool)) or v is None}
        text = ", ".join(f"{k}={v!r}" for k, v in list(settings.items())[:8])
        out = f"<{type(self).__name__} kind={self.kind!r} {text}>"
        return out if len(out) < 1000 else out[:996] + "...>"


@plain_text  # covers every subclass's figures(): labels are plain text
def write_result_dir(result: Result, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """The one writer of result directories: result.json, table.csv, arrays, PNGs."""
    from memlens.runtime.io import atomic_dir

    with atomic_dir(out, overwrite=overwrite, kind=result.kind) as tmp:
        plots = clean(result.figures(tmp))  # first: figures may add numbers to the summary
        doc = result.document()
        doc["plots"] = plots
        check_verdict(doc.get("verdict"), plots, f"{result.kind} result")
        write_table_csv(tmp / "table.csv", doc["table"])
        arrays = result.arrays()
        if arrays:
            np.savez_compressed(tmp / (result.arrays_file or f"{result.kind}.npz"), **arrays)
        (tmp / RESULT_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return Path(out)


def write_table_csv(path: Path, table: Sequence[dict]) -> None:
    """Write ``table`` (flat dicts) as CSV: the union of the keys as columns, in first-seen
    order; None and missing cells are empty."""
    keys = list(dict.fromkeys(k for row in table for k in row))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for row in table:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})


def check_verdict(verdict: Any, plots: Sequence[dict], where: str) -> None:
    """Raise :class:`MemlensError` (message starting with ``where``) unless ``verdict`` (None
    or a dict) is a well-formed verdict (see :meth:`Result.verdict`) whose figures are among
    ``plots``."""
    if verdict is None:
        return
    bad = f"{where}: 'verdict'"
    if not isinstance(verdict, dict) or not isinstance(verdict.get("title"), str):
        raise MemlensError(f"{bad} must be an object with a 'title'")
    unknown = sorted(set(verdict) - set(VERDICT_KEYS))
    if unknown:
        raise MemlensError(f"{bad} has unknown keys {', '.join(map(repr, unknown))} "
                           f"(allowed: {', '.join(VERDICT_KEYS)})")
    for key in ("paragraphs", "findings", "figures"):
        value = verdict.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MemlensError(f"{bad}: {key!r} must be a list of strings")
    table = verdict.get("table", [])
    if not isinstance(table, list) or not all(isinstance(r, dict) for r in table):
        raise MemlensError(f"{bad}: 'table' must be a list of objects")
    files = {p.get("file") for p in plots}
    for name in verdict.get("figures", []):
        if name not in files:
            raise MemlensError(f"{bad}: figure {name!r} is not one of the result's plots")


__all__ = ["MAX_JSON_DEPTH", "PNG_MAGIC", "RESULT_FILE", "STANDARD_KEYS", "VERDICT_KEYS",
           "Result", "check_verdict", "clean", "curves", "plot_series", "write_result_dir",
           "write_table_csv"]
