"""``python -m memlens``: the console program (:func:`memlens.cli.run`)."""

import sys

from memlens.cli import run

sys.exit(run())
