"""Self-contained static HTML reports from gradient and signature result directories."""

from memlens.report.html import (
    ReportSection,
    ResultDir,
    build_report,
    load_result,
    render_report,
)

__all__ = ["ReportSection", "ResultDir", "build_report", "load_result", "render_report"]
