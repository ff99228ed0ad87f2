"""The model protocol: the one interface every analysis uses.

A :class:`RecurrentEncoder` is an input side plus a stack of recurrent layers:

* **inputs**: token ids through an embedding table (``embedding``, with an optional
  ``vocab``), or continuous vectors T x I (acoustic frames, features; ``embedding=None``).
  The analysed input vector x_t is the embedding row of token t, or the frame itself: state
  gradients are taken with respect to it.
* **layers**: each a :class:`~memlens.models.layers.RecurrentLayer`: ``init_state``,
  ``step(x_t, state)`` with state any nested structure of tensors, a fast sequence path
  (``forward`` / ``sequence_states``), and named **readouts** (name, size), any function of
  the state. The readout named ``output_readout`` ("hidden") feeds the next layer.

Adapters: memlens's own language models (``model.encoder``), :func:`wrap` for a user's
``nn.Embedding`` + ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (or ``None`` for frame inputs) and for
custom layers (:class:`~memlens.models.layers.StepLayer`). Sequences are laid out time-first
(T x B), like PyTorch's ``word_language_model``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from memlens.core.errors import MemlensError
from memlens.data.vocab import Vocab
from memlens.models.layers import RecurrentLayer, State, TorchLayer
from memlens.protocol import Site


class RecurrentEncoder(nn.Module):
    """Input side (embedding table V x E, or continuous vectors of size I) followed by L
    recurrent layers.

    Attributes for analyses: ``embedding`` (the input table, or None), ``input_kind``
    ("tokens" or "vectors"), ``input_size``, ``vocab`` (a :class:`~memlens.data.Vocab` or
    None), ``layers``, ``step(x, state)`` for one time step, ``states(inputs)`` for named
    readouts per layer (which readout an analysis reads by default is the analysis'
    choice: ``Site.resolve(encoder, default=role)``). ``tokenizer``: the model's own
    tokenizer (Hugging Face models; corpora are read through it), else None; ``model_type``:
    where the model came from ("mamba", "rwkv", ... for Hugging Face models), else None.
    """

    tokenizer: object | None = None
    model_type: str | None = None

    def __init__(self, embedding: nn.Embedding | None, layers: Sequence[RecurrentLayer],
                 dropout: float = 0.0, vocab: Vocab | None = None,
                 head: nn.Module | None = None):
        super().__init__()
        if not layers:
            raise MemlensError("a recurrent encoder needs at least one layer")
        if embedding is not None and not isinstance(embedding, nn.Embedding):
            raise MemlensError(f"the input side must be an nn.Embedding or None (continuous "
                               f"inputs), got {type(embedding).__name__}")
        self.embedding = embedding
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        size = embedding.embedding_dim if embedding is not None else layers[0].input_size
        for i, layer in enumerate(layers):
            if layer.input_size != size:
                raise MemlensError(f"layer {i} expects input size {layer.input_size}, "
                                   f"but receives {size}")
            size = layer.hidden_size
        self.vocab = None
        if vocab is not None:
            self.set_vocab(vocab)
        self.set_head(head)
        self.tokenizer = None
        self.model_type = None

    def set_tokenizer(self, tokenizer: object | None) -> None:
        """Attach the model's own tokenizer (None: read corpora as symbols of ``vocab``)."""
        self.tokenizer = tokenizer

    def set_head(self, head: nn.Module | None) -> None:
        """Attach a next-token head: a module mapping the top layer's output (B x H) to logits
        over the vocabulary (B x V), used by context ablation only.

        The head is kept *out* of the encoder's modules (``parameters()``, ``state_dict()``,
        ``.to()``, checkpoints): the analyses of the state never see it.
        """
        if head is not None and not isinstance(head, nn.Module):
            raise MemlensError(f"head= must be an nn.Module mapping B x H outputs to B x V "
                               f"logits, got {type(head).__name__}")
        object.__setattr__(self, "_next_token_head", head)  # unregistered on purpose

    @property
    def head(self) -> nn.Module | None:
        """The next-token head given to :func:`wrap` (``head=``), or None."""
        return self.__dict__.get("_next_token_head")

    def set_vocab(self, vocab: Vocab | Sequence[str]) -> None:
        """Attach a vocabulary (a Vocab or symbols in id order) to a token-input encoder."""
        if self.embedding is None:
            raise MemlensError("a vocabulary needs token inputs: this model reads continuous "
                               "vectors")
        if not isinstance(vocab, Vocab):
            vocab = Vocab.from_symbols(vocab)  # checks: a sequence of strings
        if len(vocab) != self.vocab_size:
            raise MemlensError(f"the vocabulary has {len(vocab)} symbols but the embedding "
                               f"table has {self.vocab_size} rows")
        self.vocab = vocab

    # -- sizes ------------------------------------------------------------------------------
    @property
    def input_kind(self) -> str:
        """"tokens" (ids through the embedding table) or "vectors" (T x I continuous input)."""
        return "tokens" if self.embedding is not None else "vectors"

    @property
    def input_size(self) -> int:
        """E (embedding size) or I (vector size): the size of the analysed input x_t."""
        return self.layers[0].input_size

    @property
    def emb_size(self) -> int:
        return self.input_size

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_sizes(self) -> list[int]:
        return [layer.hidden_size for layer in self.layers]

    @property
    def vocab_size(self) -> int:
        if self.embedding is None:
            raise MemlensError("this model reads continuous vectors: it has no vocabulary")
        return self.embedding.num_embeddings

    def resolve_layer(self, layer: int) -> int:
        """Turn a possibly negative layer index into 0..L-1, or raise a clear error."""
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise MemlensError(f"layer must be an integer, got {layer!r}")
        if not -self.num_layers <= layer < self.num_layers:
            raise MemlensError(f"layer {layer} does not exist: the model has {self.num_layers} "
                               f"layer(s) (valid: 0..{self.num_layers - 1} or -1)")
        return int(layer) % self.num_layers

    def check_readout(self, layer: int, readout: str | None) -> tuple[int, str]:
        """Validate a (layer, readout) pair (readout None: the layer's output readout);
        return (layer index >= 0, readout name)."""
        site = Site(layer, readout).resolve(self)
        return site.layer, site.readout

    def readout_size(self, layer: int, readout: str) -> int:
        layer, readout = self.check_readout(layer, readout)
        return self.layers[layer].readout_size(readout)

    def describe(self) -> dict:
        """A JSON-able summary: input kind and size, layers with their readouts and sizes."""
        return {"input": self.input_kind, "input_size": self.input_size,
                "vocab_size": self.vocab_size if self.embedding is not None else None,
                "layers": [{"kind": lay.kind, "readouts": {n: lay.readout_size(n)
                                                           for n in lay.readouts}}
                           for lay in self.layers]}

    # -- inputs -----------------------------------------------------------------------------
    def embed(self, inputs: Tensor) -> Tensor:
        """Input vectors: ids (T x B) -> embeddings (T x B x E); vectors (T x B x I) as is."""
        if self.embedding is None:
            return inputs
        return self.embedding(inputs)

    def input_table(self) -> Tensor | None:
        """The embedding table (V x E) of a token model, None for vector inputs."""
        return None if self.embedding is None else self.embedding.weight

    # -- state ------------------------------------------------------------------------------
    def init_state(self, batch: int = 1, device=None, dtype=None) -> list[State]:
        return [layer.init_state(batch, device, dtype) for layer in self.layers]

    @staticmethod
    def detach_state(state: list[State]) -> list[State]:
        return [pytree.tree_map(lambda t: t.detach(), s) for s in state]

    def readout(self, state: list[State], layer: int, name: str) -> Tensor:
        layer, name = self.check_readout(layer, name)
        return self.layers[layer].readout(state[layer], name)

    # -- computation ------------------------------------------------------------------------
    def step(self, x: Tensor, state: list[State]) -> list[State]:
        """One time step through every layer: x (B x I) input vector -> new states."""
        new = []
        for layer, s in zip(self.layers, state):
            s = layer.step(x, s)
            new.append(s)
            x = layer.output(s)
        return new

    def forward(self, inputs: Tensor, state: list[State] | None = None
                ) -> tuple[Tensor, list[State]]:
        """Fast path: inputs (T x B ids or T x B x I) -> top-layer outputs (T x B x H), final
        states."""
        if state is None:
            state = self.init_state(inputs.shape[1], inputs.device)
        x = self.dropout(self.embed(inputs))
        final = []
        for i, (layer, s) in enumerate(zip(self.layers, state)):
            x, s = layer(x, s)
            final.append(s)
            if i + 1 < self.num_layers:
                x = self.dropout(x)
        return x, final

    @torch.no_grad()
    def states(self, inputs: Tensor, state: list[State] | None = None,
               layers: Sequence[int] | None = None,
               readouts: Sequence[tuple[int, str]] | None = None
               ) -> tuple[dict[tuple[int, str], Tensor], list[State]]:
        """Readouts at every step (eval mode, no dropout), through the fast sequence paths.

        ``layers``: every readout of these layers (default all); ``readouts``: only these
        (layer, readout) pairs (overrides ``layers``). Returns ({(layer, readout): T x B x D},
        final states).
        """
        if state is None:
            state = self.init_state(inputs.shape[1], inputs.device)
        if readouts is not None:
            needed = {(self.resolve_layer(i), n) for i, n in readouts}
        else:
            wanted = range(self.num_layers) if layers is None else {
                self.resolve_layer(i) for i in layers}
            needed = {(i, n) for i in wanted for n in self.layers[i].readouts}
        last = max(i for i, _ in needed)
        x = self.embed(inputs)
        out, final = {}, []
        for i, (layer, s) in enumerate(zip(self.layers, state)):
            if i > last:
                final.append(s)
                continue
            names = [n for j, n in needed if j == i]
            if names:
                seqs, s = layer.sequence_states(x, s, names + [layer.output_readout])
                out.update({(i, n): seqs[n] for n in names})
                x = seqs[layer.output_readout]
            else:
                x, s = layer(x, s)
            final.append(s)
        return out, final


