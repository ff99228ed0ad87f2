import sys

from memlens.runtime import plotting as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
