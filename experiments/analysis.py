"""Helpers shared by the experiment scripts: reading result tables and fitting decay laws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from memlens.decay import fit_decay  # noqa: F401  (re-exported for the scripts)


def load_table(result_dir: str | Path) -> list[dict]:
    """The "table" rows of a memlens result directory's result.json."""
    return json.loads((Path(result_dir) / "result.json").read_text())["table"]


def curve(rows: list[dict], cls: str | None = None, key: str = "sum_sv"
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(delays, values, ci_low, ci_high) of one class (None/"all" = the overall average)."""
    wanted = [r for r in rows if r.get("class") in ((cls,) if cls else (None, "all", "ALL"))]
    wanted.sort(key=lambda r: r["delay"])
    delays = np.array([r["delay"] for r in wanted], dtype=float)
    values = np.array([r[key] for r in wanted], dtype=float)
    low = np.array([r.get("ci_low", np.nan) if r.get("ci_low") is not None else np.nan
                    for r in wanted], dtype=float)
    high = np.array([r.get("ci_high", np.nan) if r.get("ci_high") is not None else np.nan
                     for r in wanted], dtype=float)
    return delays, values, low, high
