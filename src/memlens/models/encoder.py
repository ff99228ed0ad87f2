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
    recurrent layers: the model protocol every analysis uses.

    Layer k maps its input x_t (E, I, or the previous layer's output H_{k-1}) and its state
    s_{t-1} to s_t; its output readout feeds layer k + 1. Sequences are time-first (T x B).
    ``step(x, state)`` runs one time step, ``states(inputs)`` the named readouts per layer
    (which readout an analysis reads by default is the analysis' choice:
    ``Site.resolve(encoder, default=role)``). Usually built by :func:`wrap`, or found inside a
    memlens model by :func:`as_encoder`.

    Parameters
    ----------
    embedding : torch.nn.Embedding or None
        The input table V x E (token inputs), or None for continuous vectors T x B x I, with
        I the first layer's ``input_size``.
    layers : sequence of RecurrentLayer
        The recurrent layers, at least one, each ``input_size`` matching the previous size.
    dropout : float, optional
        Dropout probability on the embeddings and between layers in training mode (default
        0.0); never applied by :meth:`states`.
    vocab : Vocab or None, optional
        The token vocabulary, one symbol per embedding row (default None).
    head : torch.nn.Module or None, optional
        A next-token head B x H -> B x V, kept outside the module tree (see
        :meth:`set_head`; default None).

    Attributes
    ----------
    embedding : torch.nn.Embedding or None
        The input table, or None.
    layers : torch.nn.ModuleList
        The recurrent layers.
    vocab : Vocab or None
        The vocabulary of a token model, when known.
    tokenizer : object or None
        The model's own tokenizer (Hugging Face models; corpora are read through it), else
        None.
    model_type : str or None
        Where the model came from ("mamba", "rwkv", ... for Hugging Face models), else None.

    Raises
    ------
    MemlensError
        When there is no layer, ``embedding`` is not an ``nn.Embedding`` or None, the layer
        sizes do not chain, or the vocabulary does not match the embedding table.
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
        # optional fast path: own_forward(ids T x B, layers) -> {layer: T x B x H} block
        # outputs of sequences from the initial state by the wrapped model's own forward
        # (Hugging Face families: memlens.models.hf.own_forward); None: step by step
        self.own_forward = None

    def set_tokenizer(self, tokenizer: object | None) -> None:
        """Attach the model's own tokenizer.

        Parameters
        ----------
        tokenizer : object or None
            A tokenizer with the Hugging Face interface; corpora are then read through it.
            None: read corpora as symbols of ``vocab``.
        """
        self.tokenizer = tokenizer

    def set_head(self, head: nn.Module | None) -> None:
        """Attach a next-token head: a module mapping the top layer's output (B x H) to logits
        over the vocabulary (B x V), used by context ablation only.

        The head is kept *out* of the encoder's modules (``parameters()``, ``state_dict()``,
        ``.to()``, checkpoints): the analyses of the state never see it.

        Parameters
        ----------
        head : torch.nn.Module or None
            The head (e.g. the decoder ``nn.Linear(H, V)``), or None to remove it.

        Raises
        ------
        MemlensError
            When ``head`` is not an ``nn.Module`` or None.
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
        """Attach a vocabulary to a token-input encoder.

        Parameters
        ----------
        vocab : Vocab or sequence of str
            A :class:`~memlens.data.Vocab`, or the symbols in id order (read with
            :meth:`Vocab.from_symbols <memlens.data.Vocab.from_symbols>`), one per embedding
            row.

        Raises
        ------
        MemlensError
            When the encoder reads continuous vectors, or the vocabulary's size differs from
            the embedding table's rows.
        """
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
        """The size of the analysed input x_t (same as :attr:`input_size`)."""
        return self.input_size

    @property
    def num_layers(self) -> int:
        """L, the number of recurrent layers."""
        return len(self.layers)

    @property
    def hidden_sizes(self) -> list[int]:
        """The output size H of each layer, bottom to top."""
        return [layer.hidden_size for layer in self.layers]

    @property
    def vocab_size(self) -> int:
        """V, the rows of the embedding table; a vector-input model raises MemlensError."""
        if self.embedding is None:
            raise MemlensError("this model reads continuous vectors: it has no vocabulary")
        return self.embedding.num_embeddings

    def resolve_layer(self, layer: int) -> int:
        """Turn a possibly negative layer index into 0..L-1.

        Parameters
        ----------
        layer : int
            A layer index, -L <= layer < L (negative: from the top; -1 is the top layer).

        Returns
        -------
        int
            The index in 0..L-1.

        Raises
        ------
        MemlensError
            When ``layer`` is not an integer or out of range.
        """
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise MemlensError(f"layer must be an integer, got {layer!r}")
        if not -self.num_layers <= layer < self.num_layers:
            raise MemlensError(f"layer {layer} does not exist: the model has {self.num_layers} "
                               f"layer(s) (valid: 0..{self.num_layers - 1} or -1)")
        return int(layer) % self.num_layers

    def check_readout(self, layer: int, readout: str | None) -> tuple[int, str]:
        """Validate a (layer, readout) pair.

        Parameters
        ----------
        layer : int
            A layer index, -L <= layer < L.
        readout : str or None
            A readout of that layer; None: its output readout ("hidden").

        Returns
        -------
        tuple of (int, str)
            The layer index in 0..L-1 and the readout name.

        Raises
        ------
        MemlensError
            When the layer does not exist or has no such readout.
        """
        site = Site(layer, readout).resolve(self)
        return site.layer, site.readout

    def readout_size(self, layer: int, readout: str) -> int:
        """The size D of a readout.

        Parameters
        ----------
        layer : int
            A layer index, -L <= layer < L.
        readout : str
            A readout of that layer (None: its output readout).

        Returns
        -------
        int
            D, the readout's number of units.

        Raises
        ------
        MemlensError
            When the layer does not exist or has no such readout.
        """
        layer, readout = self.check_readout(layer, readout)
        return self.layers[layer].readout_size(readout)

    def describe(self) -> dict:
        """A JSON-able summary of the architecture.

        Returns
        -------
        dict
            ``{"input": "tokens" or "vectors", "input_size": E or I, "vocab_size": V or
            None, "layers": [{"kind": ..., "readouts": {name: size}}, ...]}``.
        """
        return {"input": self.input_kind, "input_size": self.input_size,
                "vocab_size": self.vocab_size if self.embedding is not None else None,
                "layers": [{"kind": lay.kind, "readouts": {n: lay.readout_size(n)
                                                           for n in lay.readouts}}
                           for lay in self.layers]}

    # -- inputs -----------------------------------------------------------------------------
    def embed(self, inputs: Tensor) -> Tensor:
        """The analysed input vectors x_t of a batch of sequences.

        Parameters
        ----------
        inputs : torch.Tensor
            Token ids T x B (long), or vectors T x B x I.

        Returns
        -------
        torch.Tensor
            The embeddings T x B x E of the ids, or the vectors as given.
        """
        if self.embedding is None:
            return inputs
        return self.embedding(inputs)

    def input_table(self) -> Tensor | None:
        """The input table of a token model.

        Returns
        -------
        torch.Tensor or None
            The embedding weight V x E, None for vector inputs.
        """
        return None if self.embedding is None else self.embedding.weight

    # -- state ------------------------------------------------------------------------------
    def init_state(self, batch: int = 1, device=None, dtype=None) -> list[State]:
        """The initial (zero) state of every layer.

        Parameters
        ----------
        batch : int, optional
            B, the number of sequences (default 1).
        device : torch.device or str or None, optional
            Where to allocate the state (default: the layers' own default).
        dtype : torch.dtype or None, optional
            The state's dtype (default: the layers' own default).

        Returns
        -------
        list of State
            One state per layer, each a nested structure of B x ... tensors.
        """
        return [layer.init_state(batch, device, dtype) for layer in self.layers]

    @staticmethod
    def detach_state(state: list[State]) -> list[State]:
        """The states cut from the autograd graph (truncated backpropagation).

        Parameters
        ----------
        state : list of State
            One state per layer.

        Returns
        -------
        list of State
            The same structure with every tensor detached.
        """
        return [pytree.tree_map(lambda t: t.detach(), s) for s in state]

    def readout(self, state: list[State], layer: int, name: str) -> Tensor:
        """One readout of one layer's state.

        Parameters
        ----------
        state : list of State
            One state per layer (as from :meth:`step` or :meth:`init_state`).
        layer : int
            A layer index, -L <= layer < L.
        name : str
            A readout of that layer (None: its output readout).

        Returns
        -------
        torch.Tensor
            The readout's values, B x D.

        Raises
        ------
        MemlensError
            When the layer does not exist or has no such readout.
        """
        layer, name = self.check_readout(layer, name)
        return self.layers[layer].readout(state[layer], name)

    # -- computation ------------------------------------------------------------------------
    def step(self, x: Tensor, state: list[State]) -> list[State]:
        """One time step through every layer.

        Parameters
        ----------
        x : torch.Tensor
            The input vectors x_t, B x E (embedded) or B x I.
        state : list of State
            The states s_{t-1}, one per layer.

        Returns
        -------
        list of State
            The new states s_t; each layer's output readout is the next layer's input.
        """
        new = []
        for layer, s in zip(self.layers, state):
            s = layer.step(x, s)
            new.append(s)
            x = layer.output(s)
        return new

    def forward(self, inputs: Tensor, state: list[State] | None = None
                ) -> tuple[Tensor, list[State]]:
        """Run whole sequences through every layer (the fast path, dropout in training mode).

        Parameters
        ----------
        inputs : torch.Tensor
            Token ids T x B, or vectors T x B x I.
        state : list of State or None, optional
            The initial states, one per layer (default: zero states).

        Returns
        -------
        outputs : torch.Tensor
            The top layer's outputs, T x B x H.
        states : list of State
            The final states, one per layer.
        """
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

        Layers above the highest one asked for are not run (their final states are the
        initial ones).

        Parameters
        ----------
        inputs : torch.Tensor
            Token ids T x B, or vectors T x B x I.
        state : list of State or None, optional
            The initial states, one per layer (default: zero states).
        layers : sequence of int or None, optional
            Every readout of these layers (default: all layers).
        readouts : sequence of (int, str) or None, optional
            Only these (layer, readout) pairs; overrides ``layers``.

        Returns
        -------
        values : dict of (int, str) to torch.Tensor
            ``{(layer, readout): T x B x D}``, layer indices in 0..L-1.
        states : list of State
            The final states, one per layer.

        Raises
        ------
        MemlensError
            When a layer index does not exist.
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

    Parameters
    ----------
    model : torch.nn.Module
        A :class:`RecurrentEncoder`, or a memlens model holding one as ``model.encoder``
        (e.g. :class:`~memlens.models.lm.LanguageModel`).

    Returns
    -------
    RecurrentEncoder
        The encoder.

    Raises
    ------
    MemlensError
        When ``model`` is neither (wrap a user's model with :func:`wrap`).
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

    Parameters are shared, not copied: the wrapped encoder always sees the user's current
    weights. A multi-layer ``nn.LSTM``/``nn.GRU``/``nn.RNN`` becomes one
    :class:`~memlens.models.layers.TorchLayer` per layer (hand-derived tangents); a list of
    layers is used as given (e.g. :class:`~memlens.models.layers.StepLayer` for a custom cell;
    generic tangents).

    Parameters
    ----------
    embedding : torch.nn.Embedding or None
        The input table (token inputs), or None for continuous inputs T x I with
        I = ``rnn.input_size``.
    rnn : torch.nn.LSTM or torch.nn.GRU or torch.nn.RNN or sequence of RecurrentLayer
        The recurrent module (any layer count, batch_first or not), or a list of
        :class:`~memlens.models.layers.RecurrentLayer`.
    vocab : Vocab or sequence of str or None, optional
        The symbols in id order (or a Vocab), so that results show words and
        frequency/word-list/lexicon classes work (default None).
    head : torch.nn.Module or None, optional
        A next-token head (e.g. the user's decoder ``nn.Linear(H, V)``) mapping the top
        layer's output B x H to logits B x V; needed by :func:`memlens.context_ablation`
        only and kept out of everything else (see :meth:`RecurrentEncoder.set_head`).

    Returns
    -------
    RecurrentEncoder
        The encoder, in eval mode.

    Raises
    ------
    MemlensError
        For an input side that is not an ``nn.Embedding`` or None, another module type,
        a bidirectional module, an LSTM with ``proj_size``, a module without bias, or sizes
        that do not match.
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