def as_encoder(model: nn.Module) -> RecurrentEncoder:
    """The :class:`RecurrentEncoder` inside a memlens model, or the model itself.

    A memlens language model's vocabulary is attached to its encoder on the way.
    """
    if isinstance(model, RecurrentEncoder):
        return model
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, RecurrentEncoder):
        vocab = getattr(model, "vocab", None)
        if vocab is not None and encoder.vocab is not vocab:
            encoder.set_vocab(vocab)
        return encoder
    raise MemlensError(f"{type(model).__name__} is not a memlens model: use memlens.wrap("
                       "embedding, rnn) to analyse your own nn.Embedding + nn.LSTM/GRU/RNN")


def wrap(embedding: nn.Embedding | None, rnn: nn.RNNBase | Sequence[RecurrentLayer],
         vocab: Vocab | Sequence[str] | None = None, head: nn.Module | None = None
         ) -> RecurrentEncoder:
    """Give a user's model the memlens interface.

    ``embedding``: an ``nn.Embedding`` (token inputs) or None (continuous inputs T x I, with
    I = ``rnn.input_size``). ``rnn``: an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (any layer count,
    batch_first or not; hand-derived tangents) or a list of
    :class:`~memlens.models.layers.RecurrentLayer` (e.g. :class:`StepLayer` for a custom
    cell; generic tangents). ``vocab``: symbols in id order (or a Vocab), so that results show
    words and frequency/word-list/lexicon classes work. Parameters are shared, not copied: the
    wrapped encoder always sees the user's current weights. Bidirectional modules, LSTMs with
    ``proj_size`` and modules without bias are refused. ``head``: optional next-token head
    (e.g. the user's decoder ``nn.Linear(H, V)``), mapping the top layer's output B x H to
    logits B x V; needed by :func:`memlens.context_ablation` only and kept out of everything
    else (see :meth:`RecurrentEncoder.set_head`).
    """
    if embedding is not None and not isinstance(embedding, nn.Embedding):
        raise MemlensError(f"wrap() needs an nn.Embedding or None (continuous inputs), got "
                           f"{type(embedding).__name__}")
    if isinstance(rnn, (list, tuple, nn.ModuleList)):
        if not all(isinstance(layer, RecurrentLayer) for layer in rnn):
            raise MemlensError("wrap() needs RecurrentLayer objects in a layer list (use "
                               "memlens.StepLayer to adapt a step function)")
        return RecurrentEncoder(embedding, list(rnn), vocab=vocab, head=head).eval()
    if not isinstance(rnn, (nn.LSTM, nn.GRU, nn.RNN)):
        raise MemlensError(f"wrap() needs an nn.LSTM, nn.GRU or nn.RNN (or a list of "
                           f"RecurrentLayer), got {type(rnn).__name__}")
    if rnn.bidirectional:
        raise MemlensError("wrap() cannot analyse a bidirectional module: its state at t "
                           "depends on future input")
    if getattr(rnn, "proj_size", 0):
        raise MemlensError("wrap() does not support nn.LSTM with proj_size")
    if not rnn.bias:
        raise MemlensError("wrap() does not support recurrent modules without bias")
    if embedding is not None and embedding.embedding_dim != rnn.input_size:
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
    return RecurrentEncoder(embedding, layers, vocab=vocab, head=head).eval()
