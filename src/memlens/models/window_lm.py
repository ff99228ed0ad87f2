"""Feed-forward fixed-window neural LM (Bengio et al. 2003 style): a non-recurrent baseline.

    e_t = [E x_t ; E x_{t-1} ; ... ; E x_{t-n+2}]          ((n-1) * emb)
    s_t = tanh(W e_t + b)                                   (hidden; the model's *state*)
    P(x_{t+1} | x_{t-n+2..t}) = softmax(U s_t + c)

Positions before the stream start use a padding symbol. Trained with Adam on the mean
cross-entropy for a few epochs. Like the n-gram window, its state can hold at most the last
n-1 symbols.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memlens.core.errors import MemlensError


class WindowLM(nn.Module):
    """Fixed-window LM over ids 0..V-1 (see module docstring)."""

    def __init__(self, vocab_size: int, order: int = 5, emb: int = 16, hidden: int = 256):
        super().__init__()
        if order < 2:
            raise MemlensError("a fixed-window LM needs order >= 2")
        self.vocab_size, self.order, self.hidden_size = vocab_size, order, hidden
        self.embedding = nn.Embedding(vocab_size + 1, emb)  # last id = padding
        self.hidden = nn.Linear((order - 1) * emb, hidden)
        self.out = nn.Linear(hidden, vocab_size)

    def windows(self, ids: torch.Tensor) -> torch.Tensor:
        """N x (n-1) contexts: column j holds x_{t-j} (padding before the start)."""
        pad = torch.full((self.order - 2,), self.vocab_size, dtype=torch.long)
        padded = torch.cat([pad, ids])
        cols = [padded[self.order - 2 - j: self.order - 2 - j + len(ids)]
                for j in range(self.order - 1)]
        return torch.stack(cols, dim=1)

    def state(self, ctx: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.hidden(self.embedding(ctx).flatten(1)))

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        return self.out(self.state(ctx))

    def fit(self, ids: np.ndarray, epochs: int = 2, batch: int = 256, lr: float = 2e-3,
            seed: int = 0, log=None) -> WindowLM:
        ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        if len(ids_t) < 2:
            raise MemlensError("training text too short for the window LM")
        ctx, tgt = self.windows(ids_t)[:-1], ids_t[1:]
        torch.manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        self.train()
        for epoch in range(epochs):
            perm = torch.randperm(len(tgt))
            total = 0.0
            for b in range(0, len(tgt), batch):
                sel = perm[b:b + batch]
                loss = F.cross_entropy(self(ctx[sel]), tgt[sel])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(sel)
            if log is not None:
                log(f"window LM epoch {epoch + 1}: train bits/symbol "
                    f"{total / len(tgt) / math.log(2):.3f}")
        return self.eval()

    @torch.no_grad()
    def bits(self, ids: np.ndarray) -> float:
        """Held-out cross-entropy in bits per symbol."""
        ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        ctx, tgt = self.windows(ids_t)[:-1], ids_t[1:]
        total = 0.0
        for b in range(0, len(tgt), 8192):
            total += F.cross_entropy(self(ctx[b:b + 8192]), tgt[b:b + 8192],
                                     reduction="sum").item()
        return total / max(len(tgt), 1) / math.log(2)

    @torch.no_grad()
    def states(self, ids: np.ndarray) -> np.ndarray:
        """Hidden state after reading each token: N x hidden float32."""
        ctx = self.windows(torch.as_tensor(np.asarray(ids), dtype=torch.long))
        return torch.cat([self.state(ctx[b:b + 8192]) for b in range(0, len(ctx), 8192)]
                         ).numpy()
