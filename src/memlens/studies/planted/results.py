"""The planted study's results: per model a gradients (:class:`PlantedGradients`), a
signatures (:class:`PlantedSignatures`) and an ablation (:class:`PlantedAblation`) result, and
the study's own ``planted-memory`` result (:class:`PlantedResult`) with the per-delay readings
as declared series, what each method recovered, and the findings as sentences.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memlens.analyses.ablation import ContextAblationResult
from memlens.analyses.ablation.result import LN2, effective_context
from memlens.analyses.gradients import GradientResult
from memlens.analyses.signatures import Signature
from memlens.analyses.signatures.table import SERIES as SIGNATURE_SERIES
from memlens.analyses.signatures.table import signature_rows
from memlens.results import Result
from memlens.runtime.plotting import plain_text
from memlens.studies.planted import plots
from memlens.studies.planted.config import GRADIENT_BOOTSTRAP, NGRAM_ORDER, PlantedConfig
from memlens.studies.planted.plots import ABLATION_LABELS
from memlens.studies.planted.prose import description, findings, recovered_text
from memlens.studies.planted.rules import (
    ABLATION_TOLERANCE_BITS,
    DOMINANCE,
    METHODS,
    STRENGTH_FRACTION,
    end_of_dominance,
    end_of_strength,
    first_lag_at_baseline,
    planted_ranks,
)


@dataclass(repr=False)
class PlantedGradients(GradientResult):
    """A gradients result plus where the planted number direction ranks at each delay (noun
    rows gain ``rank_number_*`` and ``strength_number``; two plots of its own)."""

    planted: int = 0
    arch: str = ""
    number_direction: np.ndarray | None = None
    ranks: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, result: GradientResult, direction: np.ndarray, planted: int, arch: str
           ) -> PlantedGradients:
        """``result`` (from ``memlens.state_gradients``) with the planted direction's ranks."""
        base = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        out = cls(**base, planted=planted, arch=arch.upper(), number_direction=direction,
                  ranks=planted_ranks(result, direction))
        out.directions = {"number": direction}
        out.settings = {**out.settings, "classes": out.class_names,
                        "bootstrap": GRADIENT_BOOTSTRAP,
                        "direction": "number = mean(plural nouns) - mean(singular nouns)"}
        return out

    def recovery(self) -> dict[str, int | None]:
        """Recovered memory lengths by the gradient readings: ``strength`` (the length), and
        the end of the number direction's dominance in ``normalised`` and ``unnormalised``
        (raw) embedding space."""
        return {"normalised": end_of_dominance(self.ranks["relmem_normalised"]),
                "unnormalised": end_of_dominance(self.ranks["relmem_unnormalised"]),
                "strength": end_of_strength(self.ranks["strength"])}

    def rows(self) -> list[dict]:
        rows = [dict(r) for r in super().rows()]
        for row in rows:
            if row["class"] == "noun":
                tau = row["delay"]
                row["rank_number_normalised"] = int(self.ranks["normalised"][tau])
                row["rank_number_unnormalised"] = int(self.ranks["unnormalised"][tau])
                row["relmem_number_normalised"] = float(self.ranks["relmem_normalised"][tau])
                row["relmem_number_unnormalised"] = float(
                    self.ranks["relmem_unnormalised"][tau])
                row["strength_number"] = float(self.ranks["strength"][tau])
        return rows

    def summary(self) -> dict:
        sv = self.spectrum("noun")
        rec = self.recovery()
        return {"condition_number_Z": self.normalization.condition,
                "sum_sv_noun_delay0": float(np.nansum(sv[0])),
                f"sum_sv_noun_delay{self.planted}": float(np.nansum(sv[self.planted])),
                "number_dominant_until_normalised": rec["normalised"],
                "number_dominant_until_unnormalised": rec["unnormalised"],
                "number_strength_below_half_at": rec["strength"]}

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "direction": self.number_direction,
                **{f"rank_{k}": v for k, v in self.ranks.items()}}

    @plain_text
    def figures(self, out: Path) -> list[dict[str, str]]:
        return plots.gradient_figures(self, out)


