"""The planted corpus and its embedding geometry.

A stream of sentences ``noun filler x (distance-1) verb`` (:func:`memlens.make_synthetic`):
the verb agrees in number with the noun ``distance`` steps earlier. The fixed input embeddings
(:func:`planted_embeddings`) put the number feature on one low-variance coordinate and give an
irrelevant coordinate ``irrelevant_scale`` times the spread of the others; the planted
direction (:func:`planted_direction`) is the difference of the class-mean embeddings of plural
and singular nouns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memlens.core.errors import MemlensError
from memlens.data import Corpus, make_synthetic
from memlens.data.synthetic import noun_words
from memlens.models.lm import LanguageModel
from memlens.studies.planted.config import PlantedConfig

IRRELEVANT_COORD = 0
NUMBER_COORD = 1
NOUN_COORD = 2


def planted_embeddings(words: list[str], emb: int, n_nouns: int, scale: float, seed: int
                       ) -> np.ndarray:
    """Fixed embedding table (one row per word in ``words``) with the planted geometry.

    Coordinate 0: irrelevant, spread ``scale`` (random per word). Coordinate 1: number
    (+1 plural nouns, -1 singular nouns, 0 otherwise, plus a little noise). Coordinate 2:
    "is a noun" (+1 for every noun; the same for both numbers, so it is not part of the
    planted direction). Others: N(0, 1). The singular and plural forms of a noun (``cat3``,
    ``cats3``) differ only in the number coordinate.
    """
    rng = np.random.default_rng(seed)
    nouns = noun_words(n_nouns)
    table = rng.normal(0.0, 1.0, (len(words), emb))
    table[:, IRRELEVANT_COORD] = rng.normal(0.0, scale, len(words))
    table[:, NUMBER_COORD] = rng.normal(0.0, 0.1, len(words))
    if emb > NOUN_COORD:
        table[:, NOUN_COORD] = rng.normal(0.0, 0.1, len(words))
    # cat_i and cats_i are one lemma in two numbers: they share every other coordinate
    row = {w: i for i, w in enumerate(words)}
    for sg, pl in zip(nouns["sg"], nouns["pl"]):
        if sg in row and pl in row:
            keep = [c for c in range(emb) if c != NUMBER_COORD]
            table[row[pl], keep] = table[row[sg], keep]
    for i, w in enumerate(words):
        if emb > NOUN_COORD and (w in nouns["pl"] or w in nouns["sg"]):
            table[i, NOUN_COORD] += 1.0
        if w in nouns["pl"]:
            table[i, NUMBER_COORD] += 1.0
        elif w in nouns["sg"]:
            table[i, NUMBER_COORD] -= 1.0
    return table


def planted_corpus(cfg: PlantedConfig, n: int, seed: int) -> Corpus:
    """``n`` synthetic sentences; the "upos" tag stream is the number of each noun (what the
    signatures decode)."""
    c = make_synthetic(n, cfg.distance, cfg.n_nouns, cfg.n_fillers, seed=seed,
                               eos=False)
    c.tags["upos"] = list(c.tags["number"])
    return c


def planted_direction(model: LanguageModel, n_nouns: int) -> np.ndarray:
    """Mean embedding of plural nouns minus mean embedding of singular nouns (raw space)."""
    table = model.encoder.embedding.weight.detach().double().cpu().numpy()
    nouns = noun_words(n_nouns)
    idx = {k: [model.vocab.stoi[w] for w in nouns[k] if w in model.vocab.stoi] for k in nouns}
    if not idx["pl"] or not idx["sg"]:
        raise MemlensError("the training corpus lacks singular or plural nouns")
    return table[idx["pl"]].mean(0) - table[idx["sg"]].mean(0)


def corpus_info(corpus: Corpus, n_sentences: int, cfg: PlantedConfig) -> dict[str, Any]:
    """The ``corpus_meta`` of a result measured on ``corpus`` (``n_sentences`` sentences)."""
    return {"path": corpus.path, "tokens": len(corpus), "sentences": n_sentences,
            "planted_distance": cfg.distance, "sample": " ".join(corpus.tokens[:3 * (
                cfg.distance + 1)])}


__all__ = ["IRRELEVANT_COORD", "NOUN_COORD", "NUMBER_COORD", "corpus_info", "planted_corpus",
           "planted_direction", "planted_embeddings"]
