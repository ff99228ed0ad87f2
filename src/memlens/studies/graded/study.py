"""Training a small recurrent LM on the graded corpus and reading its state gradients
(:func:`run_graded_importance`).

The model is a memlens :class:`~memlens.models.lm.LanguageModel` whose embedding table is the
fixed planted one (:func:`~memlens.studies.graded.corpus.graded_embeddings`); only the recurrent
layer and the output layer are trained (AdamW, truncated BPTT, seeded). The state gradients
(:func:`memlens.state_gradients`, the layer's memory readout: an LSTM's cell state) of a fresh
held-out stream are read per delay in two spaces:

* normalised (Gn(tau) = Gbar(tau) D, the paper's): singular values, the strength
  |Gn dn| of each planted direction dn (unit, normalised), and |v_i . dn_i|, the alignment of
  the i-th right-singular vector with the i-th feature;
* raw (Gbar(tau) itself, unit raw directions): the same readings.

Every reading has a 95% block-bootstrap interval (the result's 20 blocks of targets).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from memlens.analyses.gradients import metrics, state_gradients
from memlens.analyses.gradients.result import GradientResult
from memlens.core.errors import MemlensError
from memlens.models.lm import LanguageModel
from memlens.runtime.bootstrap import block_weights, percentile_interval
from memlens.runtime.options import as_options
from memlens.studies.graded.corpus import (
    FEATURES,
    IRRELEVANT,
    GradedConfig,
    answer_floor_nats,
    graded_embeddings,
    graded_stream,
    planted_directions,
)

NAMES = (*FEATURES, IRRELEVANT)
ALIGNED = 0.8   # |v_i . dn_i| from which the i-th singular vector counts as the i-th feature


def _detach(state: Any) -> Any:
    """The recurrent state (nested tuples/lists of tensors) cut from the graph."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(_detach(s) for s in state)


