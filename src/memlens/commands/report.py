"""``memlens report``: one self-contained HTML page from result directories of any kind."""

from __future__ import annotations

import argparse

from memlens.commands.common import add_overwrite
from memlens.report import build_report
from memlens.runtime.io import claim_output


def register(sub) -> None:
    """Add the ``report`` sub-command."""
    p = sub.add_parser("report", help="HTML report from result directories",
                       description=__doc__)
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="result directories (memlens gradients / signatures / demo, or any "
                        "Result.save)")
    p.add_argument("--out", default="report.html", help="HTML file to write (report.html)")
    p.add_argument("--title", default="memlens report", help="page title")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the report; errors in the inputs surface as MemlensError (exit 2)."""
    with claim_output(args.out, args.overwrite, directory=False, scratch=()) as path:
        out = build_report(args.dirs, path, title=args.title)
    print(f"wrote {out}")
    return 0
