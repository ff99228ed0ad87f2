import sys

from memlens.training import lm as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
