"""Memory metrics on normalised average state gradients (DESIGN.md section 1).

* SVD: Gn(tau) = Gbar(tau) D = U diag(sigma) V^T; all singular values, sigma_1..5, their sum.
  D is E x r (r = E at full rank; r < E when the inputs span only r dimensions,
  :mod:`memlens.analyses.gradients.normalize`), so Gn is H x r and V^T is r x r.
* Relative memory of a property direction d (embedding space): dn = Z d / |Z d| (Z: r x E;
  the part of d outside the span of the inputs is dropped), relmem(tau) = |Gn(tau) dn| /
  sigma_1(tau).
* Subspace alignment: |V_k^T dn| (norm of dn's projection on the top-k right singular vectors)
  and share_k = (sigma_1 + .. + sigma_k) / sum(sigma).
* Selectiveness (:func:`selectiveness`): effective rank exp(H(sigma / sum sigma)), sigma_1 /
  sum(sigma) and the top-5 share of the spectrum.
* Block bootstrap of sum(sigma) (and optionally of selectiveness) per delay: resample the B
  contiguous target blocks with replacement (:mod:`memlens.runtime.bootstrap`, "indices"
  draws), recompute the pooled mean, normalise, SVD; report the standard error and a
  percentile interval.
* Probe: multinomial logistic regression predicting a token's class from its embedding
  (held-out accuracy vs the majority baseline) and class-mean embeddings (over vocabulary
  types, each word once, as the original, or over token occurrences).
"""

from __future__ import annotations

import numpy as np
import torch

from memlens.runtime.bootstrap import block_weights, percentile_interval


def singular_values(mats: np.ndarray) -> np.ndarray:
    """Singular values (descending) of each matrix in a stack (... x H x r): min(H, r)."""
    mats = np.nan_to_num(np.asarray(mats, dtype=np.float64))
    return torch.linalg.svdvals(torch.from_numpy(mats)).numpy()


def right_singular_vectors(mat: np.ndarray) -> np.ndarray:
    """Rows of V^T (directions of normalised embedding space, r coordinates in the basis of
    Z), strongest first: r x r for Gn H x r."""
    _, _, vt = np.linalg.svd(np.nan_to_num(mat), full_matrices=True)
    return vt


