"""The bottom layer of memlens: the error type, size limits and file primitives.

* :mod:`memlens.core.errors`: :class:`MemlensError`, the one user-facing exception;
* :mod:`memlens.core.limits`: bounds on model sizes and planned allocations, ``check_int``;
* :mod:`memlens.core.files`: bounded reads of user files, atomic writes.

Nothing here imports torch or any other part of memlens.
"""

from memlens.core.errors import MemlensError

__all__ = ["MemlensError"]