@dataclass(repr=False)
class PlantedSignatures(Result):
    """Memory signatures of the noun's number: the trained model, its random-init control
    and a trigram window, as one "signatures" result (rows as ``memlens signatures`` writes)."""

    kind = "signatures"
    arrays_file = "signatures.npz"

    trained: Signature
    control: Signature
    window: Signature
    arch: str
    planted: int
    margin: float
    model_meta: dict = field(default_factory=dict)
    corpus_meta: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def labelled(self) -> list[tuple[str, Signature]]:
        return [(f"trained {self.arch}", self.trained), ("random-init control", self.control),
                (f"{NGRAM_ORDER}-gram window", self.window)]

    def recovery(self) -> dict[str, int]:
        """First lag at the majority baseline per signature, and (``trained_vs_control``) the
        first lag >= 1 at which the trained model falls to its untrained copy (at lag 0 every
        network reads its current input)."""
        rec = {name: first_lag_at_baseline(s.accuracy, s.majority, self.margin, s.acc_low)
               for name, s in (("trained", self.trained), ("random-init", self.control),
                               ("trigram", self.window))}
        rec["trained_vs_control"] = 1 + first_lag_at_baseline(
            self.trained.accuracy[1:], self.control.accuracy[1:], self.margin,
            self.trained.acc_low[1:])
        return rec

    def rows(self) -> list[dict]:
        (lt, t), (lc, c), (lw, w) = self.labelled()
        return (signature_rows(t, lt, "model", -1, "hidden", "all", c)
                + signature_rows(c, lc, "control", -1, "hidden", "all")
                + signature_rows(w, lw, "ngram", None, "window", "all"))

    def series(self) -> list[dict]:
        return SIGNATURE_SERIES

    def summary(self) -> dict:
        rec, d = self.recovery(), self.planted
        return {"accuracy_lag0": float(self.trained.accuracy[0]),
                f"accuracy_lag{d}": float(self.trained.accuracy[d]),
                "majority": float(self.trained.majority[0]),
                "first_lag_at_baseline_trained": rec["trained"],
                "first_lag_at_baseline_control": rec["random-init"],
                "first_lag_at_baseline_ngram": rec["trigram"],
                "first_lag_at_control_trained": rec["trained_vs_control"]}

    def arrays(self) -> dict[str, np.ndarray]:
        t = self.trained
        return {"accuracy": t.accuracy, "bits": t.bits, "majority": t.majority,
                "control_accuracy": self.control.accuracy,
                "ngram_accuracy": self.window.accuracy, "recall": t.recall}

    @plain_text
    def figures(self, out: Path) -> list[dict[str, str]]:
        return plots.signature_figures(self, out)


@dataclass(repr=False)
class PlantedAblation(ContextAblationResult):
    """Context ablation of one trained model at the verb positions (an "ablation" result).

    The targets are the verbs; the loss is the model's ordinary next-token loss there. At
    distance k everything farther than k tokens before the verb is destroyed in two ways:
    ``swap`` puts the far part of *another* verb's window in its place (real text of the same
    stream at the same offsets, so the sentence structure is intact and the state stays warmed
    up: only the information is gone) and ``drop`` truncates the context to the last k tokens,
    read from a zero state. The tolerance is absolute, ``tolerance_bits`` (half a bit: half of
    the one bit the planted sg/pl feature carries), not a fraction of the unperturbed loss
    (nearly 0 at the verb). Recovered distance = the effective context: the smallest k from
    which the increase stays within the tolerance. The noun that decides the verb lies at
    distance ``planted``, so a model that uses it, and nothing farther, gives exactly
    ``planted``.
    """

    planted: int = 0
    arch: str = ""
    tolerance_bits: float = 0.5

    @classmethod
    def of(cls, result: ContextAblationResult, planted: int, arch: str,
           tolerance_bits: float) -> PlantedAblation:
        """``result`` (from ``memlens.context_ablation``) with the planted distance."""
        base = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        out = cls(**base, planted=planted, arch=arch.upper(), tolerance_bits=tolerance_bits)
        out.settings = {**out.settings, "targets_are": "the verb positions",
                        "tolerance_bits": tolerance_bits}
        return out

    @property
    def tolerance_nats(self) -> float:
        return self.tolerance_bits * LN2

    def recovery(self) -> dict[str, int]:
        """Per perturbation: the smallest distance k from which the loss increase at the verb
        stays within the tolerance (``len(distances) + 1`` when it never does)."""
        inc, never = self.increase, max(self.distances) + 1
        out = {}
        for i, p in enumerate(self.perturbations):
            k = effective_context(self.distances, inc[i], self.tolerance_nats)
            out[p] = never if k is None else int(k)
        return out

    def rows(self) -> list[dict]:
        rows = super().rows()
        for row in rows:
            row["perturbation"] = ABLATION_LABELS.get(row["perturbation"], row["perturbation"])
            for key in ("low", "high"):
                v = row[f"increase_{key}"]
                row[f"increase_{key}_bits"] = None if v is None else v / LN2
        return rows

    def series(self) -> list[dict]:
        return [{"name": "increase", "title": f"{self.arch}: loss increase at the verb",
                 "x": "distance", "y": "increase_bits", "group": ["perturbation"],
                 "low": "increase_low_bits", "high": "increase_high_bits",
                 "xlabel": "distance k (tokens before the verb kept intact)",
                 "ylabel": "loss increase at the verb (bits)",
                 "caption": f"How much worse the model predicts the verb when everything "
                            f"farther than k tokens back is swapped for another verb's context "
                            f"or dropped; 95% block-bootstrap bands. The noun that decides the "
                            f"verb is {self.planted} tokens back."}]

    def summary(self) -> dict:
        out = super().summary()
        out["effective_context"] = self.recovery()
        out["effective_context_definition"] = (
            f"smallest measured k such that the loss increase at the verb is at most "
            f"{self.tolerance_bits:g} bits at k and every larger measured k")
        out["tolerance_bits"] = self.tolerance_bits
        return out

    @plain_text
    def figures(self, out: Path) -> list[dict[str, str]]:
        return plots.ablation_figures(self, out)


