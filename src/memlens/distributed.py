import sys

from memlens.runtime import distributed as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
