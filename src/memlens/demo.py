"""``memlens demo``: the planted-memory study, then one report of everything it saved.

The study itself (corpus, training, analyses, recovery rules, findings) is
:mod:`memlens.studies.planted`; this module runs it and renders its result directories with
:func:`memlens.report.build_report`, which needs nothing demo-specific: the study's own
``planted-memory`` result declares its findings, description and series.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memlens.report import build_report
from memlens.runtime.io import atomic_dir, write_json
from memlens.studies.planted import (
    IRRELEVANT_COORD,
    NUMBER_COORD,
    PlantedConfig,
    end_of_dominance,
    end_of_strength,
    first_delay_not_first,
    first_delay_weak,
    first_lag_at_baseline,
    planted_direction,
    planted_embeddings,
    planted_ranks,
    run_planted,
)

DemoConfig = PlantedConfig  # the demo's options are the study's
TITLE = "memlens demo: a planted memory"


@dataclass
class DemoResult:
    """Paths written and the planted-vs-recovered summary."""

    out: Path
    report: Path
    planted: int
    recovered: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def matches(self) -> list[dict[str, Any]]:
        """Trained-model length readings within one step of the planted distance."""
        return [r for r in self.recovered if r["match"] and r["role"] == "trained"]


def run_demo(cfg: DemoConfig | None = None, log: Callable[[str], None] = print) -> DemoResult:
    """Run the study, write ``cfg.out``/report.html and ``cfg.out``/demo.json (the run's
    configuration, ``recovered``: one record per (model, method) with ``model``, ``role``
    (trained / contrast / control / oracle), ``method``, ``planted``, ``recovered`` (int, or
    None for "never dominant") and ``match`` (within one step), and the seconds per stage).
    ``cfg.out`` is built atomically: complete or absent, an interrupted demo leaves nothing."""
    cfg = cfg or DemoConfig()
    cfg.check()
    start = time.time()
    out = Path(cfg.out)
    with atomic_dir(out) as tmp:
        study = run_planted(dataclasses.replace(cfg, out=str(tmp)), log)
        before_report = time.time() - start
        build_report(study.dirs, tmp / "report.html", title=TITLE)
        seconds = time.time() - start
        write_json(tmp / "demo.json", {
            "config": dataclasses.asdict(cfg), "planted": cfg.distance,
            "recovered": study.recovered, "training": study.training,
            "stage_seconds": {**study.stage_seconds,
                              "report": round(seconds - before_report, 2)},
            "seconds_before_report": round(before_report, 2)})
    report = out / "report.html"
    log(f"wrote {report} ({time.time() - start:.0f} s)")
    return DemoResult(out, report, cfg.distance, study.recovered, time.time() - start)


__all__ = ["IRRELEVANT_COORD", "NUMBER_COORD", "DemoConfig", "DemoResult", "end_of_dominance",
           "end_of_strength", "first_delay_not_first", "first_delay_weak", "first_lag_at_baseline",
           "planted_direction", "planted_embeddings", "planted_ranks", "run_demo"]
