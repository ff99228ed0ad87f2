"""Exact average state gradients (DESIGN.md section 1), streaming and forward-mode.

``state_gradients(model, inputs, max_delay, site=Site(layer, readout), classes=None)`` returns
a :class:`GradientResult` with ``.mean(tau, cls)``, ``.count(tau, cls)`` and
``.singular_values(tau, cls, normalized=True)``; run options (device, dtype, bootstrap,
checkpoint, progress) come through ``options=RunOptions(...)``, rarely changed engine knobs
through ``engine=EngineSettings(...)``; ``output.write_result`` writes the result directory.
"""

from memlens.analyses.gradients.api import resolve_site, state_gradients
from memlens.analyses.gradients.engine import EngineSettings
from memlens.analyses.gradients.normalize import Normalization, embedding_normalization
from memlens.analyses.gradients.result import GradientResult

__all__ = ["EngineSettings", "GradientResult", "Normalization", "embedding_normalization",
           "resolve_site", "state_gradients"]
