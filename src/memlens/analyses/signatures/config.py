"""The options of a signature study (``memlens signatures``) and their validation.

:class:`StudyConfig` is the flat record of one study: what is measured (model, corpora,
layers, readout, units, max_delay, decoder, symbols, control and comparison models) and how
it runs (blocks, bootstrap, seed, device, warmup, world_size). ``result.json`` records it as
the study's settings (without ``out``). :func:`check_config` refuses bad values with one line
before any heavy work.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from memlens.analyses.signatures.decoders import choose_decoder
from memlens.core.errors import MemlensError
from memlens.runtime.options import Bootstrap, RunOptions, check_fields, check_option

CONTROLS = ("random-init", "none")


@dataclass
class StudyConfig:
    """Options of ``memlens signatures`` (see its --help). ``layer``: "all", a layer index or
    comma-separated indices; ``readout`` None: each layer's output."""

    model: str
    corpus: str
    out: str
    heldout: str | None = None
    format: str = "text"
    layer: str = "all"
    readout: str | None = None
    units: str = "all"
    max_delay: int = 20
    decoder: str = "auto"
    symbols: str | None = None
    control: str = "random-init"
    ngram: int = 0
    window_lm: int = 0
    lm_train: str | None = None
    lm_max_tokens: int | None = 300000
    lm_epochs: int = 2
    train_tokens: int | None = None
    heldout_tokens: int | None = None
    blocks: int = 20
    bootstrap: int = 1000
    seed: int = 0
    vocab: str | None = None
    unit: str | None = None
    device: str = "cpu"
    warmup: int | None = None
    world_size: int = 1
    context: str | None = None  # the context regime; None: stream (speech: sentence)

    def settings(self) -> dict:
        """The study's settings as recorded in result.json (every field but ``out``)."""
        settings = dataclasses.asdict(self)
        settings.pop("out", None)
        return settings

    def bootstrap_options(self) -> Bootstrap:
        """The intervals' bootstrap: ``bootstrap`` resamples of ``blocks`` blocks, seeded
        with ``seed`` (the seed of the decoders too)."""
        return Bootstrap(self.bootstrap, self.blocks, self.seed)

    def run_options(self) -> RunOptions:
        """Device and bootstrap as :class:`~memlens.runtime.options.RunOptions`."""
        return RunOptions(device=self.device, bootstrap=self.bootstrap_options())


def check_config(cfg: StudyConfig) -> None:
    """Everything about the options that can fail, checked before any heavy work (a one-line
    MemlensError naming the CLI option)."""
    choose_decoder(cfg.decoder, 0)  # a known name ("auto" is resolved once symbols are known)
    if cfg.control not in CONTROLS:
        raise MemlensError(f"unknown --control {cfg.control!r}: choose random-init or none")
    check_fields(cfg, "ngram", "window_lm", "train_tokens", "heldout_tokens", "lm_max_tokens",
                 "lm_epochs")  # the option schema: types, ranges, finiteness
    if cfg.ngram == 1 or cfg.window_lm == 1:
        raise MemlensError("--ngram and --window-lm need an order >= 2 (0 = off)")
    from memlens.core.files import check_input_file  # the input gate, up front (issue 21)
    for flag, path in (("--corpus", cfg.corpus), ("--heldout", cfg.heldout),
                       ("--lm-train", cfg.lm_train)):
        if path is not None and (flag == "--lm-train" or not os.path.isdir(path)):
            check_input_file(path, f"{flag} text")  # missing, special, huge: one line
    if os.path.lexists(cfg.model) and not os.path.isdir(cfg.model):  # a checkpoint file
        from memlens.core.files import binary_limit
        check_input_file(cfg.model, "checkpoint", binary_limit())  # before its fingerprint
    if cfg.warmup is not None:
        check_option("warmup", cfg.warmup, "--warmup")
    check_option("seed", cfg.seed, "--seed")
    if cfg.context is not None:
        cfg.context = check_option("context", cfg.context, "--context")
    check_option("bootstrap", cfg.bootstrap, "--bootstrap")
    check_option("blocks", cfg.blocks, "--blocks")
    if cfg.blocks < 2:
        raise MemlensError(f"--blocks must be at least 2 (bootstrap intervals over blocks), "
                           f"got {cfg.blocks}")


__all__ = ["CONTROLS", "StudyConfig", "check_config"]
