import sys

from memlens.models import ngram as _moved  # moved; alias removed before release

sys.modules[__name__] = _moved
