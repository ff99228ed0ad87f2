import sys

from memlens.data.speech import synth as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
