"""Running the planted study end to end (:func:`run_planted`): generate the corpora, then per
architecture train a model and run the three analyses, saving every result under
``cfg.out``, and finally the study's own ``planted-memory`` result."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from memlens.data import Corpus
from memlens.runtime.progress import progress_bar
from memlens.studies.planted.analyses import (
    measure_ablation,
    measure_gradients,
    measure_signatures,
)
from memlens.studies.planted.config import PlantedConfig
from memlens.studies.planted.corpus import corpus_info, planted_corpus
from memlens.studies.planted.results import PlantedResult, curve_rows
from memlens.studies.planted.rules import recovered_rows
from memlens.studies.planted.training import train_model


class _Stages:
    """The study's stages ("corpus", then per architecture "train", "gradients",
    "signatures", "ablation") as a progress bar; :meth:`done` records each stage's seconds in
    ``seconds`` (the result's ``stage_seconds``)."""

    def __init__(self, cfg: PlantedConfig, seconds: dict[str, float]) -> None:
        self.names = ["corpus"] + [f"{s} {a}" for a in cfg.archs
                                   for s in ("train", "gradients", "signatures", "ablation")]
        self.bar = progress_bar(len(self.names), cfg.progress, "memlens demo", unit="stage")
        self.bar.set_description(f"demo: {self.names[0]}")
        self.progress = cfg.progress
        self.seconds = seconds
        self.clock = time.time()

    def done(self, stage: str) -> None:
        """Record ``stage`` as finished and show the next one."""
        self.seconds[stage] = round(time.time() - self.clock, 2)
        self.clock = time.time()
        self.bar.update(1)
        if len(self.seconds) < len(self.names):
            self.bar.set_description(f"demo: {self.names[len(self.seconds)]}")

    def log(self, msg: str) -> None:
        """Training messages: printed above the bar when progress is on, else dropped."""
        if self.progress:
            self.bar.write(msg)

    def close(self) -> None:
        self.bar.close()


def _corpora(cfg: PlantedConfig) -> dict[str, Corpus]:
    """The study's corpora, each seeded from ``cfg.seed``: ``train``, ``valid`` (a tenth of
    the training size, at least 50 sentences), ``decoder`` (signature decoders), ``heldout``
    (signature scores, ablation targets) and ``gradient`` (a prefix of the held-out stream:
    the same seed)."""
    s = cfg.seed
    return {"train": planted_corpus(cfg, cfg.sentences, s + 1),
            "valid": planted_corpus(cfg, max(50, cfg.sentences // 10), s + 2),
            "decoder": planted_corpus(cfg, cfg.decoder_sentences, s + 3),
            "heldout": planted_corpus(cfg, cfg.heldout_sentences, s + 4),
            "gradient": planted_corpus(cfg, cfg.gradient_sentences, s + 4)}


def _study_model(cfg: PlantedConfig, arch: str, corpora: dict[str, Corpus], work: Path,
                 result: PlantedResult, stages: _Stages) -> None:
    """Train one ``arch`` model and run the three analyses on it; save each result under
    ``cfg.out`` and add the model's recovered values and curves to ``result``."""
    out = Path(cfg.out)
    ckpt = out / f"{arch}.pt"
    model = train_model(cfg, arch, corpora["train"], corpora["valid"], work, ckpt, stages.log)
    best = min(model.history, key=lambda r: r.get("valid_loss", r["train_loss"]))
    result.training[arch] = {"valid_ppl": best["valid_ppl"], "epoch": best["epoch"]}
    stages.done(f"train {arch}")
    g = measure_gradients(model, ckpt.name, corpora["gradient"], cfg)
    result.dirs.append(g.save(out / f"gradients-{arch}"))
    stages.done(f"gradients {arch}")
    sg = measure_signatures(model, ckpt.name, corpora["decoder"], corpora["heldout"], cfg)
    result.dirs.append(sg.save(out / f"signatures-{arch}"))
    stages.done(f"signatures {arch}")
    ab = measure_ablation(model, ckpt.name, corpora["heldout"], cfg)
    result.dirs.append(ab.save(out / f"ablation-{arch}"))
    stages.done(f"ablation {arch}")
    result.recovered += recovered_rows(arch.upper(), g.recovery(), sg.recovery(),
                                       ab.recovery(), cfg)
    result.curves += curve_rows(g, sg, ab)


def run_planted(cfg: PlantedConfig | None = None, log: Callable[[str], None] = print
                ) -> PlantedResult:
    """Run the study and save every result under ``cfg.out``: ``{arch}.pt``,
    ``gradients-{arch}/``, ``signatures-{arch}/``, ``ablation-{arch}/`` and
    ``planted-memory/``. The returned result's ``dirs`` lists the saved result directories
    (its own first). (``log`` is accepted for the callers' sake; training messages go to the
    progress bar.)"""
    cfg = cfg or PlantedConfig()
    cfg.check()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    result = PlantedResult(cfg)
    stages = _Stages(cfg, result.stage_seconds)
    corpora = _corpora(cfg)
    result.corpus_meta = {"path": "synthetic (generated in memory)",
                          "training_sentences": cfg.sentences,
                          **corpus_info(corpora["train"], cfg.sentences, cfg)}
    stages.done("corpus")
    with tempfile.TemporaryDirectory(prefix="memlens-demo-") as work:
        for arch in cfg.archs:
            _study_model(cfg, arch, corpora, Path(work), result, stages)
    stages.close()
    result.dirs.insert(0, result.save(out / "planted-memory"))
    return result


__all__ = ["run_planted"]