def unit_direction(direction: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """dn = Z d / |Z d| (r,) for a direction d (E,) in raw embedding space; Z is r x E."""
    dn = Z @ np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(dn)
    if not norm > 0:
        raise ValueError("property direction is zero" + (
            " within the span of the inputs" if Z.shape[0] < Z.shape[1] else ""))
    return dn / norm


def relative_memory(gn: np.ndarray, dn: np.ndarray) -> float:
    """|Gn dn| / sigma_1 for one normalised gradient Gn (H x r) and unit direction dn (r)."""
    s1 = np.linalg.norm(gn, 2)
    return float(np.linalg.norm(gn @ dn) / s1) if s1 > 0 else float("nan")


def alignment(gn: np.ndarray, dn: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(|V_j^T dn| for j = 1..k, share of the singular-value sum carried by the top j)."""
    _, s, vt = np.linalg.svd(np.nan_to_num(gn), full_matrices=True)
    k = min(k, vt.shape[0])
    proj = np.array([np.linalg.norm(vt[:j] @ dn) for j in range(1, k + 1)])
    total = s.sum()
    share = np.cumsum(s)[:k] / total if total > 0 else np.full(k, np.nan)
    return proj, share


SELECTIVENESS = ("eff_rank", "sv1_share", "sv5_share")


def selectiveness(sigma: np.ndarray) -> np.ndarray:
    """How concentrated a singular-value spectrum is: ``... x 3`` for ``... x m`` spectra.

    With p_i = sigma_i / sum_j sigma_j (zero terms dropped from the entropy):

    * ``eff_rank`` = exp(H(p)), H(p) = -sum_i p_i ln p_i: the effective number of
      directions (1 when one direction carries all, m when all are equal);
    * ``sv1_share`` = sigma_1 / sum(sigma);
    * ``sv5_share`` = (sigma_1 + .. + sigma_5) / sum(sigma) (1 when m <= 5).

    The verdicts use the effective rank: it is scale free (unchanged when the gradient is
    multiplied by a constant, so it separates the shape of memory from its amount, sum(sigma))
    and uses the whole spectrum, with no cut-off k; lower means more selective. NaN where the
    spectrum is zero or not finite.
    """
    s = np.asarray(sigma, dtype=np.float64)
    total = s.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = s / total
        logs = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
        out = np.stack([np.exp(-(p * logs).sum(-1)), p[..., 0], p[..., :5].sum(-1)], axis=-1)
    out[~(np.isfinite(total[..., 0]) & (total[..., 0] > 0))] = np.nan
    return out


def block_bootstrap(block_sums: np.ndarray, block_counts: np.ndarray, D: np.ndarray,
                    resamples: int = 200, level: float = 0.95, seed: int = 0,
                    stat=None) -> dict[str, np.ndarray]:
    """Bootstrap over contiguous blocks of sum(sigma(Gbar(tau) D)) for every delay.

    block_sums: B x S x H x E, block_counts: B x S, D: E x r. Returns {"se", "low", "high"} (each S;
    NaN where undefined, e.g. everywhere when ``resamples`` is 0 or there is one block).
    ``stat`` (optional, e.g. :func:`selectiveness`) maps the resampled spectra (n x m) to
    n x q further statistics, computed from the same draws: "stat_se", "stat_low",
    "stat_high" (each S x q) are added.
    """
    B, S = block_counts.shape
    se, low, high = (np.full(S, np.nan) for _ in range(3))
    q = stat(np.ones((1, 1))).shape[-1] if stat is not None else 0
    extra = {f"stat_{k}": np.full((S, q), np.nan) for k in ("se", "low", "high")} \
        if stat is not None else {}
    if B < 2 or resamples < 1:
        return {"se": se, "low": low, "high": high, **extra}
    weights = block_weights(B, resamples, seed, draw="indices")                 # n x B
    Dt = torch.from_numpy(np.asarray(D, dtype=np.float64))
    for tau in range(S):
        flat = block_sums[:, tau].reshape(B, -1)
        tot = weights @ block_counts[:, tau].astype(np.float64)
        ok = tot > 0
        if not ok.any():
            continue
        means = (weights[ok] @ flat) / tot[ok, None]
        gn = torch.from_numpy(means.reshape(ok.sum(), *block_sums.shape[2:])) @ Dt
        sv = torch.linalg.svdvals(gn)
        sums = sv.sum(-1).numpy()
        se[tau] = sums.std(ddof=1) if sums.size > 1 else np.nan
        low[tau], high[tau] = percentile_interval(sums, level)
        if stat is not None:
            draws = stat(sv.numpy())
            draws = draws[np.isfinite(draws).all(1)]
            if len(draws) > 1:
                extra["stat_se"][tau] = draws.std(0, ddof=1)
                extra["stat_low"][tau], extra["stat_high"][tau] = percentile_interval(
                    draws, level)
    return {"se": se, "low": low, "high": high, **extra}


WEIGHTINGS = ("type", "token")


def class_mean_embeddings(table: np.ndarray, ids: np.ndarray,
                          memberships: list[list[int]], n_classes: int,
                          weighting: str = "token") -> np.ndarray:
    """Mean embedding of each class (C x E; NaN rows if empty).

    weighting "token": over the class's token occurrences, m_c = sum_{j: c in cls(j)} x_{w_j} /
    #{j: c in cls(j)} (frequent words weigh more). "type": over the distinct vocabulary ids
    of those tokens, each once, m_c = mean of table[i] for i in {w_j : c in cls(j)}; this is
    the original's ``--avg_emb`` (``aux_scripts/pos_classifier_sklearn.py``), which averages
    one embedding per vocabulary word of the class.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}")
    pairs = [(c, i) for i, m in zip(ids, memberships) for c in m]  # (class, row) per occurrence
    if weighting == "type":
        pairs = sorted(set(pairs))
    sums = np.zeros((n_classes, table.shape[1]))
    counts = np.zeros(n_classes)
    if pairs:
        cls, rows = np.array(pairs, dtype=np.int64).T
        np.add.at(sums, cls, table[rows])
        counts = np.bincount(cls, minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def probe_accuracy(table: np.ndarray, ids: np.ndarray, memberships: list[list[int]],
                   max_samples: int = 20000, seed: int = 0) -> dict[str, float] | None:
    """Held-out accuracy of logistic regression predicting a token's (first) class from its
    embedding, with the majority-class baseline; None when there are fewer than two classes."""
    from sklearn.linear_model import LogisticRegression

    rows = [(i, m[0]) for i, m in zip(ids, memberships) if m]
    if len(rows) < 20:
        return None
    rng = np.random.default_rng(seed)
    rows = [rows[k] for k in rng.permutation(len(rows))[:max_samples]]
    X = table[[r[0] for r in rows]]
    y = np.array([r[1] for r in rows])
    if len(set(y.tolist())) < 2:
        return None
    cut = int(0.8 * len(rows))
    clf = LogisticRegression(max_iter=500)
    clf.fit(X[:cut], y[:cut])
    acc = float((clf.predict(X[cut:]) == y[cut:]).mean())
    values, freq = np.unique(y[:cut], return_counts=True)
    majority = float((y[cut:] == values[freq.argmax()]).mean())
    return {"accuracy": acc, "majority_baseline": majority, "train": cut,
            "test": len(rows) - cut}
