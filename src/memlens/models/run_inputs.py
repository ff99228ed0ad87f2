"""The inputs of one run, as the command line names them: model -> vocabulary -> corpus ->
stream.

Every command that analyses a model reads ``--model`` (a checkpoint, ``FILE.py:FUNCTION`` or
``hf:DIR``; :func:`memlens.models.loading.load_model`), ``--vocab``, ``--unit``, ``--corpus``,
``--format`` and ``--max-tokens`` the same way; :func:`load_run_inputs` does it once, with the
checks and warnings they share:

* a model reading tokens needs a vocabulary (``--vocab FILE`` for the user's own models);
* ``need="tokens"`` refuses a model with continuous inputs (one line);
* a token corpus is read in the model's unit (through its own tokenizer for ``hf:``), cut to
  its first ``max_tokens`` tokens (its tag columns alike) and encoded with the vocabulary; a
  corpus whose words are all unknown (100% OOV, ``<eos>`` not counted) is refused, more than
  50% unknown is warned about;
* a model reading vectors takes a ``.npy`` file of T x I floats (never unpickled), its first
  ``max_tokens`` rows.

The messages name the command-line flags, as those of :mod:`memlens.models.loading` do.
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memlens.core.errors import MemlensError
from memlens.core.files import as_path, binary_limit, check_input_file
from memlens.core.limits import check_memory
from memlens.data.corpus import Corpus
from memlens.data.vocab import EOS
from memlens.models.loading import LoadedModel, load_model

NEEDS = ("any", "tokens")
OOV_WARNING = 0.5  # warn when more than this fraction of the corpus tokens is unknown


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class RunInputs:
    """What a run reads: the model and the stream it is analysed on.

    ``loaded``: the model, its encoder, vocabulary and description
    (:class:`~memlens.models.loading.LoadedModel`); ``corpus``: the token corpus as read
    (None for vector inputs); ``tokens``: its first ``max_tokens`` tokens (None for vectors);
    ``tags``: the corpus' tag columns (e.g. ``"upos"``) cut to ``len(tokens)``; ``inputs``: the
    stream, a LongTensor of T token ids (``vocab.encode(tokens)``) or a T x I float64 array of
    input vectors; ``oov_rate``: the fraction of the tokens (``<eos>`` not counted) unknown to
    the vocabulary (0 for vectors); ``path`` and ``format``: the corpus file and how it was
    read (``"npy"`` for vectors).
    """

    loaded: LoadedModel
    corpus: Corpus | None
    tokens: list[str] | None
    tags: dict[str, list]
    inputs: torch.Tensor | np.ndarray
    oov_rate: float
    path: str = ""
    format: str = "text"

    def __len__(self) -> int:
        """T, the length of the stream."""
        return len(self.inputs)

    def corpus_meta(self) -> dict[str, Any]:
        """The corpus record of result.json: path, tokens (T), oov_rate, format."""
        return {"path": self.path, "tokens": len(self.inputs), "oov_rate": self.oov_rate,
                "format": self.format}


def check_max_tokens(max_tokens: Any) -> int | None:
    """``--max-tokens``: None (all tokens) or a positive integer."""
    if max_tokens is None:
        return None
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, numbers.Integral):
        raise MemlensError(f"--max-tokens must be a positive integer, got {max_tokens!r}")
    if max_tokens < 1:
        raise MemlensError(f"--max-tokens must be positive, got {max_tokens}")
    return int(max_tokens)


def check_need(loaded: LoadedModel, need: str = "any", what: str = "this command") -> None:
    """Refuse a model the run cannot read: ``need="tokens"`` and a model with continuous
    inputs; a token model without a vocabulary (the symbols of the ids)."""
    if need not in NEEDS:
        raise MemlensError(f"need must be one of {', '.join(NEEDS)}, got {need!r}")
    encoder = loaded.encoder
    if encoder.input_kind != "tokens":
        if need == "tokens":
            raise MemlensError(f"{what} needs a token model; this one reads vectors")
        return
    if encoder.vocab is None:
        raise MemlensError(f"the model {loaded.info.get('path')} has no vocabulary: give "
                           "--vocab FILE (its symbols, one per line in id order)")


def _read_npy(path: str | os.PathLike, what: str) -> np.ndarray:
    """The array of a .npy file, memory-mapped (never unpickled), after the input gate (a
    FIFO, a device or a file larger than the memory budget is refused by ``stat``)."""
    check_input_file(path, what, binary_limit())
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else \
            type(exc).__name__
        raise MemlensError(f"cannot read {what} {path}: {why}") from None


def load_vectors(path: str | os.PathLike, size: int, max_rows: int | None = None
                 ) -> np.ndarray:
    """T x I input vectors (float64) from a .npy file of floats (never unpickled): the first
    ``max_rows`` rows when given."""
    if not str(path).endswith(".npy"):
        raise MemlensError(f"this model reads continuous vectors: --corpus must be a .npy file "
                           f"of T x {size} floats, got {path}")
    arr = _read_npy(path, "input vectors")
    if arr.ndim != 2 or arr.shape[1] != size or arr.dtype.kind != "f":
        raise MemlensError(f"{path}: expected a T x {size} float array, got {arr.dtype} "
                           f"{arr.shape}")
    rows = arr[:max_rows] if max_rows else arr
    check_memory(rows.size * 8, f"the input vectors of {path}")
    return np.array(rows, dtype=np.float64)


def load_vectors_file(path: str | os.PathLike, what: str = "direction vector",
                      size: int | None = None) -> np.ndarray:
    """A vector of finite floats (float64, flattened) from a .npy file, e.g. a
    ``--direction``: through the input gate, never unpickled; an array of strings, objects
    or booleans, an empty one, NaN or inf, and (with ``size``) a length other than ``size``
    are one-line errors naming the file."""
    arr = _read_npy(path, what)
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        raise MemlensError(f"{what} {path} must hold numbers, got a {arr.dtype} array of "
                           f"shape {arr.shape}")
    check_memory(arr.size * 8, f"the {what} {path}")
    vec = np.array(arr, dtype=np.float64).reshape(-1)
    if not np.isfinite(vec).all():
        raise MemlensError(f"{what} {path} contains NaN or infinite values")
    if size is not None and len(vec) != size:
        raise MemlensError(f"{what} {path} has {len(vec)} values, expected {size}")
    return vec


def check_oov(tokens: Sequence[str], rate: float, log: Callable[[str], None] = _stderr
              ) -> None:
    """Refuse a corpus of only unknown words (100% OOV: model and corpus do not match); warn
    (through ``log``) when more than half of its tokens are unknown."""
    words = sum(1 for t in tokens if t != EOS)
    if words and rate >= 1.0:
        raise MemlensError(f"the corpus has only unknown words for this model's vocabulary "
                           f"({words} tokens, 100% OOV): model and corpus do not match")
    if rate > OOV_WARNING:
        log(f"memlens: warning: vocabulary mismatch? {100 * rate:.1f}% of the corpus tokens "
            "are unknown to the model")


def read_run_inputs(loaded: LoadedModel, corpus: str | os.PathLike, *, format: str = "text",
                    max_tokens: int | None = None, need: str = "any",
                    what: str = "this command", log: Callable[[str], None] = _stderr
                    ) -> RunInputs:
    """The stream of an already loaded model (see :func:`load_run_inputs`); for commands that
    load the model themselves (e.g. a speech corpus read through a train-asr model)."""
    max_tokens = check_max_tokens(max_tokens)
    check_need(loaded, need, what)
    encoder = loaded.encoder
    if encoder.input_kind != "tokens":
        vectors = load_vectors(corpus, encoder.input_size, max_tokens)
        return RunInputs(loaded, None, None, {}, vectors, 0.0, str(corpus), "npy")
    read = loaded.read_corpus(corpus, format)
    tokens = read.tokens[:max_tokens] if max_tokens else read.tokens
    tags = {k: v[: len(tokens)] for k, v in read.tags.items()}
    oov = encoder.vocab.oov_rate(tokens)
    check_oov(tokens, oov, log)
    return RunInputs(loaded, read, tokens, tags, encoder.vocab.encode(tokens), oov,
                     str(corpus), format)


def load_run_inputs(model: str | os.PathLike, corpus: str | os.PathLike, *,
                    vocab: str | os.PathLike | None = None, unit: str | None = None,
                    format: str = "text", max_tokens: int | None = None,
                    device: str | torch.device = "cpu", need: str = "any",
                    what: str = "this command", log: Callable[[str], None] = _stderr
                    ) -> RunInputs:
    """Load ``model`` (with ``vocab``, read in ``unit``; on ``device``, a torch device, not
    "auto") and the stream of ``corpus`` (``format`` "text" or "conllu"; a .npy file of
    T x I vectors for a model with continuous inputs), cut to ``max_tokens``.

    ``need="tokens"``: refuse a model with continuous inputs ("``what`` needs a token model").
    Warnings go to ``log`` (default stderr). Every refusal is one-line
    :class:`~memlens.core.errors.MemlensError`.
    """
    as_path(model, "model")
    as_path(corpus, "corpus")
    max_tokens = check_max_tokens(max_tokens)
    if need not in NEEDS:
        raise MemlensError(f"need must be one of {', '.join(NEEDS)}, got {need!r}")
    loaded = load_model(model, vocab, device, unit)
    return read_run_inputs(loaded, corpus, format=format, max_tokens=max_tokens, need=need,
                           what=what, log=log)


__all__ = ["RunInputs", "check_max_tokens", "check_need", "check_oov", "load_run_inputs",
           "load_vectors", "load_vectors_file", "read_run_inputs"]
