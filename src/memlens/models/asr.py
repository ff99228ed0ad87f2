"""The grapheme CTC recogniser: a causal multi-layer LSTM/GRU over stacked log-mel frames,
a linear grapheme output, greedy decoding, error rates and its checkpoint.

Model: x_j = frames j*s .. j*s+s-1 stacked (s = ``stack``, I = 80 s inputs per step),
normalised with the training corpus mean/std; L unidirectional layers
(:class:`~memlens.models.layers.TorchLayer`) -> logits_j = W h^L_j + b over the 29 graphemes
(:data:`~memlens.data.speech.graphemes.GRAPHEMES`, blank = 0). Training (CTC loss):
:mod:`memlens.training.asr`.

The checkpoint is a memlens encoder checkpoint (:func:`~memlens.models.checkpoint
.save_checkpoint`): ``load_model`` / ``--model ASR.pt`` read it as a vector-input encoder
(no embedding, T x I frames) for every analysis; the output layer, the feature settings and
the normalisation statistics travel in its ``extra["asr"]`` (tensors; their SHA-256 is
checked by :func:`load_asr`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from memlens.core.errors import MemlensError
from memlens.data.speech import corpus as sdata
from memlens.data.speech.graphemes import GRAPHEMES, decode
from memlens.models.checkpoint import load_checkpoint, save_checkpoint
from memlens.models.encoder import RecurrentEncoder
from memlens.models.layers import TorchLayer


class ASRModel(nn.Module):
    """``encoder`` (a vector-input :class:`RecurrentEncoder`) + ``head`` (H -> 29 logits);
    ``stack``, ``norm`` and ``mean``/``std`` (80,) say how features become inputs."""

    def __init__(self, kind: str, layers: int, hidden: int, stack: int = 3,
                 norm: str = "corpus", dropout: float = 0.0):
        super().__init__()
        if kind not in ("lstm", "gru"):
            raise MemlensError(f"--arch must be lstm or gru, got {kind!r}")
        if not 1 <= layers <= 16 or not 1 <= hidden <= 4096 or not 1 <= stack <= 16:
            raise MemlensError("bad model size: 1..16 layers, hidden 1..4096, stack 1..16")
        size = sdata.N_MELS * stack
        mods = []
        for _ in range(layers):
            mods.append(TorchLayer.create(kind, size, hidden))
            size = hidden
        self.encoder = RecurrentEncoder(None, mods, dropout=dropout)
        self.head = nn.Linear(hidden, len(GRAPHEMES))
        self.stack, self.norm, self.kind = stack, norm, kind
        self.register_buffer("mean", torch.zeros(sdata.N_MELS, dtype=torch.float64))
        self.register_buffer("std", torch.ones(sdata.N_MELS, dtype=torch.float64))

    def inputs(self, feats: np.ndarray) -> np.ndarray:
        """Model inputs (T/stack x 80*stack float32) of one utterance's log-mel features."""
        stats = (self.mean.numpy(), self.std.numpy())
        return sdata.stack_frames(sdata.normalize(feats, self.norm, stats), self.stack)

    def forward(self, x: Tensor) -> Tensor:
        """x: T x B x I inputs -> T x B x 29 log-probabilities (log-softmax)."""
        out, _ = self.encoder(x)
        return torch.log_softmax(self.head(out), dim=-1)


# -- decoding and error rates ------------------------------------------------------------------
def greedy_decode(logp: Tensor) -> str:
    """Best path of T x 29 log-probabilities: argmax per frame, merge repeats, drop blanks."""
    best = logp.argmax(-1).tolist()
    return decode([b for i, b in enumerate(best) if i == 0 or b != best[i - 1]])


def edit_distance(ref, hyp) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def error_rates(refs: list[str], hyps: list[str]) -> dict:
    """Corpus CER = sum of character edit distances / reference characters (spaces count);
    WER = sum of word edit distances / reference words."""
    ce = sum(edit_distance(r, h) for r, h in zip(refs, hyps))
    we = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
    nc = sum(len(r) for r in refs)
    nw = sum(len(r.split()) for r in refs)
    return {"cer": ce / max(nc, 1), "wer": we / max(nw, 1), "chars": nc, "words": nw,
            "utterances": len(refs)}


@torch.no_grad()
def transcribe(model: ASRModel, inputs: list[np.ndarray]) -> list[str]:
    """Greedy transcripts of prepared inputs (one T x I array per utterance)."""
    model.eval()
    return [greedy_decode(model(torch.from_numpy(x)[:, None])[:, 0]) for x in inputs]


# -- checkpoint ---------------------------------------------------------------------------------
def _head_digest(asr: dict) -> str:
    h = hashlib.sha256()
    for k in ("head_weight", "head_bias", "mean", "std"):
        h.update(asr[k].detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps({k: asr[k] for k in ("stack", "norm", "graphemes", "features")},
                        sort_keys=True).encode())
    return h.hexdigest()


def save_asr(path: str | Path, model: ASRModel, info: dict | None = None) -> None:
    """Atomic memlens encoder checkpoint with the ASR parts in ``extra["asr"]``."""
    asr = {"head_weight": model.head.weight.detach().cpu().clone(),
           "head_bias": model.head.bias.detach().cpu().clone(),
           "mean": model.mean.cpu().clone(), "std": model.std.cpu().clone(),
           "stack": model.stack, "norm": model.norm, "graphemes": list(GRAPHEMES),
           "features": dict(sdata.FEATURES)}
    asr["sha256"] = _head_digest(asr)
    save_checkpoint(path, model.encoder, {"asr": asr, **(info or {})})


def load_asr(path: str | Path) -> ASRModel:
    """The ASR model of a :func:`save_asr` checkpoint (eval mode); ``.extra`` has the info."""
    enc = load_checkpoint(path)
    asr = (getattr(enc, "extra", {}) or {}).get("asr")
    if not isinstance(asr, dict) or enc.input_kind != "vectors":
        raise MemlensError(f"{path} is not a memlens speech recogniser (no CTC output layer): "
                           "train one with memlens train-asr")
    try:
        if _head_digest(asr) != asr["sha256"] or asr["graphemes"] != list(GRAPHEMES):
            raise MemlensError(f"checkpoint integrity check failed (output layer): {path}")
        kinds = {layer.kind for layer in enc.layers}
        model = ASRModel(kinds.pop(), enc.num_layers, enc.hidden_sizes[-1], int(asr["stack"]),
                         str(asr["norm"]))
        model.encoder.load_state_dict(enc.state_dict())
        model.head.weight.data.copy_(asr["head_weight"])
        model.head.bias.data.copy_(asr["head_bias"])
        model.mean.copy_(asr["mean"])
        model.std.copy_(asr["std"])
    except MemlensError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise MemlensError(f"{path}: damaged speech recogniser checkpoint: "
                           f"{str(exc).splitlines()[0][:150]}") from None
    model.extra = {k: v for k, v in enc.extra.items() if k != "asr"}
    return model.eval()


def asr_settings(encoder_extra: dict) -> dict | None:
    """The ``extra["asr"]`` of a loaded encoder checkpoint (None for other models)."""
    asr = (encoder_extra or {}).get("asr")
    return asr if isinstance(asr, dict) else None
