"""Exact average state gradients (DESIGN.md section 1), streaming and forward-mode.

``state_gradients(model, inputs, max_delay, readout=None, layer=-1, labels=None)`` returns a
:class:`GradientResult` with ``.mean(tau, cls)``, ``.count(tau, cls)`` and
``.singular_values(tau, cls, normalized=True)``; ``write_result`` writes the result directory.
"""

from memlens.gradients.api import state_gradients
from memlens.gradients.engine import GradientsInterrupted
from memlens.gradients.normalize import Normalization, embedding_normalization
from memlens.gradients.result import GradientResult

__all__ = ["GradientResult", "GradientsInterrupted", "Normalization", "embedding_normalization",
           "state_gradients"]
