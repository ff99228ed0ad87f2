"""The one exception type that memlens raises for bad input and impossible options.

The CLI turns a :class:`MemlensError` into a single line on stderr and a non-zero exit;
the Python API lets it propagate so that callers can catch it. Its subclasses say more:
:class:`WriteError` (disk full or file-size limit), :class:`UserCodeError` (the user's own model
code raised, or returned the wrong thing).
"""

from __future__ import annotations


class MemlensError(Exception):
    """A user-facing error: bad input file, impossible option, foreign checkpoint."""


class TrustWarning(UserWarning):
    """A number memlens computed exactly but that should not be trusted as it stands: an
    average dominated by exploding gradients, saturated states, a random-init control that
    decodes better than the model, inputs normalised only within their span. The analyses
    issue it with :func:`warnings.warn`, record the flag in their result, and the CLI prints
    it as one ``memlens: warning:`` line."""


# errnos of a write that the disk refused for want of room (ENOSPC, EFBIG, EDQUOT)
_FULL_ERRNOS = (28, 27, 122)
# what torch.save says when the same happens below it (its zip writer checks positions)
_TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed")


class WriteError(MemlensError):
    """A file could not be written because the disk is full or the file-size limit was
    reached (``ulimit -f``): one line naming the file; nothing partial is left."""

    @classmethod
    def from_exception(cls, exc: BaseException, path: object) -> WriteError | None:
        """The :class:`WriteError` for ``exc`` raised while writing ``path`` (an ``OSError``
        with ENOSPC / EFBIG / EDQUOT, or torch's ``RuntimeError`` "enforce fail at
        inline_container.cc"), or None when ``exc`` is something else."""
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            why = exc.strerror or "disk full or file too large"
        elif isinstance(exc, RuntimeError) and any(s in str(exc)
                                                   for s in _TORCH_WRITE_FAILURES):
            why = "the write failed"
        else:
            return None
        return cls(f"cannot write {path}: disk full or file too large ({why}); nothing was "
                   "written there")


class UserCodeError(MemlensError):
    """An exception raised by the user's own model code (a ``FILE.py:FUNCTION`` model, a
    module given to :func:`memlens.wrap`, a step function) or a wrong result from it,
    reported as theirs: "your model's step raised ValueError: ..."."""

    @classmethod
    def raised(cls, where: str, exc: BaseException) -> UserCodeError:
        """The error for ``exc`` raised in the user's ``where`` ("step", "initial state",
        "FILE.py:FUNCTION", ...): one line, the first line of the message, 300 characters
        at most."""
        text = str(exc).strip()
        first = text.splitlines()[0][:300] if text else ""
        return cls(f"your model's {where} raised {type(exc).__name__}"
                   + (f": {first}" if first else ""))
