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

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from memlens.core.errors import MemlensError
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
    """A result read back from its directory: any kind, from what its result.json declares."""

    def __init__(self, path: Path, data: dict[str, Any], images: dict[str, bytes]):
        self.path, self.data, self.images = path, data, images
        self.kind = str(data["kind"])  # type: ignore[misc]

    def rows(self) -> list[dict[str, Any]]:
        return self.data.get("table") or []

    def series(self) -> list[dict[str, Any]]:
        return self.data.get("series") or []

    def summary(self) -> dict[str, Any]:
        return self.data.get("summary") or {}

    def settings_info(self) -> dict[str, Any]:
        return self.data.get("settings") or {}

    def model_info(self) -> dict[str, Any]:
        return self.data.get("model") or {}

    def corpus_info(self) -> dict[str, Any]:
        return self.data.get("corpus") or {}

    def extra(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k not in STANDARD_KEYS}

    def verdict(self) -> dict[str, Any]:
        return self.data.get("verdict") or {}

    @property
    def plots(self) -> list[dict[str, Any]]:
        return self.data.get("plots") or []

    def arrays(self) -> dict[str, np.ndarray]:
        name = self.data.get("arrays_file") or f"{self.kind}.npz"
        file = self.path / name
        if not file.is_file():
            return {}
        with np.load(file, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def _depth_ok(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return True


def load_result(path: str | os.PathLike) -> SavedResult:
    """Read and check one result directory (any kind); raise :class:`MemlensError` on bad
    input (missing, malformed, tampered plot paths, non-PNG plots)."""
    path = Path(path)
    if not path.exists():
        raise MemlensError(f"result directory not found: {path}")
    if not path.is_dir():
        raise MemlensError(f"not a result directory: {path}")
    rfile = path / RESULT_FILE
    if not rfile.is_file():
        raise MemlensError(f"{path} has no result.json (not a memlens result directory)")
    try:
        data = json.loads(rfile.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MemlensError(f"malformed result.json in {path}: {str(exc)[:200]}") from None
    except RecursionError:
        raise MemlensError(f"malformed result.json in {path}: nested too deeply") from None
    except OSError as exc:
        raise MemlensError(f"cannot read {rfile}: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise MemlensError(f"malformed result.json in {path}: top level is not an object")
    if not _depth_ok(data):
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
        if not file.is_file():
            raise MemlensError(f"plot {plot['file']!r} listed in {rfile} is missing")
        blob = file.read_bytes()
        if not blob.startswith(PNG_MAGIC):
            raise MemlensError(f"plot {plot['file']!r} in {path} is not a PNG image")
        images[plot["file"]] = blob
    check_verdict(data.get("verdict"), plots, f"malformed result.json in {path}")
    return SavedResult(path, data, images)
