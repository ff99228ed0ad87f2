"""Command-line interface: a thin layer over the Python API.

Each sub-command lives in ``memlens.commands.<name>`` with ``register(subparsers)`` (what they
share, the loader of a run's inputs included, is in :mod:`memlens.commands.common`; no command
imports this module). Here the parser is built from them and errors are mapped: a
:class:`~memlens.core.errors.MemlensError` (every refusal of user input: the API validates)
becomes one line on stderr and exit 2, an interrupt exit 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from memlens.core.errors import MemlensError, TrustWarning

COMMANDS = ("train", "evaluate", "gradients", "signatures", "ablation", "ngram", "demo",
            "report", "speech-corpus", "train-asr")
# commands that shard their work under torchrun
DISTRIBUTED = ("gradients", "signatures", "ablation")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as a single line (exit code 2)."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="memlens", description="What recurrent models remember, and "
                           "for how long: state gradients and memory signatures.")
    from memlens.core.version import __version__

    parser.add_argument("--version", action="version", version=f"memlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"memlens.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name == f"memlens.commands.{name.replace('-', '_')}":
                continue
            raise
        module.register(sub)
    return parser


def _terminate(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def _show_trust_warning(fallback):
    """A ``warnings.showwarning`` that prints a :class:`TrustWarning` as one line,
    ``memlens: warning: ...`` on stderr (other warnings as Python shows them)."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, TrustWarning):
            print(f"memlens: warning: {message}", file=sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)
    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit codes: 0 success, 2 a user-caused error (one line on stderr),
    130 interrupted (Ctrl-C or SIGTERM: temporary files are removed, resumable commands keep
    their progress), 1 an internal error (a bug)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in DISTRIBUTED and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        print(f"memlens: error: memlens {args.command} does not run under torchrun (only "
              f"{', '.join(DISTRIBUTED)} shard their work): run it as one process", file=sys.stderr)
        return 2
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM unwinds like Ctrl-C
    try:
        from memlens.commands.common import check_schema_options

        check_schema_options(args)
        with warnings.catch_warnings():
            warnings.simplefilter("always", TrustWarning)
            previous, warnings.showwarning = warnings.showwarning, _show_trust_warning(
                warnings.showwarning)
            try:
                result = args.func(args)
            finally:
                warnings.showwarning = previous
        return int(result or 0)
    except MemlensError as exc:
        print(f"memlens: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"memlens: {exc}" if str(exc) else "memlens: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the file system refused: a user-side problem, not a bug
        where = f": {exc.filename}" if exc.filename else ""
        print(f"memlens: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except MemoryError:
        print("memlens: error: out of memory (inputs or options too large for this machine)",
              file=sys.stderr)
        return 2
    except Exception as exc:  # no tracebacks for users; MEMLENS_DEBUG=1 shows them
        if os.environ.get("MEMLENS_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"memlens: internal error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 1
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
