"""The graded-importance study: a synthetic experiment with a known answer for the claim of
Verwimp et al. (2020) that decreasing singular values of the (normalised) state gradients
mean decreasing importance of the input.

What is planted (:mod:`memlens.studies.graded.corpus`): tokens carry three binary features
f1, f2, f3 that decide the token ``lag`` steps later with graded reliability (0.95, 0.8,
0.65), and an irrelevant sign z that decides nothing but has by far the largest spread in the
fixed embedding table. The features' raw spreads run against their importance (f1 widest).

What is measured (:mod:`memlens.studies.graded.study`): a small LSTM (only its recurrent and
output layers trained) and its state gradients per delay, in normalised and in raw embedding
space: singular values, the strength of each planted direction, and the alignment of the
i-th right-singular vector with f_i, each with a 95% block-bootstrap interval. Known answer:
in normalised space at the planted delays the strengths are ordered f1 > f2 > f3 > z and
v_i aligns with f_i; in raw space the order is not the planted one.

The package, by concern: ``corpus`` (config, words, stream, embeddings, directions), then
``study`` (training, readings, checks, :func:`run_graded_importance`).
"""

from memlens.studies.graded.corpus import GradedConfig
from memlens.studies.graded.study import run_graded_importance

__all__ = ["GradedConfig", "run_graded_importance"]
