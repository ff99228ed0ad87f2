"""Command-line interface: a thin layer over the Python API.

Each sub-command lives in ``memlens.commands.<name>`` with ``register(subparsers)``; errors
that users can cause become one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from memlens.errors import MemlensError

COMMANDS = ("train", "evaluate", "gradients", "signatures", "ngram", "demo", "report")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as a single line (exit code 2)."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="memlens", description="What recurrent models remember, and "
                           "for how long: state gradients and memory signatures.")
    from memlens import __version__

    parser.add_argument("--version", action="version", version=f"memlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"memlens.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"memlens.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
        return int(result or 0)
    except MemlensError as exc:
        print(f"memlens: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("memlens: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # no tracebacks for users; MEMLENS_DEBUG=1 shows them
        if os.environ.get("MEMLENS_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"memlens: internal error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
