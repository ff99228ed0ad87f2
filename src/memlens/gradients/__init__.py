"""Exact average state gradients (DESIGN.md section 1), streaming and forward-mode.

``state_gradients(model, tokens, max_delay, state="cell", layer=-1, classes=None)`` returns a
:class:`GradientResult` with ``.mean(tau, cls)``, ``.count(tau, cls)`` and
``.singular_values(tau, cls, normalized=True)``; ``write_result`` writes the result directory.
"""

from memlens.gradients.api import state_gradients
from memlens.gradients.engine import GradientsInterrupted
from memlens.gradients.normalize import Normalization, embedding_normalization
from memlens.gradients.result import GradientResult

__all__ = ["GradientResult", "GradientsInterrupted", "Normalization", "embedding_normalization",
           "state_gradients"]
