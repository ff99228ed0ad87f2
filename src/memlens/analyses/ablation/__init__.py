"""Context ablation (Khandelwal et al., ACL 2018): how much context a language model uses.

:func:`context_ablation` (api.py) perturbs the tokens beyond distance k by one of the
:data:`PERTURBATIONS` (perturbations.py: one :class:`Perturbation` class each) and measures the
loss increase on the same targets (:class:`ContextAblationResult`, result.py) of any
:class:`NextTokenScorer` (scorers.py).
"""

from memlens.analyses.ablation.api import DEFAULT_DISTANCES, context_ablation
from memlens.analyses.ablation.perturbations import (
    DEFAULT_PERTURBATIONS,
    PERTURBATIONS,
    Perturbation,
    PerturbationContext,
)
from memlens.analyses.ablation.result import ContextAblationResult
from memlens.analyses.ablation.scorers import (
    NextTokenScorer,
    NGramScorer,
    RecurrentLMScorer,
    as_scorer,
)

__all__ = ["DEFAULT_DISTANCES", "DEFAULT_PERTURBATIONS", "PERTURBATIONS", "ContextAblationResult",
           "NGramScorer", "NextTokenScorer", "Perturbation", "PerturbationContext",
           "RecurrentLMScorer", "as_scorer", "context_ablation"]
