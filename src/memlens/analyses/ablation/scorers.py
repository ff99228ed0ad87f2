"""Next-token scorers: what context ablation needs of a model, and the adapters that give it.

Context ablation asks one question of a model, many times: the log-probability of a target
token given a context,

    log P(x_t | c_1 .. c_W)        (nats; c_W is the token just before the target),

for a batch of B contexts of one width W (a B x W id matrix read from a zero state) and B
targets. :class:`NextTokenScorer` is that interface (``vocab_size`` and
``target_logprobs(contexts, targets)``); any object with both (e.g. an adapter of a Hugging Face
causal LM) can be analysed. Adapters here:

* :class:`RecurrentLMScorer`: a memlens :class:`~memlens.models.lm.LanguageModel` (its
  ``decoder``) or an encoder made by ``memlens.wrap(..., head=module)``: the contexts go as B
  columns through the fast sequence path, the head reads the top layer's last output;
* :class:`NGramScorer`: an interpolated Kneser-Ney n-gram LM (the oracle: it reads only the
  last n-1 tokens).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from memlens.core.errors import MemlensError
from memlens.models.encoder import RecurrentEncoder, as_encoder


@runtime_checkable
class NextTokenScorer(Protocol):
    """What :func:`memlens.context_ablation` needs of a model (see module docstring)."""

    vocab_size: int

    def target_logprobs(self, contexts: Tensor, targets: Tensor) -> Tensor:
        """contexts: B x W int64 ids (W >= 1, read from a zero state), targets: B ids ->
        B log-probabilities (nats, float64 on the CPU)."""
        ...


class RecurrentLMScorer:
    """A recurrent encoder plus a next-token head (B x H top-layer output -> B x V logits)."""

    def __init__(self, encoder: RecurrentEncoder, head: nn.Module):
        if encoder.input_kind != "tokens":
            raise MemlensError("context ablation needs a token model (ids through an embedding "
                               "table); this model reads continuous vectors")
        self.encoder, self.head = encoder.eval(), head.eval()
        self.vocab_size = encoder.vocab_size

    @property
    def device(self) -> torch.device:
        p = next(self.encoder.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> RecurrentLMScorer:
        self.encoder.to(device)
        self.head.to(device)
        return self

    @torch.no_grad()
    def target_logprobs(self, contexts: Tensor, targets: Tensor) -> Tensor:
        dev = self.device
        out, _ = self.encoder(contexts.to(dev).t())          # W x B x H, zero initial state
        logits = self.head(out[-1])                           # B x V
        if logits.dim() != 2 or logits.shape != (contexts.shape[0], self.vocab_size):
            raise MemlensError(f"the next-token head returned shape {tuple(logits.shape)}; "
                               f"expected B x V = {contexts.shape[0]} x {self.vocab_size}")
        logp = torch.log_softmax(logits.double(), dim=-1)
        return logp.gather(1, targets.to(dev).view(-1, 1)).view(-1).cpu()

    def describe(self) -> dict:
        return {"scorer": "recurrent LM", "head": type(self.head).__name__}


class NGramScorer:
    """A :class:`~memlens.models.ngram.KneserNeyLM` as a scorer over its own ids
    (``lm.encode(tokens)``): P(x_t | last n-1 context tokens)."""

    def __init__(self, lm):
        self.lm = lm
        self.vocab_size = int(lm.vocab_size)

    def target_logprobs(self, contexts: Tensor, targets: Tensor) -> Tensor:
        m = self.lm.order - 1
        rows = contexts.tolist()
        return torch.tensor([math.log(self.lm.prob(tuple(c[len(c) - m:]) if m else (), int(w)))
                             for c, w in zip(rows, targets.tolist())], dtype=torch.float64)

    def describe(self) -> dict:
        return {"scorer": "Kneser-Ney n-gram", "order": self.lm.order}


def as_scorer(model) -> NextTokenScorer:
    """The :class:`NextTokenScorer` of ``model``, or a clear error for a model without a head.

    Accepted: an object that already is a scorer, a Kneser-Ney n-gram LM, a memlens
    :class:`~memlens.models.lm.LanguageModel` (its ``decoder``), and an encoder from
    ``memlens.wrap(..., head=module)``.
    """
    from memlens.models.lm import LanguageModel
    from memlens.models.ngram import KneserNeyLM

    if isinstance(model, (RecurrentLMScorer, NGramScorer)):
        return model
    if isinstance(model, KneserNeyLM):
        if not hasattr(model, "stats"):
            raise MemlensError("the n-gram model is not fitted: call fit(tokens) first")
        return NGramScorer(model)
    if isinstance(model, LanguageModel):
        return RecurrentLMScorer(as_encoder(model), model.decoder)
    if not isinstance(model, nn.Module) and isinstance(model, NextTokenScorer):
        return model
    encoder = as_encoder(model)
    head = encoder.head or getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise MemlensError("context ablation needs a next-token head, and this model has "
                           "none: build it with memlens.wrap(embedding, rnn, vocab=..., "
                           "head=decoder) (decoder: B x H top-layer output -> B x V logits), "
                           "or use a memlens language model")
    return RecurrentLMScorer(encoder, head)
