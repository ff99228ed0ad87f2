"""Loading a Hugging Face recurrent LM and turning it into a :class:`RecurrentEncoder`.

:func:`load_hf` reads a directory (or a name ``from_pretrained`` resolves): config first (the
model type must be registered, :mod:`.registry`), then the weights and the tokenizer.
:func:`from_hf` asks the family adapter for the layers and the head, takes the input embeddings
and builds the vocabulary from the tokenizer (:func:`hf_symbols`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from memlens.core.errors import MemlensError
from memlens.data.vocab import Vocab
from memlens.models.encoder import RecurrentEncoder
from memlens.models.hf.block import _require_transformers
from memlens.models.hf.registry import FAMILIES, family_of, model_type_of, unsupported


def hf_symbols(tokenizer, size: int) -> list[str]:
    """One distinct display symbol per embedding row: the decoded token; the raw token where
    two ids decode alike; ``<id:N>`` for rows beyond the tokenizer."""
    symbols: list[str] = []
    seen: set[str] = set()
    n = len(tokenizer) if tokenizer is not None else 0
    for i in range(size):
        cands = []
        if i < n:
            try:
                cands.append(tokenizer.decode([i]))
            except Exception:  # noqa: BLE001 - a tokenizer without this id: fall through
                pass
            raw = tokenizer.convert_ids_to_tokens(i)
            if raw is not None:
                cands.append(str(raw))
        cands.append(f"<id:{i}>")
        sym = next(c for c in cands if c and c not in seen)
        seen.add(sym)
        symbols.append(sym)
    return symbols


def from_hf(model_or_dir: nn.Module | str | os.PathLike, tokenizer: Any = None) -> RecurrentEncoder:
    """A Hugging Face recurrent causal LM of a registered family (Mamba, RWKV, xLSTM, ...:
    :mod:`memlens.models.hf.registry`) as a :class:`RecurrentEncoder`.

    ``model_or_dir``: a loaded ``MambaForCausalLM`` / ``RwkvForCausalLM`` /
    ``xLSTMForCausalLM`` (or its base model, without a head), or a directory or name that
    ``from_pretrained`` resolves (weights via ``AutoModelForCausalLM``, tokenizer via
    ``AutoTokenizer`` from the same place when it has one). ``tokenizer``: a tokenizer to use
    instead (gives the vocabulary: symbols are the decoded tokens).

    Returns an encoder in eval mode whose layers are one :class:`HFBlockLayer` per block
    (readouts: ``"hidden"``, the default, plus the state components; see
    :mod:`memlens.models.hf`), with ``head`` (final norm + LM head) for context ablation,
    ``tokenizer`` and ``model_type`` attached. Parameters are the model's own (shared). Any
    other architecture (a transformer, a bidirectional encoder) is a one-line
    :class:`MemlensError` naming what is supported.
    """
    if isinstance(model_or_dir, (str, os.PathLike)):
        model, tok = load_hf(model_or_dir)
        tokenizer = tokenizer if tokenizer is not None else tok
    elif isinstance(model_or_dir, nn.Module):
        model = model_or_dir
    else:
        raise MemlensError(f"from_hf() needs a transformers model or a directory, got "
                           f"{type(model_or_dir).__name__}")
    model.eval()
    _, layers, head = family_of(model).parts(model)
    emb = model.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise MemlensError(f"the model's input embeddings are a {type(emb).__name__}, not an "
                           "nn.Embedding")
    vocab = None
    if tokenizer is not None:
        vocab = Vocab.from_symbols(hf_symbols(tokenizer, emb.num_embeddings), unk=None)
    enc = RecurrentEncoder(emb, layers, vocab=vocab, head=head).eval()
    enc.set_tokenizer(tokenizer)
    enc.model_type = model_type_of(model)
    return enc


def load_hf(path: str | os.PathLike) -> tuple[nn.Module, Any]:
    """(model, tokenizer or None) from a directory or a name ``from_pretrained`` resolves;
    the config's architecture is checked before any weights are read."""
    transformers = _require_transformers()
    transformers.utils.logging.disable_progress_bar()  # no bars or warnings among memlens'
    transformers.utils.logging.set_verbosity_error()  # own lines (errors stay one line)
    spec = str(path)
    try:
        config = transformers.AutoConfig.from_pretrained(spec)
    except (OSError, ValueError, KeyError) as exc:
        raise MemlensError(f"hf:{spec}: cannot read a transformers config: "
                           f"{str(exc).strip().splitlines()[0][:200]}") from None
    mt = getattr(config, "model_type", "?")
    if mt not in FAMILIES:
        archs = ",".join(getattr(config, "architectures", None) or []) or mt
        raise unsupported(f"hf:{spec} ({archs}, model_type {mt!r})")
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        raise MemlensError(f"hf:{spec}: cannot load the model: "
                           f"{str(exc).strip().splitlines()[0][:200]}") from None
    tokenizer = None
    if not Path(spec).is_dir() or any((Path(spec) / f).exists() for f in (
            "tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(spec)
        except (OSError, ValueError, KeyError, TypeError):
            tokenizer = None
    return model, tokenizer
