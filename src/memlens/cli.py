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

from memlens.core.errors import MemlensError, TrustWarning, WriteError
from memlens.core.signals import deferred_interrupts

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


def one_line(message: str) -> str:
    """``message`` on one line: control characters (a newline in a file name the user gave)
    are shown escaped, as ``\\n``, so an error is always exactly one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)


_LAST_SIGNAL = [signal.SIGINT]  # the signal behind the latest KeyboardInterrupt


def _terminate(signum, frame):  # noqa: ARG001
    _LAST_SIGNAL[0] = signum
    raise KeyboardInterrupt


def _unraisable(fallback):
    """A ``sys.unraisablehook`` for a run: a KeyboardInterrupt that Python had to drop (the
    signal handler ran inside a ``__del__`` or a weakref callback, where exceptions are
    "ignored") is delivered again (the same signal), so the interrupt is never lost and no
    "Exception ignored" traceback is printed; anything else goes to ``fallback``."""
    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            signal.raise_signal(_LAST_SIGNAL[0])  # raised again at the next bytecode
        else:
            fallback(unraisable)
    return hook


# True in the console program (:func:`run`): once main() has its exit code, SIGINT and SIGTERM
# are ignored, so that a second signal cannot kill the process while it shuts down
_ENTRY = False


def _startup(signum, frame):  # noqa: ARG001
    """SIGINT / SIGTERM while the program starts (imports torch, builds the parser): nothing
    is written yet, so it ends at once. Raising KeyboardInterrupt inside an import can be
    swallowed by a library's bare ``except`` and leave a half-imported module behind."""
    os.write(2, b"memlens: interrupted\n")
    os._exit(130)


def run() -> int:
    """The console entry point (``memlens``, ``python -m memlens``): :func:`main` with
    SIGINT / SIGTERM handled from the first moment (``import memlens.cli`` is light: torch is
    imported after this; a signal during start-up is exit 130 with ``memlens: interrupted``)
    and both ignored once the exit code is known."""
    global _ENTRY
    _ENTRY = True
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _startup)
    try:
        return main()
    except KeyboardInterrupt:  # in the instant main() returned: its line is out
        return 130


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
    main_thread = threading.current_thread() is threading.main_thread()
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)
           if main_thread}
    try:
        args = build_parser().parse_args(argv)
        if main_thread:
            signal.signal(signal.SIGTERM, _terminate)  # SIGTERM unwinds like Ctrl-C
            if old[signal.SIGINT] in (_startup, signal.default_int_handler):
                signal.signal(signal.SIGINT, _terminate)  # as Python's, and noted
        hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
        try:
            return _run(args)
        finally:
            sys.unraisablehook = hook
    except KeyboardInterrupt as exc:
        with deferred_interrupts(absorb=True):  # a second signal: the line is printed
            print(f"memlens: {one_line(str(exc))}" if str(exc) else "memlens: interrupted",
                  file=sys.stderr)
        return 130
    finally:
        for sig, handler in old.items():  # the console program ignores them from here on
            signal.signal(sig, signal.SIG_IGN if _ENTRY else handler)  # type: ignore[arg-type]


def _run(args: argparse.Namespace) -> int:
    """:func:`main` without the signal handling: check, run, map the errors."""
    try:  # a garbage WORLD_SIZE: one line naming it (issue 21), not a traceback
        from memlens.core.limits import MAX_PROCESSES, env_int

        world = env_int("WORLD_SIZE", 1, 1, MAX_PROCESSES)
    except MemlensError as exc:
        print(f"memlens: error: {exc}", file=sys.stderr)
        return 2
    if args.command not in DISTRIBUTED and world > 1:
        print(f"memlens: error: memlens {args.command} does not run under torchrun (only "
              f"{', '.join(DISTRIBUTED)} shard their work): run it as one process", file=sys.stderr)
        return 2
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
        print(f"memlens: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused: a user-side problem, not a bug
        full = WriteError.from_exception(exc, exc.filename or "the output")
        where = f": {exc.filename}" if exc.filename else ""
        print(f"memlens: error: {one_line(str(full) if full else f'{exc.strerror or exc}{where}')}",
              file=sys.stderr)
        return 2
    except MemoryError:
        print("memlens: error: out of memory (inputs or options too large for this machine)",
              file=sys.stderr)
        return 2
    except Exception as exc:  # no tracebacks for users; MEMLENS_DEBUG=1 shows them
        if os.environ.get("MEMLENS_DEBUG"):
            raise
        from memlens.protocol.usercode import user_error

        # torch.save on a full disk; an exception raised in the user's own model code
        known = WriteError.from_exception(exc, "the output") or user_error(exc)
        if known is not None:
            print(f"memlens: error: {one_line(str(known))}", file=sys.stderr)
            return 2
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"memlens: internal error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
