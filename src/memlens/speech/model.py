"""The grapheme CTC recogniser: a causal multi-layer LSTM/GRU over stacked log-mel frames,
a linear grapheme output, CTC training, greedy decoding and error rates.

Model: x_j = frames j*s .. j*s+s-1 stacked (s = ``stack``, I = 80 s inputs per step),
normalised with the training corpus mean/std; L unidirectional layers
(:class:`~memlens.models.layers.TorchLayer`) -> logits_j = W h^L_j + b over the 29 graphemes
(:data:`~memlens.speech.graphemes.GRAPHEMES`, blank = 0); loss: ``torch.nn.CTCLoss`` (mean
over utterances of the loss divided by the target length).

The checkpoint is a memlens encoder checkpoint (:func:`~memlens.models.checkpoint
.save_checkpoint`): ``load_model`` / ``--model ASR.pt`` read it as a vector-input encoder
(no embedding, T x I frames) for every analysis; the output layer, the feature settings and
the normalisation statistics travel in its ``extra["asr"]`` (tensors; their SHA-256 is
checked by :func:`load_asr`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from memlens.errors import MemlensError
from memlens.io import write_atomic
from memlens.models.checkpoint import load_checkpoint, save_checkpoint
from memlens.models.encoder import RecurrentEncoder
from memlens.models.layers import TorchLayer
from memlens.speech import data as sdata
from memlens.speech.graphemes import GRAPHEMES, decode, encode
from memlens.train import load_progress, progress_path

PROGRESS_FORMAT = "memlens-train-asr-partial"


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


# -- training -----------------------------------------------------------------------------------
@dataclass
class ASRConfig:
    """Options of ``memlens train-asr`` (see its --help)."""

    data: str
    out: str
    arch: str = "lstm"
    layers: int = 3
    hidden: int = 256
    stack: int = 3
    norm: str = "corpus"
    dropout: float = 0.0
    epochs: int = 10
    batch: int = 16
    lr: float = 2e-3
    clip: float = 5.0
    seed: int = 0
    max_train: int | None = None
    time_limit: float | None = None   # minutes of training; checked before every batch
    threads: int | None = None
    resume: bool = False


def prepare(cfg: ASRConfig, log=print):
    """Corpus, splits, features, statistics: (train inputs, train targets, held-out inputs,
    held-out transcripts, model)."""
    corpus = sdata.read_corpus(cfg.data)
    if all("split" in u.meta for u in corpus.utterances):
        train_c, test_c = corpus.split("train"), corpus.split("test")
    else:
        n_test = max(1, len(corpus) // 10)
        train_c = sdata.SpeechCorpus(corpus.utterances[:-n_test], corpus.source, corpus.layout)
        test_c = sdata.SpeechCorpus(corpus.utterances[-n_test:], corpus.source, corpus.layout)
    if cfg.max_train:
        train_c.utterances = train_c.utterances[: cfg.max_train]
    t0 = time.time()
    feats = sdata.load_features(corpus, workers=2)
    by_id = {u.id: f for u, f in zip(corpus.utterances, feats)}
    tr_f = [by_id[u.id] for u in train_c.utterances]
    te_f = [by_id[u.id] for u in test_c.utterances]
    log(f"features of {len(corpus)} utterances ({sum(len(f) for f in feats) / 360000:.2f} h) "
        f"in {time.time() - t0:.0f}s")
    torch.manual_seed(cfg.seed)
    model = ASRModel(cfg.arch, cfg.layers, cfg.hidden, cfg.stack, cfg.norm, cfg.dropout)
    mean, std = sdata.feature_stats(tr_f)
    model.mean.copy_(torch.from_numpy(mean))
    model.std.copy_(torch.from_numpy(std))
    tr_x = [model.inputs(f) for f in tr_f]
    te_x = [model.inputs(f) for f in te_f]
    tr_y = [encode(u.text) for u in train_c.utterances]
    for u, x, y in zip(train_c.utterances, tr_x, tr_y):
        if len(x) < len(y):
            raise MemlensError(f"utterance {u.id}: {len(x)} input steps cannot emit its "
                               f"{len(y)} graphemes (use a smaller --stack)")
    return tr_x, tr_y, te_x, [u.text for u in test_c.utterances], model


def _fingerprint(cfg: ASRConfig, tr_x: list[np.ndarray]) -> str:
    keep = {k: v for k, v in asdict(cfg).items()
            if k not in ("resume", "out", "epochs", "time_limit", "threads")}
    h = hashlib.sha256(json.dumps(keep, sort_keys=True).encode())
    for x in tr_x[:50]:
        h.update(x.tobytes())
    return h.hexdigest()


def train_asr(cfg: ASRConfig, log=print) -> ASRModel:
    """Train with Adam on length-bucketed batches (shuffled per epoch, seeded); after every
    epoch: held-out greedy CER/WER, the best (lowest CER) model saved to ``cfg.out``, the
    training state saved to :func:`progress_path` (``resume=True`` continues)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.epochs < 1 or cfg.batch < 1 or not cfg.lr > 0:
        raise MemlensError("--epochs, --batch and --lr must be positive")
    tr_x, tr_y, te_x, te_text, model = prepare(cfg, log)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    order = np.argsort([len(x) for x in tr_x], kind="stable")
    batches = [order[i:i + cfg.batch] for i in range(0, len(order), cfg.batch)]
    partial, fp = progress_path(cfg.out), _fingerprint(cfg, tr_x)
    best, history, first, elapsed = math.inf, [], 1, 0.0
    if cfg.resume:
        best, history, first, extra = load_progress(partial, fp, model, opt,
                                                    PROGRESS_FORMAT, "train-asr",
                                                    ("elapsed",))
        elapsed = extra["elapsed"]
        log(f"resuming after epoch {first - 1} from {partial}")
    rng = np.random.default_rng(cfg.seed)
    for _ in range(first - 1):
        rng.permutation(len(batches))  # the same batch order as an uninterrupted run
    for epoch in range(first, cfg.epochs + 1):
        model.train()
        start, total, n, stopped = time.time(), 0.0, 0, False
        for b in rng.permutation(len(batches)):
            if cfg.time_limit is not None and elapsed + time.time() - start > 60 * cfg.time_limit:
                stopped = True  # the time limit ends this epoch early (recorded)
                break
            idx = batches[b]
            lens = torch.tensor([len(tr_x[i]) for i in idx])
            x = torch.zeros(int(lens.max()), len(idx), tr_x[idx[0]].shape[1])
            for j, i in enumerate(idx):
                x[: lens[j], j] = torch.from_numpy(tr_x[i])
            ys = [torch.tensor(tr_y[i]) for i in idx]
            loss = ctc(model(x), torch.cat(ys), lens, torch.tensor([len(y) for y in ys]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        seconds = time.time() - start
        elapsed += seconds
        rates = error_rates(te_text, transcribe(model, te_x))
        record = {"epoch": epoch, "train_loss": total / max(n, 1), "cer": rates["cer"],
                  "wer": rates["wer"], "seconds": seconds, "utterances": n,
                  "complete": not stopped}
        history.append(record)
        if rates["cer"] < best:
            best = rates["cer"]
            save_asr(cfg.out, model, {"train_asr": asdict(cfg), "history": history,
                                      "heldout": rates})
        state = {"format": PROGRESS_FORMAT, "fingerprint": fp, "epoch": epoch, "best": best,
                 "history": history, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "rng": torch.get_rng_state(), "elapsed": elapsed}
        write_atomic(partial, lambda p, state=state: torch.save(state, p))
        log(f"epoch {epoch}: CTC loss {total / max(n, 1):.3f}, held-out CER "
            f"{100 * rates['cer']:.1f}% WER {100 * rates['wer']:.1f}%, {seconds:.0f}s")
        if stopped or (cfg.time_limit is not None and elapsed > 60 * cfg.time_limit):
            log(f"time limit of {cfg.time_limit} min reached after epoch {epoch}")
            break
    if not stopped:
        partial.unlink(missing_ok=True)  # kept after a time-limit stop: --resume continues
    best_model = load_asr(cfg.out)
    best_model.history = history
    return best_model
