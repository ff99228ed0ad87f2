"""Training: recurrent language models (:mod:`~memlens.training.lm`, ``memlens train``) and
grapheme CTC speech recognisers (:mod:`~memlens.training.asr`, ``memlens train-asr``).

Both save their full training state after every epoch to :func:`progress_path` (OUT), a
:class:`~memlens.runtime.progress.RunCheckpoint`, and continue an interrupted run with
``resume=True`` (:func:`load_progress`).
"""

from memlens.training.lm import (
    TrainConfig,
    corpus_ids,
    evaluate,
    load_progress,
    perplexity_report,
    progress_path,
    train,
    unigram_perplexity,
)

__all__ = ["ASRConfig", "TrainConfig", "corpus_ids", "evaluate", "load_progress",
           "perplexity_report", "progress_path", "train", "train_asr", "unigram_perplexity"]


def __getattr__(name: str):
    # The speech recogniser's training is imported on first use (it pulls in the speech data).
    if name in ("ASRConfig", "train_asr"):
        from memlens.training import asr

        return getattr(asr, name)
    raise AttributeError(f"module 'memlens.training' has no attribute {name!r}")
