import sys

from memlens.analyses import decay as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
