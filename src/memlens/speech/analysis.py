import sys

from memlens.analyses.speech import analysis as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