def train_graded(cfg: GradedConfig) -> tuple[LanguageModel, dict[str, float]]:
    """A seeded ``cfg.arch`` LM with the fixed planted embeddings, trained on a stream of
    ``cfg.train_tokens`` tokens.

    Parameters
    ----------
    cfg : GradedConfig
        Sizes, seed and optimiser settings.

    Returns
    -------
    tuple of (LanguageModel, dict)
        The model (eval mode) and ``{"train_loss": mean loss of the last tenth of the
        updates, "seconds": training time}``.
    """
    table = graded_embeddings(cfg)
    V = len(table)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LanguageModel({"arch": cfg.arch, "emb": cfg.emb, "hidden": cfg.hidden,
                               "fixed_embeddings": True}, V)
    with torch.no_grad():
        model.encoder.embedding.weight.copy_(torch.from_numpy(table).float())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ids = graded_stream(cfg, cfg.train_tokens, cfg.seed + 1)
    cols = len(ids) // cfg.batch
    if cols < cfg.bptt + 1:
        raise MemlensError("graded study: train_tokens too small for batch x bptt")
    data = torch.from_numpy(ids[:cols * cfg.batch]).view(cfg.batch, cols).t().contiguous()
    start, pos, state, losses = time.time(), 0, None, []
    model.train()
    for _ in range(cfg.steps):
        if pos + cfg.bptt + 1 > cols:
            pos, state = 0, None
        x, y = data[pos:pos + cfg.bptt], data[pos + 1:pos + cfg.bptt + 1]
        pos += cfg.bptt
        logits, state = model(x, state)
        state = _detach(state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    tail = losses[-max(1, cfg.steps // 10):]
    return model, {"train_loss": float(np.mean(tail)), "seconds": round(time.time() - start, 2)}


def heldout_loss(model: LanguageModel, ids: np.ndarray) -> float:
    """Mean next-token cross-entropy (nats) of ``model`` on the stream ``ids``."""
    x = torch.from_numpy(ids).view(-1, 1)
    with torch.no_grad():
        logits, _ = model(x[:-1])
        return float(torch.nn.functional.cross_entropy(logits.reshape(len(ids) - 1, -1),
                                                       x[1:].reshape(-1)))


def _space(g: np.ndarray, units: dict[str, np.ndarray]) -> dict[str, Any]:
    """Readings of one gradient matrix ``g`` (H x r) against unit directions ``units``:
    singular values, strength |g d| per direction, |v_i . d_i| per feature and the direction
    best aligned with v_1."""
    _, s, vt = np.linalg.svd(np.nan_to_num(g), full_matrices=True)
    v1 = {n: abs(float(vt[0] @ d)) for n, d in units.items()}
    return {"sv": s[:len(NAMES)].tolist(),
            "strength": {n: float(np.linalg.norm(g @ d)) for n, d in units.items()},
            "alignment": {n: abs(float(vt[i] @ units[n])) for i, n in enumerate(FEATURES)},
            "top": max(v1, key=v1.get), "v1": v1}


def _units(res: GradientResult, dirs: dict[str, np.ndarray]
           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Unit directions: normalised (dn = Z d / |Z d|) and raw (d / |d|)."""
    Z = res.normalization.Z
    return ({n: metrics.unit_direction(d, Z) for n, d in dirs.items()},
            {n: d / np.linalg.norm(d) for n, d in dirs.items()})


def _flat(reading: dict[str, Any]) -> np.ndarray:
    """The numbers of one reading in a fixed order (for the bootstrap)."""
    return np.array([*reading["sv"], *reading["strength"].values(),
                     *reading["alignment"].values()])


def _with_intervals(point: dict[str, Any], draws: np.ndarray) -> dict[str, Any]:
    """``point`` with every number replaced by [value, low, high] (95% percentile)."""
    low, high = percentile_interval(draws, 0.95, axis=0)
    it = iter(zip(low.tolist(), high.tolist()))

    def ci(v: float) -> list[float]:
        lo, hi = next(it)
        return [v, lo, hi]

    return {"sv": [ci(v) for v in point["sv"]],
            "strength": {n: ci(v) for n, v in point["strength"].items()},
            "alignment": {n: ci(v) for n, v in point["alignment"].items()},
            "top": point["top"], "v1": point["v1"]}


def read_delays(res: GradientResult, dirs: dict[str, np.ndarray], cfg: GradedConfig
                ) -> list[dict[str, Any]]:
    """Per delay, the normalised and raw readings (:func:`_space`) with 95% block-bootstrap
    intervals (``cfg.bootstrap`` resamples of the result's blocks, seeded).

    Parameters
    ----------
    res : GradientResult
        State gradients of the held-out stream.
    dirs : dict of str to numpy.ndarray
        Raw-space direction of each name in :data:`NAMES`.
    cfg : GradedConfig
        The planted lag, the seed and the resamples.

    Returns
    -------
    list of dict
        One dict per delay: ``delay``, ``planted`` and, for ``normalised`` and ``raw``,
        ``sv`` (top singular values), ``strength`` (per direction), ``alignment``
        (|v_i . d_i| per feature), each number as [value, low, high], plus ``top`` (the
        direction nearest v_1) and ``v1`` (|v_1 . d| per direction).
    """
    norm_u, raw_u = _units(res, dirs)
    bs, bc = res.raw.block_sums, res.raw.block_counts          # B x S x H x E, B x S
    w = block_weights(bs.shape[0], max(1, cfg.bootstrap), cfg.seed, draw="indices")
    rows = []
    for tau in range(res.max_delay + 1):
        g = res.mean(tau)
        tot = w @ bc[:, tau].astype(np.float64)
        means = (w @ bs[:, tau].reshape(bs.shape[0], -1)) / tot[:, None]
        means = means.reshape(len(w), *g.shape)
        row: dict[str, Any] = {"delay": tau, "planted": tau < cfg.lag}
        for space, units, fn in (("normalised", norm_u, res.normalization.apply),
                                 ("raw", raw_u, lambda m: m)):
            draws = np.stack([_flat(_space(fn(m), units)) for m in means])
            row[space] = _with_intervals(_space(fn(g), units), draws)
        rows.append(row)
    return rows


def _order(reading: dict[str, Any]) -> list[str]:
    """Direction names by decreasing strength."""
    s = reading["strength"]
    return sorted(s, key=lambda n: -s[n][0])


def checks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict's ingredients over the planted delays: the strength order in each space,
    whether the normalised one is the planted order with separated intervals, whether each
    v_i aligns with f_i (>= :data:`ALIGNED`), and the raw v_1's best-aligned direction.

    Parameters
    ----------
    rows : list of dict
        The readings of :func:`read_delays`.

    Returns
    -------
    dict
        ``{space}_order`` and ``{space}_top`` per planted delay, ``{space}_order_as_planted``,
        ``{space}_aligned`` (space: normalised, raw), ``normalised_intervals_separated`` and
        ``only_after_normalisation`` (planted order and alignment in normalised space, not in
        raw space).
    """
    planted = [r for r in rows if r["planted"]]
    out: dict[str, Any] = {"planted_order": list(NAMES)}
    for space in ("normalised", "raw"):
        out[f"{space}_order"] = {r["delay"]: _order(r[space]) for r in planted}
        out[f"{space}_order_as_planted"] = all(_order(r[space]) == list(NAMES)
                                               for r in planted)
        out[f"{space}_top"] = {r["delay"]: r[space]["top"] for r in planted}
        out[f"{space}_aligned"] = all(r[space]["alignment"][n][0] >= ALIGNED
                                      for r in planted for n in FEATURES)
    out["normalised_intervals_separated"] = all(
        r["normalised"]["strength"][a][1] > r["normalised"]["strength"][b][2]
        for r in planted for a, b in zip(NAMES, NAMES[1:]))
    out["only_after_normalisation"] = bool(
        out["normalised_order_as_planted"] and out["normalised_aligned"]
        and not out["raw_order_as_planted"])
    return out


def run_graded_importance(cfg: GradedConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Run the graded-importance study: generate, train, measure, check.

    Parameters
    ----------
    cfg : GradedConfig or None, optional
        The study's sizes and planted values (default ``GradedConfig()``).
    **overrides
        Fields of :class:`GradedConfig` to replace (e.g. ``seed=1``, ``steps=500``).

    Returns
    -------
    dict
        ``config``, ``training`` (train and held-out loss, the loss floor, seconds),
        ``normalization`` (condition number of Z), ``delays`` (one entry per delay:
        ``normalised`` and ``raw`` readings, each number as [value, low, high]) and
        ``checks`` (:func:`checks`).

    Raises
    ------
    MemlensError
        When a size or planted value is out of range, or a field name is unknown.
    """
    cfg = cfg or GradedConfig()
    try:
        cfg = replace(cfg, **overrides)
    except TypeError as exc:
        raise MemlensError(f"graded study: {exc}") from None
    cfg.check()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and immune to busy cores
    try:
        model, training = train_graded(cfg)
        test = graded_stream(cfg, cfg.test_tokens, cfg.seed + 2)
        training.update(heldout_loss=heldout_loss(model, test), floor=answer_floor_nats(cfg))
        res = state_gradients(model, torch.from_numpy(test), cfg.max_delay,
                              options=as_options(device="cpu", bootstrap=0, progress=False))
    finally:
        torch.set_num_threads(threads)
    rows = read_delays(res, planted_directions(graded_embeddings(cfg)), cfg)
    return {"config": asdict(cfg), "training": training,
            "normalization": {"condition_number_Z": float(res.normalization.condition)},
            "readout": res.readout, "delays": rows, "checks": checks(rows)}


__all__ = ["ALIGNED", "NAMES", "checks", "heldout_loss", "read_delays",
           "run_graded_importance", "train_graded"]
