"""Pretrained word embeddings in word2vec text format (optional header ``count dim``)."""

from __future__ import annotations

import os

import torch

from memlens.core.errors import MemlensError
from memlens.data.files import read_text
from memlens.data.vocab import Vocab


def load_word2vec(path: str | os.PathLike, vocab: Vocab, dim: int,
                  seed: int = 0) -> tuple[torch.Tensor, int]:
    """Return (V x dim table, number of vocabulary words found in the file).

    Words missing from the file keep a small random vector (uniform +-0.1, seeded).
    """
    lines = read_text(path, "embedding").splitlines()
    gen = torch.Generator().manual_seed(seed)
    table = (torch.rand(len(vocab), dim, generator=gen) - 0.5) * 0.2
    start = 1 if len(lines[0].split()) == 2 else 0
    found = 0
    for number, line in enumerate(lines[start:], start=start + 1):
        parts = line.rstrip().split(" ")
        if len(parts) < 2:
            continue
        if len(parts) - 1 != dim:
            raise MemlensError(f"{path}:{number}: embedding has {len(parts) - 1} values, "
                               f"expected {dim} (--emb)")
        idx = vocab.stoi.get(parts[0])
        if idx is None:
            continue
        try:
            table[idx] = torch.tensor([float(v) for v in parts[1:]])
        except ValueError:
            raise MemlensError(f"{path}:{number}: non-numeric embedding value") from None
        found += 1
    if found == 0:
        raise MemlensError(f"no vocabulary word has an embedding in {path}")
    return table, found
