"""Equal-variance normalisation of embedding space (DESIGN.md section 1), within the span of
the inputs.

Over the rows of the embedding table W (V x E, every vocabulary entry once; or the T x E input
vectors of a continuous stream): mean mu (E,) and covariance S (E x E, unbiased).

* Full rank (V > E, S positive definite, Cholesky succeeds and cond(Z) <= :data:`MAX_CONDITION`):
  lower Cholesky factor D (S = D D^T, E x E) and Z = D^-1, exactly as the original. Normalised
  embeddings xn = Z (x - mu) have identity covariance; since x = D xn + mu, the gradient with
  respect to xn is G D, so every memory metric is computed on Gn = Gbar D (H x E).
* Rank deficient (rank r < E: no more rows than dimensions, constant dimensions such as dead
  ReLU units, duplicated or linearly dependent dimensions, a numerically singular S):
  normalise within the span of the inputs. S = U L U^T (float64 ``eigh``, eigenvalues
  descending), keep the r eigenvalues l_i > :data:`SPAN_RTOL` * l_1 (directions whose standard
  deviation is below 1e-5 of the largest count as constant; far above float64 round-off,
  E eps ~ 3e-14 for E = 128, and cond(Z) <= 1e5 follows), D = U_r L_r^{1/2} (E x r) and
  Z = L_r^{-1/2} U_r^T (r x E), its pseudo-inverse (Z D = I_r, D Z = U_r U_r^T the projector
  on the span). Every input x lies in mu + span(U_r), so x = D xn + mu with xn = Z (x - mu)
  (r-dimensional, identity covariance), and Gn = Gbar D (H x r) has the singular values of the
  gradient with respect to the whitened inputs inside the span; the directions outside it
  never vary, so no gradient along them is seen by the data.
* Rank 0 (every dimension constant, or a single row): refused with a :class:`MemlensError`.

Diagnostics kept on :class:`Normalization`: the rank, ``full_rank``, the constant input
dimensions (variance <= :data:`SPAN_RTOL` * l_1), the number of duplicate rows (rows equal to
an earlier one) and the condition number of Z.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memlens.core.errors import MemlensError, TrustWarning

MAX_CONDITION = 1e10
#: eigenvalues of S at or below this fraction of the largest are left out of the span
SPAN_RTOL = 1e-10
#: constant dimensions named in a warning line before "..."
SHOWN_CONSTANT = 10


@dataclass
class Normalization:
    """mu (E,), D (E x r), Z (r x E, Z D = I_r), condition number of Z, with r = ``rank``
    (r = E and D lower triangular, Z = D^-1, when ``full_rank``).

    ``constant``: input dimensions with variance 0 up to the tolerance; ``duplicates``: rows
    of the table equal to an earlier row; ``rows``: V; ``source``: what the rows are (used in
    messages); ``method``: "cholesky" (full rank) or "span" (eigendecomposition)."""

    mu: np.ndarray
    D: np.ndarray
    Z: np.ndarray
    condition: float
    rank: int | None = None
    full_rank: bool = True
    constant: list[int] = field(default_factory=list)
    duplicates: int = 0
    rows: int | None = None
    source: str = "embedding table"
    method: str = "cholesky"

    def __post_init__(self) -> None:
        if self.rank is None:
            self.rank = int(np.shape(self.D)[1])

    @property
    def dims(self) -> int:
        """E, the input dimensions."""
        return int(np.shape(self.D)[0])

    def apply(self, grad: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. normalised input: G (... x H x E) -> G D (... x H x r)."""
        return grad @ self.D

    def message(self) -> str:
        """The one-line trust warning of a rank-deficient normalisation ("" at full rank)."""
        if self.full_rank:
            return ""
        n = len(self.constant)
        shown = ", ".join(map(str, self.constant[:SHOWN_CONSTANT]))
        const = (f"{n} constant dimension{'s' if n != 1 else ''}: {shown}"
                 + (", ..." if n > SHOWN_CONSTANT else "") if n else "no constant dimension")
        dup = f", {self.duplicates} duplicate rows" if self.duplicates else ""
        return (f"input covariance of the {self.source} has rank {self.rank} < {self.dims} "
                f"({const}{dup}): normalised within the span of the inputs")

    def warn(self, stacklevel: int = 3) -> None:
        """Issue :meth:`message` once as a :class:`TrustWarning` (nothing at full rank)."""
        if not self.full_rank:
            warnings.warn(self.message(), TrustWarning, stacklevel=stacklevel)

    def settings(self) -> dict[str, Any]:
        """The settings entries of a result: input_rank, input_dims, input_full_rank,
        constant_inputs, duplicate_rows, normalization ("cholesky" or "span")."""
        return {"input_rank": int(self.rank), "input_dims": self.dims,
                "input_full_rank": bool(self.full_rank),
                "constant_inputs": [int(c) for c in self.constant],
                "duplicate_rows": int(self.duplicates), "normalization": self.method}

    def to_dict(self) -> dict[str, Any]:
        """The "normalization" section of result.json (plain JSON values)."""
        return {**self.settings(), "rows": self.rows, "source": self.source,
                "condition_number_Z": float(self.condition),
                "span_rtol": SPAN_RTOL if not self.full_rank else None,
                "message": self.message() or None}

    def section(self) -> dict[str, Any]:
        """The report's warning box of a rank-deficient normalisation."""
        return {"title": "Warning: inputs normalised within their span",
                "paragraphs": [self.message(),
                               f"Every metric uses the {self.rank} directions in which the "
                               f"inputs vary; the other {self.dims - self.rank} never vary "
                               "in the data, so the gradients along them are not measured."],
                "warning": True}


