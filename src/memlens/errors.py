import sys

from memlens.core import errors as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
