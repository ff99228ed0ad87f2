"""Reading user text files with clear errors for missing, empty, binary or non-UTF-8 input.

The primitives live in :mod:`memlens.core.files` (every layer needs them); this module keeps
the names under :mod:`memlens.data`.
"""

from memlens.core.files import read_bytes, read_text

__all__ = ["read_bytes", "read_text"]