def embedding_normalization(table: np.ndarray, source: str = "embedding table"
                            ) -> Normalization:
    """Mean, factor D of the covariance (S = D D^T), its (pseudo-)inverse Z and cond(Z) of the
    rows of ``table`` (V x E): an embedding table (token models, as the paper) or the input
    vectors of the analysed stream (continuous inputs). ``source`` names them in messages.

    Full rank: the Cholesky path (D lower triangular, Z = D^-1). Rank deficient: the span path
    (module docstring; D is E x r). Raises :class:`MemlensError` for non-finite values, fewer
    than two rows or a zero covariance (rank 0: nothing varies).
    """
    table = np.asarray(table, dtype=np.float64)
    if table.ndim != 2:
        raise MemlensError(f"the {source} must be a V x E matrix, got shape {table.shape}")
    V, E = table.shape
    if not np.isfinite(table).all():
        raise MemlensError(f"the {source} contains NaN or infinite values: cannot normalise")
    if V < 2:
        raise MemlensError(f"input covariance is singular: the {source} has {V} row (need "
                           "at least two to normalise)")
    dup = _duplicates(table)
    if V > E:
        mu = table.mean(axis=0)
        cov = np.cov(table, rowvar=False).reshape(E, E)
        try:
            D = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            D = None
        if D is not None:
            sv = np.linalg.svd(D, compute_uv=False)
            condition = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
            if np.isfinite(condition) and condition <= MAX_CONDITION:
                Z = np.linalg.solve(D, np.eye(E))
                return Normalization(mu=mu, D=D, Z=Z, condition=condition, rank=E,
                                     full_rank=True, duplicates=dup, rows=V, source=source)
    return span_normalization(table, source, dup)


def span_normalization(table: np.ndarray, source: str = "embedding table",
                       duplicates: int | None = None) -> Normalization:
    """The span path for any V x E ``table`` (module docstring): S = U L U^T, the r
    eigenvalues above SPAN_RTOL * l_1, D = U_r L_r^{1/2} (E x r), Z = L_r^{-1/2} U_r^T.
    r = E is possible (Cholesky failed on round-off, every eigenvalue passes the tolerance):
    then ``full_rank`` is True, ``method`` "span", and no warning is issued."""
    table = np.asarray(table, dtype=np.float64)
    V, E = table.shape
    mu = table.mean(axis=0)
    cov = np.cov(table, rowvar=False).reshape(E, E)
    lam, U = np.linalg.eigh(cov)
    lam, U = lam[::-1], U[:, ::-1]
    top = float(lam[0]) if lam.size else 0.0
    if not top > 0:
        raise MemlensError(f"input covariance of the {source} is singular with rank 0 (all "
                           f"{E} dimensions constant over {V} rows): nothing to normalise")
    tol = SPAN_RTOL * top
    r = int((lam > tol).sum())
    lr, Ur = lam[:r], U[:, :r]
    D = Ur * np.sqrt(lr)
    Z = Ur.T / np.sqrt(lr)[:, None]
    constant = [int(i) for i in np.nonzero(np.diag(cov) <= tol)[0]]
    return Normalization(mu=mu, D=D, Z=Z, condition=float(np.sqrt(lr[0] / lr[-1])), rank=r,
                         full_rank=r == E, constant=constant,
                         duplicates=_duplicates(table) if duplicates is None else duplicates,
                         rows=V, source=source, method="span")


def _duplicates(table: np.ndarray) -> int:
    """Rows equal (bit for bit, -0.0 = 0.0) to an earlier row."""
    rows = np.ascontiguousarray(table + 0.0)
    view = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1])))
    return int(rows.shape[0] - np.unique(view.ravel()).size)
