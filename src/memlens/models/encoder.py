"""The interface every analysis uses: an input embedding table plus a stack of recurrent layers.

A :class:`RecurrentEncoder` is built by memlens' own language models and by :func:`wrap` for a
user's ``nn.Embedding`` + ``nn.LSTM``/``nn.GRU``/``nn.RNN``. Tokens are laid out time-first
(T x B), like PyTorch's ``word_language_model``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from memlens.errors import MemlensError
from memlens.models.layers import RecurrentLayer, State, TorchLayer


class RecurrentEncoder(nn.Module):
    """Embedding (V x E) followed by L recurrent layers.

    Attributes for analyses: ``embedding`` (the input table), ``layers`` (each a
    :class:`~memlens.models.layers.RecurrentLayer` with ``step`` and ``dense_weights``),
    ``step(x, state)`` for one time step, ``states(tokens)`` for named readouts per layer.
    """

    def __init__(self, embedding: nn.Embedding, layers: Sequence[RecurrentLayer],
                 dropout: float = 0.0):
        super().__init__()
        if not layers:
            raise MemlensError("a recurrent encoder needs at least one layer")
        self.embedding = embedding
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        size = embedding.embedding_dim
        for i, layer in enumerate(layers):
            if layer.input_size != size:
                raise MemlensError(f"layer {i} expects input size {layer.input_size}, "
                                   f"but receives {size}")
            size = layer.hidden_size

    # -- sizes ------------------------------------------------------------------------------
    @property
    def emb_size(self) -> int:
        return self.embedding.embedding_dim

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_sizes(self) -> list[int]:
        return [layer.hidden_size for layer in self.layers]

    @property
    def vocab_size(self) -> int:
        return self.embedding.num_embeddings

    def resolve_layer(self, layer: int) -> int:
        """Turn a possibly negative layer index into 0..L-1, or raise a clear error."""
        if not -self.num_layers <= layer < self.num_layers:
            raise MemlensError(f"layer {layer} does not exist: the model has {self.num_layers} "
                               f"layer(s) (valid: 0..{self.num_layers - 1} or -1)")
        return layer % self.num_layers

    def check_readout(self, layer: int, readout: str) -> tuple[int, str]:
        """Validate a (layer, readout) pair; return the resolved layer index."""
        layer = self.resolve_layer(layer)
        names = self.layers[layer].readouts
        if readout not in names:
            raise MemlensError(f"unknown readout {readout!r} for layer {layer} "
                               f"({self.layers[layer].kind}): choose from {', '.join(names)}")
        return layer, readout

    # -- state ------------------------------------------------------------------------------
    def init_state(self, batch: int = 1, device=None, dtype=None) -> list[State]:
        return [layer.init_state(batch, device, dtype) for layer in self.layers]

    @staticmethod
    def detach_state(state: list[State]) -> list[State]:
        return [tuple(t.detach() for t in s) for s in state]

    def readout(self, state: list[State], layer: int, name: str) -> Tensor:
        layer, name = self.check_readout(layer, name)
        return self.layers[layer].readout(state[layer], name)

    # -- computation ------------------------------------------------------------------------
    def step(self, x: Tensor, state: list[State]) -> list[State]:
        """One time step through every layer: x (B x E) embedded input -> new states."""
        new = []
        for layer, s in zip(self.layers, state):
            s = layer.step(x, s)
            new.append(s)
            x = s[0]
        return new

    def forward(self, tokens: Tensor, state: list[State] | None = None
                ) -> tuple[Tensor, list[State]]:
        """Fast path: tokens (T x B) -> top-layer hidden states (T x B x H), final states."""
        if state is None:
            state = self.init_state(tokens.shape[1], tokens.device)
        x = self.dropout(self.embedding(tokens))
        final = []
        for i, (layer, s) in enumerate(zip(self.layers, state)):
            x, s = layer(x, s)
            final.append(s)
            if i + 1 < self.num_layers:
                x = self.dropout(x)
        return x, final

    @torch.no_grad()
    def states(self, tokens: Tensor, state: list[State] | None = None,
               layers: Sequence[int] | None = None) -> tuple[dict[tuple[int, str], Tensor],
                                                            list[State]]:
        """Every readout of the requested layers at every step (eval mode, no dropout).

        Returns ({(layer, readout): T x B x H}, final states).
        """
        if state is None:
            state = self.init_state(tokens.shape[1], tokens.device)
        wanted = set(range(self.num_layers)) if layers is None else {
            self.resolve_layer(i) for i in layers}
        x = self.embedding(tokens)
        out, final = {}, []
        for i, (layer, s) in enumerate(zip(self.layers, state)):
            if i in wanted:
                seqs, s = layer.sequence_states(x, s)
                for name, seq in seqs.items():
                    out[(i, name)] = seq
                x = seqs["hidden"]
            else:
                x, s = layer(x, s)
            final.append(s)
        return out, final


def as_encoder(model: nn.Module) -> RecurrentEncoder:
    """The :class:`RecurrentEncoder` inside a memlens model, or the model itself."""
    if isinstance(model, RecurrentEncoder):
        return model
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, RecurrentEncoder):
        return encoder
    raise MemlensError(f"{type(model).__name__} is not a memlens model: use memlens.wrap("
                       "embedding, rnn) to analyse your own nn.Embedding + nn.LSTM/GRU/RNN")


def wrap(embedding: nn.Embedding, rnn: nn.RNNBase) -> RecurrentEncoder:
    """Give a user's ``nn.Embedding`` + ``nn.LSTM``/``nn.GRU``/``nn.RNN`` the memlens interface.

    Works for any layer count, batch_first or not. Parameters are shared, not copied: the
    wrapped encoder always sees the user's current weights. Bidirectional modules, LSTMs with
    ``proj_size`` and modules without bias are refused.
    """
    if not isinstance(embedding, nn.Embedding):
        raise MemlensError(f"wrap() needs an nn.Embedding, got {type(embedding).__name__}")
    if not isinstance(rnn, (nn.LSTM, nn.GRU, nn.RNN)):
        raise MemlensError(f"wrap() needs an nn.LSTM, nn.GRU or nn.RNN, got {type(rnn).__name__}")
    if rnn.bidirectional:
        raise MemlensError("wrap() cannot analyse a bidirectional module: its state at t "
                           "depends on future input")
    if getattr(rnn, "proj_size", 0):
        raise MemlensError("wrap() does not support nn.LSTM with proj_size")
    if not rnn.bias:
        raise MemlensError("wrap() does not support recurrent modules without bias")
    if embedding.embedding_dim != rnn.input_size:
        raise MemlensError(f"embedding size {embedding.embedding_dim} does not match the "
                           f"recurrent input size {rnn.input_size}")
    layers = []
    for k in range(rnn.num_layers):
        in_size = rnn.input_size if k == 0 else rnn.hidden_size
        if isinstance(rnn, nn.LSTM):
            single = nn.LSTM(in_size, rnn.hidden_size)
        elif isinstance(rnn, nn.GRU):
            single = nn.GRU(in_size, rnn.hidden_size)
        else:
            single = nn.RNN(in_size, rnn.hidden_size, nonlinearity=rnn.nonlinearity)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(single, f"{name}_l0", getattr(rnn, f"{name}_l{k}"))
        layers.append(TorchLayer(single))
    return RecurrentEncoder(embedding, layers).eval()
