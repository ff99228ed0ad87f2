"""The one result format: every analysis returns a :class:`Result`.

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
  and findings as sentences. See :data:`VERDICT_KEYS`.

``result.save(dir)`` writes the standard result directory (``result.json``, ``table.csv``,
arrays, PNGs) atomically through one writer; :func:`load_result` reads any kind back as a
:class:`SavedResult` whose ``to_frame()`` equals the original's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from memlens.core.errors import MemlensError
from memlens.core.files import as_path, binary_limit, open_input, read_bytes, read_json
from memlens.core.limits import check_memory
from memlens.runtime.result import (  # noqa: F401 (the public names of memlens.results)
    MAX_JSON_DEPTH,
    PNG_MAGIC,
    RESULT_FILE,
    STANDARD_KEYS,
    VERDICT_KEYS,
    Result,
    check_verdict,
    clean,
    curves,
    plot_series,
    write_result_dir,
    write_table_csv,
)


class SavedResult(Result):
    """A result read back from its directory: any kind, from what its result.json declares.

    Returned by :func:`load_result`; ``to_frame()``, ``plot()`` and ``summary()`` give the
    original result's table, plots and headline numbers, from the saved table, series and
    sections (the analysis-specific methods of the original class are not available).

    Parameters
    ----------
    path : pathlib.Path
        The result directory.
    data : dict
        The checked content of its result.json.
    images : dict of str to bytes
        The PNG figures of the directory, file name -> content.

    Attributes
    ----------
    kind : str
        The saved result's kind ("gradients", "signatures", "ablation", ...).
    """

    def __init__(self, path: Path, data: dict[str, Any], images: dict[str, bytes]):
        self.path, self.data, self.images = path, data, images
        self.kind = str(data["kind"])  # type: ignore[misc]

    def rows(self) -> list[dict[str, Any]]:
        """The saved result table.

        Returns
        -------
        list of dict
            The ``table`` of result.json, one flat dict per row (empty when absent).
        """
        return self.data.get("table") or []

    def series(self) -> list[dict[str, Any]]:
        """The saved plot declarations.

        Returns
        -------
        list of dict
            The ``series`` of result.json (empty when absent).
        """
        return self.data.get("series") or []

    def summary(self) -> dict[str, Any]:
        """The saved headline numbers.

        Returns
        -------
        dict
            The ``summary`` of result.json (empty when absent).
        """
        return self.data.get("summary") or {}

    def settings_info(self) -> dict[str, Any]:
        """How the saved result was computed.

        Returns
        -------
        dict
            The ``settings`` of result.json (empty when absent).
        """
        return self.data.get("settings") or {}

    def model_info(self) -> dict[str, Any]:
        """The saved description of the model analysed.

        Returns
        -------
        dict
            The ``model`` of result.json (empty when absent).
        """
        return self.data.get("model") or {}

    def corpus_info(self) -> dict[str, Any]:
        """The saved description of the input analysed.

        Returns
        -------
        dict
            The ``corpus`` of result.json (empty when absent).
        """
        return self.data.get("corpus") or {}

    def extra(self) -> dict[str, Any]:
        """The further saved sections of result.json.

        Returns
        -------
        dict
            Every section of result.json that is not a standard key (e.g. probe, performance).
        """
        return {k: v for k, v in self.data.items() if k not in STANDARD_KEYS}

    def verdict(self) -> dict[str, Any]:
        """The saved verdict.

        Returns
        -------
        dict
            The ``verdict`` of result.json (empty when the result has none).
        """
        return self.data.get("verdict") or {}

    @property
    def plots(self) -> list[dict[str, Any]]:
        """The saved figures as listed in result.json: one ``{"file", "title", "caption"}``
        per PNG (empty when none)."""
        return self.data.get("plots") or []

    def arrays(self) -> dict[str, np.ndarray]:
        """The saved arrays, read from the directory's .npz file (never unpickled).

        Returns
        -------
        dict of str to numpy.ndarray
            The arrays of ``arrays_file`` (default ``<kind>.npz``); empty when the result saved
            none.

        Raises
        ------
        MemlensError
            A file that is not an .npz of plain arrays, or larger than the memory budget.
        """
        name = self.data.get("arrays_file") or f"{self.kind}.npz"
        file = self.path / name
        if not (file.exists() or file.is_symlink()):
            return {}
        return read_npz(file, f"result arrays of {self.path}")


def read_npz(path: str | os.PathLike, what: str = "arrays") -> dict[str, np.ndarray]:
    """The arrays of an .npz file: through the input gate (a special file, or one larger than
    the memory budget, is refused by ``stat``), its members' expanded size checked against
    the memory budget before anything is expanded, never unpickled; a file that is not an
    .npz of plain arrays is one line naming ``what``."""
    import zipfile

    with open_input(path, what, binary_limit()) as fh:
        try:
            with zipfile.ZipFile(fh) as zf:
                check_memory(sum(i.file_size for i in zf.infolist()), f"the {what} {path}")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            why = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else \
                type(exc).__name__
            raise MemlensError(f"cannot read {what} {path}: {why}") from None


MAX_JSON_INT = 2**63  # a larger integer in result.json is refused (no float holds it)


def _depth_ok(value: Any, limit: int = MAX_JSON_DEPTH, where: object = "") -> bool:
    """True when ``value`` is nested at most ``limit`` deep; a one-line error for an integer
    beyond :data:`MAX_JSON_INT` (it would overflow every float conversion of the report)."""
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_JSON_INT:
            raise MemlensError(f"malformed result.json in {where}: the integer {str(v)[:12]}... "
                               f"({len(str(abs(v)))} digits) is too large for a number")
    return True


def load_result(path: str | os.PathLike) -> SavedResult:
    """Read and check one result directory of any kind (as :meth:`Result.save` writes it).

    Parameters
    ----------
    path : str or os.PathLike
        The result directory.

    Returns
    -------
    SavedResult
        A :class:`~memlens.runtime.result.Result` (``rows``, ``summary``, ``to_frame``,
        ``plot``, ``save`` ...) of the kind result.json names, with ``path``, ``data`` (the
        parsed result.json) and ``images`` (file name -> PNG bytes of its plots).

    Raises
    ------
    MemlensError
        When the directory or its result.json is missing or malformed (not an object, nested
        more than 64 levels, no kind, bad table or series), or a plot lies outside the
        directory, is missing or is not a PNG.
    """
    path = as_path(path, "path")
    if not path.exists():
        raise MemlensError(f"result directory not found: {path}")
    if not path.is_dir():
        raise MemlensError(f"not a result directory: {path}")
    rfile = path / RESULT_FILE
    if not (rfile.exists() or rfile.is_symlink()):
        raise MemlensError(f"{path} has no result.json (not a memlens result directory)")
    data = read_json(rfile, "result.json")  # the input gate: special, huge, malformed
    if not isinstance(data, dict):
        raise MemlensError(f"malformed result.json in {path}: top level is not an object")
    if not _depth_ok(data, where=path):
        raise MemlensError(f"malformed result.json in {path}: nested too deeply (more "
                           f"than {MAX_JSON_DEPTH} levels)")
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        raise MemlensError(f"result.json in {path} names no result kind")
    for key in ("model", "corpus", "settings", "summary"):
        if not isinstance(data.get(key, {}), dict):
            raise MemlensError(f"malformed result.json in {path}: {key!r} is not an object")
    for key in ("table", "series"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise MemlensError(f"malformed result.json in {path}: {key!r} is not a list of "
                               "objects")
    for decl in data.get("series", []):
        if not isinstance(decl.get("x"), str) or not isinstance(decl.get("y"), str):
            raise MemlensError(f"malformed result.json in {path}: a series needs 'x' and 'y' "
                               "column names")
        if not isinstance(decl.get("group", []), list):
            raise MemlensError(f"malformed result.json in {path}: a series' 'group' must be a "
                               "list of column names")
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
        if not (file.exists() or file.is_symlink()):
            raise MemlensError(f"plot {plot['file']!r} listed in {rfile} is missing")
        blob = read_bytes(file, "plot image", binary_limit())
        if not blob.startswith(PNG_MAGIC):
            raise MemlensError(f"plot {plot['file']!r} in {path} is not a PNG image")
        images[plot["file"]] = blob
    check_verdict(data.get("verdict"), plots, f"malformed result.json in {path}")
    return SavedResult(path, data, images)
