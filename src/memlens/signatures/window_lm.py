import sys

from memlens.models import window_lm as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
