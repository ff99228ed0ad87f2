"""Equal-variance normalisation of embedding space (DESIGN.md section 1).

Over the rows of the embedding table W (V x E, every vocabulary entry once): mean mu (E,),
covariance S (E x E, unbiased), lower Cholesky factor D (S = D D^T) and Z = D^-1. Normalised
embeddings xn = Z (x - mu) have identity covariance; since x = D xn + mu, the gradient with
respect to xn is G D, so every memory metric is computed on Gn = Gbar D.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memlens.core.errors import MemlensError

MAX_CONDITION = 1e10


@dataclass
class Normalization:
    """mu (E,), D (E x E lower triangular), Z = D^-1, condition number of Z."""

    mu: np.ndarray
    D: np.ndarray
    Z: np.ndarray
    condition: float

    def apply(self, grad: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. normalised input: G (... x H x E) -> G D."""
        return grad @ self.D


def embedding_normalization(table: np.ndarray, source: str = "embedding table"
                            ) -> Normalization:
    """Mean, Cholesky factor D of the covariance, Z = D^-1 and cond(Z) of the rows of ``table``
    (V x E): an embedding table (token models, as the paper) or the input vectors of the
    analysed stream (continuous inputs). ``source`` names them in error messages.

    Raises :class:`MemlensError` for a singular or numerically singular covariance (for example
    a vocabulary with no more entries than embedding dimensions).
    """
    table = np.asarray(table, dtype=np.float64)
    V, E = table.shape
    if V <= E:
        raise MemlensError(f"input covariance is singular: the {source} has {V} rows for "
                           f"{E} dimensions (need more rows than dimensions to normalise)")
    mu = table.mean(axis=0)
    cov = np.cov(table, rowvar=False).reshape(E, E)
    try:
        D = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        rank = int(np.linalg.matrix_rank(cov))
        raise MemlensError(f"input covariance of the {source} is singular (rank {rank} < "
                           f"E={E}): cannot normalise; are some input dimensions constant?"
                           ) from None
    sv = np.linalg.svd(D, compute_uv=False)
    condition = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
    if not np.isfinite(condition) or condition > MAX_CONDITION:
        raise MemlensError(f"input covariance of the {source} is numerically singular "
                           f"(condition number of Z = {condition:.3g}): cannot normalise")
    Z = np.linalg.solve(D, np.eye(E))
    return Normalization(mu=mu, D=D, Z=Z, condition=condition)
