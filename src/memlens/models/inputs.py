"""The input side of the model protocol: one continuous stream, validated once for every analysis.

An analysis receives its input as any of

* a :class:`~memlens.data.Corpus` or a list of symbols (token models with a vocabulary),
* 1-D integer ids (token models),
* a T x I float array / tensor of input vectors (continuous-input models: frames, features),
* a :class:`Stream` (any of the above plus per-position ``labels``),

and :func:`as_stream` turns it into a :class:`Stream`: ``values`` (T ids, or T x I vectors),
the symbols (when known), CoNLL-U tags, and optional labels (one per position: a class for
state gradients, the symbol to decode for memory signatures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from memlens.core.errors import MemlensError
from memlens.data.corpus import Corpus
from memlens.data.vocab import EOS
from memlens.models.encoder import RecurrentEncoder


@dataclass
class Stream:
    """One continuous input stream (from a zero state).

    ``len(stream)`` is T, the number of positions.

    Parameters
    ----------
    values : torch.Tensor or numpy.ndarray or sequence
        T token ids (int64) or T x I input vectors (float).
    labels : sequence or None, optional
        One class label per position (None for "no label"); default None.
    tokens : list of str or None, optional
        The symbols of a token stream, when known (default None).
    tags : dict of str to list, optional
        CoNLL-U annotations, one entry per position (``{"upos": [...], "xpos": [...]}``);
        default empty.
    sentences : sequence of int or None, optional
        The positions where a sentence (a line, an utterance) begins, for the ``sentence``
        context regime; None (default): after each ``<eos>`` of a token stream (see
        :func:`sentence_starts`).
    """

    values: Tensor | np.ndarray | Sequence
    labels: Sequence | None = None
    tokens: list[str] | None = None
    tags: dict[str, list] = field(default_factory=dict)
    sentences: Sequence[int] | None = None

    def __len__(self) -> int:
        return int(len(self.values))

    @property
    def is_tokens(self) -> bool:
        """Whether ``values`` is a 1-D tensor of token ids (rather than T x I vectors)."""
        return isinstance(self.values, Tensor) and self.values.dim() == 1


def _vectors(values, what: str) -> Tensor:
    x = _as_tensor(values, what, "input vectors must be a T x I array of numbers")
    if not x.is_floating_point():
        raise MemlensError(f"{what}: input vectors must be floating point, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise MemlensError(f"{what}: input vectors contain NaN or infinite values")
    return x


def _sequence(values, what: str, tokens: list[str] | None
              ) -> tuple[list | None, list[str] | None]:
    """A plain sequence given as a stream: (ids, None) or (None, symbols); a str, a mapping or
    a non-sequence is refused (a str would silently become a stream of its characters)."""
    if isinstance(values, (str, bytes)):
        raise MemlensError(f"{what}: a str is not a stream: give a list of symbols "
                           "(text.split() for words, list(text) for characters) or token ids")
    if isinstance(values, (dict, set, frozenset)) or not hasattr(values, "__iter__") \
            or not hasattr(values, "__len__"):
        raise MemlensError(f"{what}: give a stream (a Corpus, a list of symbols, 1-D ids or "
                           f"T x I vectors), not {type(values).__name__}")
    seq = list(values)
    strings = [isinstance(t, str) for t in seq]
    if seq and any(strings):
        if not all(strings):
            bad = next(t for t in seq if not isinstance(t, str))
            raise MemlensError(f"{what}: a list of symbols must hold only strings, got "
                               f"{type(bad).__name__}")
        return None, list(seq)
    return seq, tokens


def _as_tensor(values, what: str,
               expected: str = "token ids must be a flat list of integers in the model's "
                               "vocabulary") -> Tensor:
    """``values`` (a tensor, array or list) as a tensor; ragged or non-numeric lists and
    numbers beyond int64 are refused (``expected``: the message)."""
    if isinstance(values, Tensor):
        return torch.as_tensor(values.detach().cpu())
    try:
        arr = np.asarray(values)
        if arr.dtype.kind not in "biufc":
            raise TypeError(arr.dtype)
        return torch.as_tensor(arr)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise MemlensError(f"{what}: {expected}") from None


def as_stream(encoder: RecurrentEncoder, inputs, what: str = "inputs",
              labels: Sequence | None = None) -> Stream:
    """Validate ``inputs`` for ``encoder`` and return a :class:`Stream` (see module docstring).

    Token models take a Corpus, symbols (through ``encoder.vocab``) or ids in 0..V-1;
    vector models take T x I floats with I = ``encoder.input_size``. ``labels`` (one per
    position) override those of a Stream.
    """
    sentences = None
    if inputs is None:
        raise MemlensError(f"{what}: give a stream (a Corpus, a list of symbols, 1-D ids or "
                           "T x I vectors), not None")
    if isinstance(inputs, Stream):
        labels = inputs.labels if labels is None else labels
        tokens, tags, values = inputs.tokens, dict(inputs.tags), inputs.values
        sentences = inputs.sentences
    elif isinstance(inputs, Corpus):
        tokens, tags, values = list(inputs.tokens), dict(inputs.tags), None
    else:
        tokens, tags, values = None, {}, inputs
    if values is not None and not isinstance(values, (Tensor, np.ndarray)):
        values, tokens = _sequence(values, what, tokens)
    if encoder.input_kind == "vectors":
        if tokens is not None and values is None:
            raise MemlensError(f"{what}: this model reads continuous vectors (T x "
                               f"{encoder.input_size}), not symbols")
        x = _vectors(values, what)
        if x.dim() != 2 or x.shape[1] != encoder.input_size:
            raise MemlensError(f"{what}: expected T x {encoder.input_size} input vectors, got "
                               f"shape {tuple(x.shape)}")
        out = Stream(x, labels, None, tags)
    else:
        if values is None:
            vocab = encoder.vocab
            if vocab is None:
                raise MemlensError(f"{what} are symbols but the model has no vocabulary: pass "
                                   "token ids, or give the model a vocabulary (wrap(..., "
                                   "vocab=...) / --vocab FILE)")
            words = [t for t in tokens if t != EOS]
            if words and not any(vocab.is_known(t) for t in words):
                raise MemlensError(f"{what}: every symbol is unknown to the model's vocabulary "
                                   "(model and corpus do not match)")
            values = vocab.encode(tokens)
        ids = _as_tensor(values, what)
        if ids.dim() == 2 and ids.is_floating_point():
            raise MemlensError(f"{what}: this model reads token ids through its embedding "
                               "table, not input vectors")
        if ids.dim() != 1:
            raise MemlensError(f"{what}: token ids must be 1-D (one continuous stream), got "
                               f"shape {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise MemlensError(f"{what}: token ids must be integers, got {ids.dtype}")
        ids = ids.long()
        if ids.numel():
            V = encoder.vocab_size
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= V:
                raise MemlensError(f"{what}: token id {lo if lo < 0 else hi} is outside the "
                                   f"model's vocabulary (0..{V - 1}): model and corpus "
                                   "vocabularies do not match")
        if tokens is None and encoder.vocab is not None:
            tokens = encoder.vocab.decode(ids.tolist())
        out = Stream(ids, labels, tokens, tags)
    if len(out) == 0:
        raise MemlensError(f"{what}: the input stream is empty")
    if out.labels is not None and (isinstance(out.labels, (str, bytes, dict))
                                   or not hasattr(out.labels, "__len__")):
        raise MemlensError(f"{what}: labels must be a sequence, one per position, got "
                           f"{type(out.labels).__name__}")
    if out.labels is not None and len(out.labels) != len(out):
        raise MemlensError(f"{what}: {len(out.labels)} labels for {len(out)} positions")
    if sentences is not None:
        try:
            starts = np.asarray(sentences, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise MemlensError(f"{what}: sentences must be integer positions") from None
        if starts.size and (starts.min() < 0 or starts.max() >= len(out)
                            or (np.diff(starts) <= 0).any()):
            raise MemlensError(f"{what}: sentence starts must be increasing positions in "
                               f"0..{len(out) - 1}")
        out.sentences = starts
    return out


def sentence_starts(encoder: RecurrentEncoder, stream: Stream) -> np.ndarray | None:
    """Where the sentences of ``stream`` begin: its ``sentences`` when given, else position 0
    and the position after every ``<eos>`` of a token stream whose vocabulary has one; None
    when the stream has no sentence boundaries."""
    if stream.sentences is not None:
        return np.asarray(stream.sentences, dtype=np.int64)
    vocab = encoder.vocab
    eos = vocab.eos_id if vocab is not None and stream.is_tokens else None
    if eos is None:
        return None
    after = np.nonzero(stream.values.numpy() == eos)[0] + 1
    return np.concatenate([[0], after[after < len(stream)]]).astype(np.int64)
