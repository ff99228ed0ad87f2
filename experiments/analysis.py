"""Helpers shared by the experiment scripts: running memlens, reading result tables, fitting
decay laws and writing each experiment's summary (experiments/results/expN.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from memlens.analyses.decay import fit_decay  # noqa: F401  (re-exported for the scripts)
from memlens.runtime.io import write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEMLENS_DATA", ROOT.parent / "shared" / "data"))
RUNS = Path(os.environ.get("MEMLENS_RUNS", ROOT / "runs"))
RESULTS = ROOT / "experiments" / "results"
IMG = ROOT / "docs" / "img"
EWT_DEV = DATA / "ud-english-ewt" / "en_ewt-ud-dev.conllu"
WT2 = DATA / "wikitext-2"
HEADLINE_DELAYS = (0, 1, 2, 5, 10, 20, 50)  # delays with bootstrap intervals


def run_memlens(out: Path, *args: str, force: bool = False) -> Path:
    """``memlens ARGS --out OUT`` unless OUT already holds a result (``force`` reruns)."""
    if force or not (out / "result.json").exists():
        cmd = [sys.executable, "-m", "memlens", *args, "--out", str(out)]
        print("+ memlens", " ".join(args), "--out", out, flush=True)
        done = subprocess.run(cmd)
        if done.returncode:  # memlens has printed its one-line error
            sys.exit(done.returncode)
    return out


def need_model(path: Path) -> Path:
    """The checkpoint, or exit with the command that trains it."""
    if not path.exists():
        sys.exit(f"missing {path}: train it with experiments/train_models.sh")
    return path


def law_summary(fit: dict) -> dict:
    """The headline numbers of a :func:`memlens.analyses.decay.fit_decay` result: which law fits
    better, the power-law exponent, the exponential decay length and both R^2."""
    return {"better": fit["better"], "power_exponent": fit["power"]["exponent"],
            "exp_decay_length": fit["exponential"]["decay_length"],
            "r2_power": fit["power"]["r2"], "r2_exponential": fit["exponential"]["r2"]}


def load_result(result_dir: str | Path) -> dict:
    """A memlens result directory's result.json."""
    return json.loads((Path(result_dir) / "result.json").read_text())


def load_table(result_dir: str | Path) -> list[dict]:
    """The "table" rows of a memlens result directory's result.json."""
    return load_result(result_dir)["table"]


def curve(rows: list[dict], cls: str | None = None, key: str = "sum_sv"
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(delays, values, ci_low, ci_high) of one class (None = the overall average); NaN where a
    delay has no interval."""
    wanted = [r for r in rows if r.get("class") in ((cls,) if cls else (None, "all", "ALL"))]
    wanted.sort(key=lambda r: r["delay"])

    def col(name: str) -> np.ndarray:
        return np.array([np.nan if r.get(name) is None else r[name] for r in wanted], dtype=float)

    return col("delay"), col(key), col("ci_low"), col("ci_high")


def values_at(rows: list[dict], cls: str | None = None, delays=HEADLINE_DELAYS
              ) -> dict[int, list[float]]:
    """{delay: [value, ci_low, ci_high]} of one class (None = overall) at ``delays``."""
    _, m, lo, hi = curve(rows, cls)
    return {int(t): [float(m[t]), float(lo[t]), float(hi[t])] for t in delays}


def class_counts(rows: list[dict]) -> dict[str, int]:
    """Source tokens per class (the count at delay 0), without the overall row."""
    return {r["class"]: int(r["count"]) for r in rows
            if r["delay"] == 0 and r["class"] not in (None, "all", "ALL")}


def errorbars(ax, tau: np.ndarray, m: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              color: str) -> None:
    """Interval bars at the delays that have one (NaN elsewhere)."""
    ok = ~np.isnan(lo)
    ax.errorbar(tau[ok], m[ok], yerr=[m[ok] - lo[ok], hi[ok] - m[ok]], fmt="none", color=color,
                capsize=2)


def markdown_header(*columns: str) -> None:
    """Print the header and separator lines of a markdown table."""
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")


def save_summary(name: str, summary: dict) -> Path:
    """Write experiments/results/NAME.json (atomically) and say where."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_json(path, summary)
    print(f"summary: {path.relative_to(ROOT)}")
    return path


def plt():
    """matplotlib.pyplot with a file backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def fmt_ci(value: float, low: float, high: float, digits: int = 3) -> str:
    """'v [lo, hi]' (interval omitted where NaN)."""
    if np.isnan(low):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"
