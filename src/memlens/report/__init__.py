"""Self-contained static HTML reports from result directories of any kind."""

from memlens.report.html import ReportSection, build_report, render_report, series_table
from memlens.results import SavedResult, load_result

__all__ = ["ReportSection", "SavedResult", "build_report", "load_result", "render_report",
           "series_table"]
