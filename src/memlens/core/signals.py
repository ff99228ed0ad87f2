"""Interrupts held while a file is saved: a save that has begun always finishes.

:func:`deferred_interrupts` is wrapped around every atomic write (:func:`memlens.core.files.
atomic_path`) and around the per-epoch saves of training. While it runs, SIGINT and SIGTERM
are only recorded; when the outermost block ends, the first recorded signal is delivered
again to the handler that was installed before (the CLI's, which unwinds with
KeyboardInterrupt and exit 130; an analysis loop's :func:`~memlens.runtime.progress.
interrupt_guard`, which sets its flag; or the default action of a program that installed
none), so the signal is honoured once the file is complete. A second signal during the
save therefore never kills it. Outside the main thread (where Python cannot install signal
handlers) nothing is held.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_depth = 0                        # nesting of deferred_interrupts blocks (main thread only)
_held: list[int] = []             # signals recorded while the outermost block runs
_previous: dict[int, object] = {}  # the handlers to restore and deliver to


def _hold(signum: int, frame) -> None:  # noqa: ARG001 - the signal API
    _held.append(signum)


def holding() -> bool:
    """True while a :func:`deferred_interrupts` block runs (in the main thread)."""
    return _depth > 0


@contextmanager
def deferred_interrupts(absorb: bool = False) -> Iterator[None]:
    """Hold SIGINT / SIGTERM while the block runs; deliver the first one afterwards.

    ``absorb``: drop the signals held so far instead of delivering them (for a save that is
    itself the answer to an interrupt: the run is stopping anyway). Nested blocks hold until
    the outermost one ends. Costs four ``signal.signal`` calls per outermost block.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        _held.clear()
        for sig in SIGNALS:
            _previous[sig] = signal.signal(sig, _hold)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if absorb:
            _held.clear()
        if _depth == 0:
            for sig, handler in _previous.items():
                # None: a handler installed outside Python; the default is the closest
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # type: ignore[arg-type]
            _previous.clear()
            if _held:
                first = _held[0]
                _held.clear()
                signal.raise_signal(first)  # honoured now that the file is complete


__all__ = ["SIGNALS", "deferred_interrupts", "holding"]
