"""Training a language model on the planted corpus (``memlens.training.lm``) with the planted
embeddings fixed (written to a text file and passed as ``pretrained``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from memlens.data import Corpus
from memlens.data.vocab import EOS, UNK
from memlens.models.lm import LanguageModel
from memlens.studies.planted.config import PlantedConfig
from memlens.studies.planted.corpus import planted_embeddings
from memlens.training import TrainConfig, train


def train_model(cfg: PlantedConfig, arch: str, train_c: Corpus, valid_c: Corpus, workdir: Path,
                out: Path, log: Callable[[str], None]) -> LanguageModel:
    """Train one ``arch`` model on ``train_c`` (validated on ``valid_c``), checkpoint ``out``;
    the embedding table (:func:`planted_embeddings` over the training vocabulary) is written
    under ``workdir``. Adam, lr 0.01, batch 20, bptt 35, no dropout, on the CPU."""
    words = [UNK, EOS] + sorted(set(train_c.tokens))
    table = planted_embeddings(words, cfg.emb, cfg.n_nouns, cfg.irrelevant_scale, cfg.seed)
    emb_file = workdir / "planted_embeddings.txt"
    emb_file.write_text("".join(w + " " + " ".join(f"{x:.6f}" for x in row) + "\n"
                                for w, row in zip(words, table)))
    tc = TrainConfig(train="", out=str(out), arch=arch, emb=cfg.emb, hidden=cfg.hidden,
                     epochs=cfg.epochs, optimizer="adam", lr=0.01, dropout=0.0,
                     batch=20, bptt=35, pretrained=str(emb_file), seed=cfg.seed,
                     device="cpu", vocab_size=None, progress=cfg.progress)
    return train(tc, train_corpus=train_c, valid_corpus=valid_c, log=log)


__all__ = ["train_model"]
