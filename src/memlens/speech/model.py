import sys

from memlens.models import asr as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
