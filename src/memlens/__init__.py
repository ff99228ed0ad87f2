"""memlens: what recurrent sequence models remember of their past input, and for how long."""

from memlens.core.errors import MemlensError
from memlens.core.version import __version__  # noqa: F401
from memlens.data import Corpus, Vocab, load_corpus, make_synthetic
from memlens.models import (
    LanguageModel,
    RecurrentEncoder,
    RecurrentLayer,
    StepLayer,
    Stream,
    TorchLayer,
    as_encoder,
    load_checkpoint,
    save_checkpoint,
    wrap,
)
from memlens.protocol import Site
from memlens.results import Result, load_result
from memlens.runtime.options import Bootstrap, Checkpointing, RunOptions
from memlens.training import TrainConfig, evaluate, train

__all__ = ["Bootstrap", "Checkpointing", "Corpus", "LanguageModel", "MemlensError",
           "RecurrentEncoder", "RecurrentLayer", "Result", "RunOptions", "Site", "StepLayer",
           "Stream", "TorchLayer", "TrainConfig", "Vocab", "as_encoder",
           "context_ablation", "evaluate", "from_hf", "load_checkpoint", "load_corpus",
           "load_result", "make_synthetic", "memory_signature", "save_checkpoint",
           "state_gradients", "train", "wrap"]


def __getattr__(name: str):
    # The analyses are imported lazily so that `import memlens` stays light.
    if name == "state_gradients":
        from memlens.analyses.gradients import state_gradients

        return state_gradients
    if name == "from_hf":  # needs the optional transformers package only when called
        from memlens.models.hf import from_hf

        return from_hf
    if name == "context_ablation":
        from memlens.analyses.ablation import context_ablation

        return context_ablation
    if name == "memory_signature":
        from memlens.analyses.signatures import memory_signature

        return memory_signature
    raise AttributeError(f"module 'memlens' has no attribute {name!r}")
