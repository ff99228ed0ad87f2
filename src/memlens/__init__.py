"""memlens: what recurrent sequence models remember of their past input, and for how long."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memlens.core.errors import MemlensError
from memlens.core.version import __version__  # noqa: F401

# Everything else is imported on first use (PEP 562), so that `import memlens.cli` does not
# import torch: the console program handles SIGTERM before torch loads (issue 21).
_LAZY = {
    **dict.fromkeys(("Corpus", "Vocab", "load_corpus", "make_synthetic"), "memlens.data"),
    **dict.fromkeys(("LanguageModel", "RecurrentEncoder", "RecurrentLayer", "StepLayer",
                     "Stream", "TorchLayer", "as_encoder", "load_checkpoint",
                     "save_checkpoint", "wrap"), "memlens.models"),
    "Site": "memlens.protocol",
    "Result": "memlens.results", "load_result": "memlens.results",
    **dict.fromkeys(("Bootstrap", "Checkpointing", "RunOptions"), "memlens.runtime.options"),
    **dict.fromkeys(("TrainConfig", "evaluate", "train"), "memlens.training"),
    "state_gradients": "memlens.analyses.gradients",
    "from_hf": "memlens.models.hf",  # needs the optional transformers package only when called
    "context_ablation": "memlens.analyses.ablation",
    "memory_signature": "memlens.analyses.signatures",
}

if TYPE_CHECKING:  # what static tools see
    from memlens.analyses.ablation import context_ablation
    from memlens.analyses.gradients import state_gradients
    from memlens.analyses.signatures import memory_signature
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
    from memlens.models.hf import from_hf
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
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # the next access is a plain attribute
        return value
    raise AttributeError(f"module 'memlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
