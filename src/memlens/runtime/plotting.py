"""The one matplotlib set-up shared by every memlens plot.

Agg backend (no display needed), and labels rendered as plain text: tokens, class names, file
and model names may contain ``$``, ``^`` or ``_``, which matplotlib would otherwise parse as
mathtext (and fail on, e.g. ``$x^``). Decorate every function that creates figures with
:func:`plain_text`; it sets the parameters for the duration of the call only, so a user's own
matplotlib settings are left alone. matplotlib is imported on first use, not with this module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}
F = TypeVar("F", bound=Callable[..., Any])


def pyplot():
    """``matplotlib.pyplot``, on the Agg backend unless pyplot was already imported with
    another one (Jupyter's inline backend: ``result.plot()`` then shows in the notebook)."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain_text(func: F) -> F:
    """Run ``func`` with :data:`PLAIN_TEXT` in effect (labels are never parsed as math)."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context(PLAIN_TEXT):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


__all__ = ["PLAIN_TEXT", "plain_text", "pyplot"]
