"""The one exception type that memlens raises for bad input and impossible options.

The CLI turns a :class:`MemlensError` into a single line on stderr and a non-zero exit;
the Python API lets it propagate so that callers can catch it.
"""


class MemlensError(Exception):
    """A user-facing error: bad input file, impossible option, foreign checkpoint."""


class TrustWarning(UserWarning):
    """A number memlens computed exactly but that should not be trusted as it stands: an
    average dominated by exploding gradients, saturated states, a random-init control that
    decodes better than the model, inputs normalised only within their span. The analyses
    issue it with :func:`warnings.warn`, record the flag in their result, and the CLI prints
    it as one ``memlens: warning:`` line."""
