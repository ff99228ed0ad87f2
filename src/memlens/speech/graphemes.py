import sys

from memlens.data.speech import graphemes as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
