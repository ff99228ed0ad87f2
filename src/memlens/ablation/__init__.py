"""Context ablation (Khandelwal et al., ACL 2018): how much context a language model uses."""

from memlens.ablation.api import DEFAULT_DISTANCES, AblationInterrupted, context_ablation
from memlens.ablation.result import PERTURBATIONS, ContextAblationResult
from memlens.ablation.scorers import NextTokenScorer, NGramScorer, RecurrentLMScorer, as_scorer

__all__ = ["DEFAULT_DISTANCES", "PERTURBATIONS", "AblationInterrupted", "ContextAblationResult",
           "NGramScorer", "NextTokenScorer", "RecurrentLMScorer", "as_scorer",
           "context_ablation"]
