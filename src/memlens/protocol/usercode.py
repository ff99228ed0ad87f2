"""The user's own model code, reported as theirs.

memlens runs code it did not write: the builder named by ``--model FILE.py:FUNCTION``, the
step, initial-state and readout functions of a :class:`~memlens.models.layers.StepLayer`,
the methods of a user's own :class:`~memlens.protocol.RecurrentLayer` subclass. An exception
raised there, or a state of the wrong shape returned from a step, is a
:class:`~memlens.core.errors.UserCodeError` ("your model's step raised ValueError: ..."; the
CLI prints it as one ``memlens: error:`` line, exit 2), not a memlens internal error.

* :func:`check_state`: a step's new state against the state it was given (same number of
  tensors, same shapes), checked on a layer's first step only.
* :func:`register_user_file` / :func:`user_error`: the files of a ``FILE.py:FUNCTION`` model
  are remembered; an unexpected exception whose innermost frame outside the Python and
  site-packages libraries lies in one of them (or beside them: the file may import its
  siblings) is the user's (the CLI asks before reporting an internal error).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any

from torch.utils import _pytree as pytree

from memlens.core.errors import UserCodeError

_USER_DIRS: set[Path] = set()   # directories of the user's model files (--model FILE.py:F)
_MEMLENS = Path(__file__).resolve().parents[1]   # the memlens package
_LIBRARIES = tuple({Path(p).resolve() for p in (
    sysconfig.get_paths().get("stdlib", ""), sysconfig.get_paths().get("purelib", ""),
    sysconfig.get_paths().get("platlib", ""), sys.base_prefix, sys.prefix) if p})


def _shape(leaf: Any) -> str:
    shape = getattr(leaf, "shape", None)
    return type(leaf).__name__ if shape is None else str(tuple(shape))


def check_state(new: Any, given: Any, where: str = "step") -> None:
    """Refuse a state returned by the user's ``where`` that does not match the state it was
    given: another number of tensors, or a tensor of another shape (a one-line
    :class:`UserCodeError`: "your model's step returned shape (1, 5), expected (1, 4)")."""
    got, want = pytree.tree_leaves(new), pytree.tree_leaves(given)
    if len(got) != len(want):
        raise UserCodeError(f"your model's {where} returned a state of {len(got)} tensor(s), "
                            f"expected {len(want)} (as the state it was given)")
    for i, (a, b) in enumerate(zip(got, want)):
        if _shape(a) != _shape(b):
            entry = f" for state entry {i}" if len(want) > 1 else ""
            raise UserCodeError(f"your model's {where} returned shape {_shape(a)}{entry}, "
                                f"expected {_shape(b)} (the shape of the state it was given)")


def register_user_file(path: str | os.PathLike) -> None:
    """Remember the user's model file (its directory: siblings it imports count too)."""
    _USER_DIRS.add(Path(path).resolve().parent)


def _is_library(path: Path) -> bool:
    return any(path.is_relative_to(lib) for lib in _LIBRARIES)


def user_error(exc: BaseException) -> UserCodeError | None:
    """The :class:`UserCodeError` for ``exc`` when it was raised in the user's model code
    (the innermost frame of its traceback that is neither the Python nor a site-packages
    library lies beside a file given to :func:`register_user_file`), else None."""
    if not _USER_DIRS or exc.__traceback__ is None:
        return None
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if not path.is_absolute() or frame.filename.startswith("<"):
            continue
        path = path.resolve()
        if path.is_relative_to(_MEMLENS):
            return None  # raised by memlens itself (called from the user's code or not)
        if path.parent in _USER_DIRS:
            return UserCodeError.raised(f"{frame.name} ({path.name}:{frame.lineno})", exc)
        if not _is_library(path):
            return None
    return None


__all__ = ["check_state", "register_user_file", "user_error"]
