"""Size limits: hostile or mistaken sizes are refused before anything is allocated.

Model configs (from options or from a checkpoint) must lie within fixed bounds, and the memory
that an analysis or a model would allocate is estimated and compared with the machine's
physical memory (or ``MEMLENS_MAX_MEMORY`` bytes, when set) before it is allocated.
"""

from __future__ import annotations

import math
import os

from memlens.core.errors import MemlensError

MAX_LAYERS = 64
MAX_WIDTH = 1 << 16        # embedding size, hidden size
MAX_VOCAB = 1 << 24        # vocabulary entries
MAX_POSITIONS = 2**62      # stream positions (stop_after, warmup, max_tokens, context lengths)
MAX_PROCESSES = 1 << 16    # WORLD_SIZE of a torchrun launch


def env_bytes(name: str, example: str) -> int | None:
    """The environment variable ``name`` as a number of bytes (1 <= n < 2**63; ``example``
    shown in the message), None when unset or empty; anything else is a one-line error."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 1 <= value < 2**63):
        raise MemlensError(f"the environment variable {name} must be a positive finite "
                           f"number of bytes (e.g. {example}), got {raw!r:.60}")
    return int(value)


def memory_budget() -> int:
    """Bytes memlens may plan to allocate: ``MEMLENS_MAX_MEMORY`` or the physical memory."""
    env = env_bytes("MEMLENS_MAX_MEMORY", "8e9")
    if env is not None:
        return env
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 << 30


def check_memory(nbytes: float, what: str) -> None:
    """Refuse a planned allocation of ``nbytes`` that exceeds :func:`memory_budget`."""
    budget = memory_budget()
    if nbytes > budget:
        raise MemlensError(f"{what} would need about {nbytes / 2**30:.1f} GiB of memory, more "
                           f"than this machine has ({budget / 2**30:.1f} GiB): use smaller "
                           "sizes")


def env_int(name: str, default: int, low: int, high: int) -> int:
    """The environment variable ``name`` as an int in [low, high] (``default`` when unset or
    empty), or a one-line error naming the variable."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    text = raw.strip()
    if not (text.isascii() and text.lstrip("+-").isdigit()):
        raise MemlensError(f"the environment variable {name} must be an integer in "
                           f"{low}..{high}, got {raw!r:.60}")
    value = int(text)
    if not low <= value <= high:
        raise MemlensError(f"the environment variable {name} must be in {low}..{high}, got "
                           f"{raw!r:.60}")
    return value


def check_int(value, name: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or a one-line error naming the option."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MemlensError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise MemlensError(f"{name} must be in {low}..{high}, got {value}")
    return value


def shown(value, limit: int = 40) -> str:
    """``repr(value)`` on one line, at most ``limit`` characters (for error messages: the
    repr of an array or a long string must not break the one-line contract)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
