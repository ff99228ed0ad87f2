import sys

from memlens.core import limits as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
