"""Recurrent language models (word or character level) built from a small config dict.

Architectures: ``lstm``, ``gru``, ``rnn`` (Elman, tanh), ``flstm`` (factorised recurrent
kernel of rank ``rank``) and ``glstm`` (``groups`` independent groups), any number of layers,
embedding size independent of hidden size, dropout (on embeddings, between layers and before
the decoder), optional tied input/output embeddings and optional fixed pretrained embeddings.
The architectures are the registered layer types (:mod:`memlens.models.registry`): a new one
is a :class:`~memlens.protocol.RecurrentLayer` subclass and one ``register_layer`` line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from memlens.core.errors import MemlensError
from memlens.core.limits import MAX_LAYERS, MAX_VOCAB, MAX_WIDTH, check_int, check_memory
from memlens.models.encoder import RecurrentEncoder
from memlens.models.layers import RecurrentLayer, State
from memlens.models.registry import build_layer, layer_type

#: the built-in architectures (more: :func:`memlens.models.registry.register_layer`)
ARCHITECTURES = ("lstm", "gru", "rnn", "flstm", "glstm")

DEFAULT_CONFIG: dict[str, Any] = {
    "arch": "lstm", "layers": 1, "emb": 64, "hidden": 256, "dropout": 0.0,
    "tied": False, "rank": None, "groups": 2, "unit": "word", "vocab_size": None,
    "fixed_embeddings": False,
}


def make_layer(arch: str, input_size: int, hidden: int, config: dict[str, Any]
               ) -> RecurrentLayer:
    """One layer of the registered architecture ``arch`` (input_size -> hidden)."""
    return build_layer(arch, input_size, hidden, config)


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and refuse impossible combinations with a clear message."""
    cfg = {**DEFAULT_CONFIG, **config}
    kind = layer_type(cfg["arch"])
    for key in ("layers", "emb", "hidden"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise MemlensError(f"--{key} must be a positive integer, got {cfg[key]!r}")
    check_int(cfg["layers"], "--layers", 1, MAX_LAYERS)
    check_int(cfg["emb"], "--emb", 1, MAX_WIDTH)
    check_int(cfg["hidden"], "--hidden", 1, MAX_WIDTH)
    if cfg["vocab_size"] is not None:
        check_int(cfg["vocab_size"], "vocabulary size", 1, MAX_VOCAB)
    for key in ("groups", "rank"):
        if cfg[key] is not None:
            check_int(cfg[key], f"--{key}", -MAX_WIDTH, MAX_WIDTH)
    if not 0.0 <= float(cfg["dropout"]) < 1.0:
        raise MemlensError(f"--dropout must be in [0, 1), got {cfg['dropout']}")
    if cfg["tied"] and cfg["emb"] != cfg["hidden"]:
        raise MemlensError(f"tied weights need --emb equal to --hidden "
                           f"(got emb={cfg['emb']}, hidden={cfg['hidden']})")
    if kind.check is not None:
        kind.check(cfg)
    check_memory(4 * parameter_count(cfg, cfg["vocab_size"] or 1), "a model of this size")
    return cfg


def parameter_count(cfg: dict[str, Any], vocab_size: int) -> int:
    """An upper estimate of the number of parameters of a checked config (no allocation)."""
    E, H, L, V = cfg["emb"], cfg["hidden"], cfg["layers"], vocab_size
    gates = 4  # LSTM variants; GRU 3, RNN 1
    per_layer = gates * H * (max(E, H) + H + 2)
    return V * E + V * (H + 1) + L * per_layer


class LanguageModel(nn.Module):
    """Embedding -> recurrent layers -> linear decoder over the vocabulary.

    ``forward(tokens T x B, state)`` returns logits T x B x V and the final state. The
    analyses use ``self.encoder`` (a :class:`RecurrentEncoder`). ``config`` holds everything
    needed to rebuild the model; ``vocab`` is attached by training or checkpoint loading.
    Embedding and decoder weights start uniform in [-0.1, 0.1], the decoder bias at zero.

    Parameters
    ----------
    config : dict
        Model options, defaults filled in: ``arch`` ("lstm" (default), "gru", "rnn",
        "flstm", "glstm" or a registered layer type), ``layers`` (1..64, default 1), ``emb``
        (1..65536, default 64), ``hidden`` (1..65536, default 256), ``dropout`` (in [0, 1),
        default 0.0; on embeddings, between layers and before the decoder), ``tied`` (tie
        decoder and embedding weights; needs emb == hidden), ``rank`` (flstm), ``groups``
        (glstm, default 2), ``unit`` ("word" or "char"), ``fixed_embeddings`` (freeze the
        embedding table).
    vocab_size : int
        V, the vocabulary size, 1..2**24.

    Attributes
    ----------
    encoder : RecurrentEncoder
        The embedding and recurrent layers.
    decoder : torch.nn.Linear
        The output layer H -> V.
    config : dict
        The checked config, ``vocab_size`` included.
    vocab : Vocab or None
        The vocabulary, once attached.

    Raises
    ------
    MemlensError
        When ``config`` is not a mapping, an option is out of range, the combination is
        impossible (tied with emb != hidden, a bad rank or group count) or the model would
        not fit the memory budget.
    """

    def __init__(self, config: dict[str, Any], vocab_size: int):
        super().__init__()
        if not isinstance(config, Mapping):
            raise MemlensError("config must be a mapping of model options (e.g. {'arch': "
                               f"'lstm', 'hidden': 650}}), got {type(config).__name__}")
        check_int(vocab_size, "vocab_size", 1, MAX_VOCAB)
        cfg = check_config({**config, "vocab_size": vocab_size})
        self.config = cfg
        self.vocab = None
        embedding = nn.Embedding(vocab_size, cfg["emb"])
        nn.init.uniform_(embedding.weight, -0.1, 0.1)
        layers, size = [], cfg["emb"]
        for _ in range(cfg["layers"]):
            layers.append(make_layer(cfg["arch"], size, cfg["hidden"], cfg))
            size = cfg["hidden"]
        self.encoder = RecurrentEncoder(embedding, layers, cfg["dropout"])
        self.drop = nn.Dropout(cfg["dropout"])
        self.decoder = nn.Linear(cfg["hidden"], vocab_size)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if cfg["tied"]:
            self.decoder.weight = self.encoder.embedding.weight
        if cfg["fixed_embeddings"]:
            self.encoder.embedding.weight.requires_grad_(False)

    def forward(self, tokens: Tensor, state: list[State] | None = None
                ) -> tuple[Tensor, list[State]]:
        """Next-token logits of a batch of sequences.

        Parameters
        ----------
        tokens : torch.Tensor
            Token ids, T x B.
        state : list of State or None, optional
            The initial states, one per layer (default: zero states).

        Returns
        -------
        logits : torch.Tensor
            T x B x V, unnormalised.
        state : list of State
            The final states.
        """
        hidden, state = self.encoder(tokens, state)
        return self.decoder(self.drop(hidden)), state

    def init_state(self, batch: int = 1, device=None) -> list[State]:
        """The initial (zero) state of every layer.

        Parameters
        ----------
        batch : int, optional
            B, the number of sequences (default 1).
        device : torch.device or str or None, optional
            Where to allocate it (default: the parameters' device).

        Returns
        -------
        list of State
            One state per layer.
        """
        return self.encoder.init_state(batch, device)