def curve_rows(g: PlantedGradients, s: PlantedSignatures, a: PlantedAblation
               ) -> list[dict[str, Any]]:
    """One row per delay/lag/distance of one model: every reading of the planted memory
    (ablation columns in bits at distance k = delay; none at 0)."""
    peak = float(np.nanmax(g.ranks["strength"])) or 1.0
    inc, (lo, hi) = a.increase / LN2, a.intervals()
    col = {p: i for i, p in enumerate(a.perturbations)}
    at = {k: j for j, k in enumerate(a.distances)}
    rows = []
    for tau in range(g.max_delay + 1):
        acc, ctrl = float(s.trained.accuracy[tau]), float(s.control.accuracy[tau])
        row = {"model": g.arch, "delay": tau, "lag": tau,
               "rank_normalised": int(g.ranks["normalised"][tau]),
               "rank_unnormalised": int(g.ranks["unnormalised"][tau]),
               "relmem_normalised": float(g.ranks["relmem_normalised"][tau]),
               "relmem_unnormalised": float(g.ranks["relmem_unnormalised"][tau]),
               "strength": float(g.ranks["strength"][tau]),
               "strength_of_peak": float(g.ranks["strength"][tau]) / peak,
               "accuracy": acc, "control_accuracy": ctrl,
               "window_accuracy": float(s.window.accuracy[tau]),
               "majority": float(s.trained.majority[tau]),
               "accuracy_over_control": acc - ctrl}
        for p in ("swap", "drop"):
            j = at.get(tau)
            ok = j is not None and p in col
            row[f"ablation_{p}_bits"] = float(inc[col[p], j]) if ok else None
            if p == "swap":
                row["ablation_swap_low_bits"] = float(lo[col[p], j] / LN2) if ok else None
                row["ablation_swap_high_bits"] = float(hi[col[p], j] / LN2) if ok else None
        rows.append(row)
    return rows


