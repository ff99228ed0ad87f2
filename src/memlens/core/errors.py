"""The one exception type that memlens raises for bad input and impossible options.

The CLI turns a :class:`MemlensError` into a single line on stderr and a non-zero exit;
the Python API lets it propagate so that callers can catch it.
"""


class MemlensError(Exception):
    """A user-facing error: bad input file, impossible option, foreign checkpoint."""
