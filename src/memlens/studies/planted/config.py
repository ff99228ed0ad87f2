"""The planted study's configuration (:class:`PlantedConfig`) and the fixed sizes of its
analyses (bootstrap resamples, the n-gram window's order)."""

from __future__ import annotations

from dataclasses import dataclass

from memlens.core.errors import MemlensError
from memlens.runtime.options import OPTIONS, check_fields

NGRAM_ORDER = 3          # the n-gram window oracle sees exactly the last NGRAM_ORDER - 1 tokens
MAX_DISTANCE = int(OPTIONS["distance"].high)  # largest planted distance the demo accepts
SIGNATURE_RESAMPLES = 200
GRADIENT_BOOTSTRAP = 100
ABLATION_BOOTSTRAP = 200


@dataclass
class PlantedConfig:
    """Sizes of the synthetic experiment (defaults: the full demo, <= 3 minutes on 2 cores)."""

    out: str = "memlens-demo"
    distance: int = 5
    sentences: int = 6000          # language-model training sentences
    decoder_sentences: int = 500   # sentences for training the signature decoders
    heldout_sentences: int = 300   # held-out sentences (signature scores, state gradients)
    gradient_sentences: int = 250  # sentences streamed through the state-gradient engine
    ablation_targets: int = 150    # verbs (held-out sentences) scored by context ablation
    epochs: int = 6
    emb: int = 16
    hidden: int = 32
    archs: tuple[str, ...] = ("lstm", "gru")
    n_nouns: int = 10
    n_fillers: int = 40
    irrelevant_scale: float = 10.0
    margin: float = 0.05           # accuracy above the baseline that still counts as memory
    seed: int = 0
    progress: bool | None = None

    def check(self) -> None:
        """Refuse sizes the experiment cannot run with."""
        check_fields(self, "distance", "seed")  # the schema: 1..MAX_DISTANCE, 0 <= seed
        for key in ("sentences", "decoder_sentences", "heldout_sentences",
                    "gradient_sentences", "ablation_targets", "epochs", "emb", "hidden"):
            if getattr(self, key) < 1:
                raise MemlensError(f"demo {key} must be positive, got {getattr(self, key)}")
        if self.emb < 2:
            raise MemlensError("the demo needs --emb >= 2 (irrelevant and number coordinates)")
        if self.emb >= 2 * self.n_nouns + self.n_fillers + 4:
            raise MemlensError("the demo's vocabulary must be larger than the embedding size")
        for arch in self.archs:
            if arch not in ("lstm", "gru", "rnn"):
                raise MemlensError(f"demo architecture {arch!r}: choose lstm, gru or rnn")

    @property
    def max_delay(self) -> int:
        """Delays/lags analysed: up to twice the planted distance."""
        return 2 * self.distance + 1


__all__ = ["ABLATION_BOOTSTRAP", "GRADIENT_BOOTSTRAP", "MAX_DISTANCE", "NGRAM_ORDER",
           "SIGNATURE_RESAMPLES", "PlantedConfig"]