@dataclass(repr=False)
class PlantedResult(Result):
    """The study's own result (kind "planted-memory"): one row per (model, delay) with every
    reading of the planted memory, declared as series; what each method recovered; findings.

    It declares a ``verdict`` (see :meth:`memlens.results.Result.verdict`), which a report
    shows first: planted vs recovered per method and model with match yes/no, one figure with
    the three views per model (``three_views.png``) and the findings as sentences. Each model's
    own curves are also plotted in its gradients, signatures and ablation result directories.
    """

    kind = "planted-memory"

    config: PlantedConfig
    curves: list[dict[str, Any]] = field(default_factory=list)
    recovered: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    corpus_meta: dict = field(default_factory=dict)
    dirs: list[Path] = field(default_factory=list)

    @property
    def matches(self) -> list[dict[str, Any]]:
        """Trained-model length readings within one step of the planted distance."""
        return [r for r in self.recovered if r["match"] and r["role"] == "trained"]

    def rows(self) -> list[dict[str, Any]]:
        return self.curves

    def series(self) -> list[dict[str, Any]]:
        d = self.config.distance
        return [
            {"name": "strength", "title": "Reaction along the planted number direction",
             "x": "delay", "y": "strength_of_peak", "group": ["model"],
             "xlabel": "delay tau (steps back from the noun)",
             "ylabel": "|Gn dn| / its peak", "log_y": False,
             "caption": f"How strongly the state still reacts to the noun's number, as a "
                        f"fraction of its peak; the memory is over after the last delay at "
                        f"which it reaches {STRENGTH_FRACTION:g} (planted: {d} steps)."},
            {"name": "relmem", "title": "Relative memory of the number direction (normalised)",
             "x": "delay", "y": "relmem_normalised", "group": ["model"],
             "xlabel": "delay tau", "ylabel": "|Gn dn| / sigma_1", "log_y": False,
             "caption": f"How strongly the state reacts along the number direction compared "
                        f"with the strongest direction of normalised embedding space (1: it "
                        f"is the strongest; {DOMINANCE:g} and above: it dominates)."},
            {"name": "added", "title": "Decoding accuracy that training added",
             "x": "lag", "y": "accuracy_over_control", "group": ["model"],
             "xlabel": "lag k", "ylabel": "accuracy minus that of the untrained copy",
             "log_y": False,
             "caption": f"How much better the trained network decodes the number of the noun "
                        f"k steps back than its untrained copy; planted: {d} steps."},
            {"name": "ablation", "title": "Loss increase at the verb (swap beyond k)",
             "x": "delay", "y": "ablation_swap_bits", "group": ["model"],
             "xlabel": "distance k (tokens before the verb kept)", "ylabel": "bits",
             "log_y": False,
             "caption": f"How much worse the verb is predicted when the context farther than "
                        f"k tokens back is swapped for another verb's; the noun is {d} back."},
        ]

    @plain_text
    def figures(self, out: Path) -> list[dict[str, str]]:
        """``three_views.png``: per model (rows) the three views (columns) against delay."""
        return plots.three_views_figures(self, out)

    def settings_info(self) -> dict[str, Any]:
        settings = dataclasses.asdict(self.config)
        for key in ("out", "progress"):
            settings.pop(key)
        return {**settings, "max_delay": self.config.max_delay, "ngram_order": NGRAM_ORDER,
                "strength_fraction": STRENGTH_FRACTION, "dominance": DOMINANCE,
                "ablation_tolerance_bits": ABLATION_TOLERANCE_BITS}

    def model_info(self) -> dict[str, Any]:
        c = self.config
        return {"path": ", ".join(f"{a}.pt" for a in c.archs), "emb": c.emb, "hidden": c.hidden,
                "embeddings": "fixed, planted geometry (see the description)",
                "epochs": c.epochs}

    def summary(self) -> dict[str, Any]:
        trained = [r for r in self.recovered if r["role"] == "trained"]
        out: dict[str, Any] = {"planted_distance": self.config.distance,
                               "delays_analysed": self.config.max_delay,
                               "length_readings": len(trained),
                               "length_readings_within_one_step": len(self.matches)}
        for arch, stats in self.training.items():
            out[f"valid_perplexity_{arch}"] = stats["valid_ppl"]
        return out

    def verdict(self) -> dict[str, Any]:
        cfg = self.config
        trained = [r for r in self.recovered if r["role"] == "trained"]
        n_ok = sum(bool(r["match"]) for r in trained)
        lead = (f"A noun's number decides the verb {cfg.distance} steps later. "
                f"{n_ok} of the {len(trained)} length readings of the trained models "
                f"(state gradients, memory signatures, context ablation; one per view and "
                f"model) recover that distance within one step.")
        table = [{"model": r["model"], "view": METHODS.get(r["method"], {}).get("view", ""),
                  "method": r["method"], "role": r["role"], "planted": r["planted"],
                  "recovered": recovered_text(r["recovered"], cfg.max_delay),
                  "match": r["match"]} for r in self.recovered]
        return {"title": f"Verdict: planted {cfg.distance} steps, recovered by each view",
                "paragraphs": [lead, "Role: trained = a reading of the memory length of a "
                               "trained model; contrast = a reading shown beside it because "
                               "it does not measure that length (the findings say why); "
                               "control and oracle = reference models (the oracle's match is "
                               f"against its own window, {NGRAM_ORDER - 1}; the control has "
                               "no known answer)."],
                "table": table, "figures": ["three_views.png"],
                "findings": findings(cfg, self.recovered, self.curves)}

    def extra(self) -> dict[str, Any]:
        return {"planted": {"title": "What was planted, and how each method reads it",
                            "paragraphs": description(self.config, self.training),
                            "table": [{"method": m, **v} for m, v in METHODS.items()]},
                "stage_seconds": self.stage_seconds}


__all__ = ["PlantedAblation", "PlantedGradients", "PlantedResult", "PlantedSignatures",
           "curve_rows"]
