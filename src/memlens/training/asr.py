"""Training of the grapheme CTC recogniser (``memlens train-asr``).

Adam on length-bucketed batches (shuffled per epoch, seeded); loss ``torch.nn.CTCLoss``
(blank 0; mean over utterances of the loss divided by the target length). After every epoch
the held-out greedy CER/WER is measured, the best (lowest CER) model is saved with
:func:`~memlens.models.asr.save_asr`, and the full training state is saved to
:func:`~memlens.training.lm.progress_path`, a :class:`~memlens.runtime.progress.RunCheckpoint`
of kind ``"train-asr"`` (``resume=True`` continues; a ``time_limit`` stop keeps it).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from memlens.core.errors import MemlensError
from memlens.core.signals import deferred_interrupts
from memlens.data.speech import corpus as sdata
from memlens.data.speech.graphemes import encode
from memlens.models.asr import ASRModel, error_rates, load_asr, save_asr, transcribe
from memlens.runtime.options import check_fields
from memlens.runtime.progress import Interrupted, RunCheckpoint, fingerprint
from memlens.training.lm import (
    epoch_state,
    flush_denormals,
    interrupted,
    load_progress,
    progress_path,
)


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


def check_config(cfg: ASRConfig) -> None:
    """The options against their declarations in the option schema
    (:data:`memlens.runtime.options.OPTIONS`), before anything is read."""
    if cfg.arch not in ("lstm", "gru"):
        raise MemlensError(f"unknown --arch {cfg.arch!r}: choose lstm or gru")
    if cfg.norm not in ("corpus", "utterance", "none"):
        raise MemlensError(f"unknown --norm {cfg.norm!r}: choose corpus, utterance or none")
    check_fields(cfg, "layers", "hidden", "stack", "dropout", "epochs", "batch", "lr", "clip",
                 "seed", "max_train", "time_limit", "threads")
    if cfg.lr is None:
        raise MemlensError("--lr must be given")


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


def asr_fingerprint(cfg: ASRConfig, tr_x: list[np.ndarray]) -> str:
    """What must not change between an interrupted run and its resumption: the options
    (except resume, out, epochs, time_limit and threads) and the first 50 training inputs
    (:func:`~memlens.runtime.progress.fingerprint`)."""
    keep = {k: v for k, v in asdict(cfg).items()
            if k not in ("resume", "out", "epochs", "time_limit", "threads")}
    return fingerprint(keep, *tr_x[:50])


def _train_epoch(model: ASRModel, opt: torch.optim.Optimizer, ctc: nn.CTCLoss,
                 tr_x: list[np.ndarray], tr_y: list, order: list[np.ndarray], cfg: ASRConfig,
                 elapsed: float, start: float) -> tuple[float, int, bool]:
    """One epoch of Adam steps over the batches ``order`` (index arrays into ``tr_x`` /
    ``tr_y``; inputs zero-padded to T x B x F); returns (loss summed over utterances,
    utterances, stopped). ``stopped``: the time limit (``elapsed`` seconds before ``start``
    plus this epoch's) ended the epoch early, checked before every batch."""
    total, n = 0.0, 0
    for idx in order:
        if cfg.time_limit is not None and elapsed + time.time() - start > 60 * cfg.time_limit:
            return total, n, True
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
    return total, n, False


def train_asr(cfg: ASRConfig, log=print) -> ASRModel:
    """Train with Adam on length-bucketed batches (shuffled per epoch, seeded); after every
    epoch: held-out greedy CER/WER, the best (lowest CER) model saved to ``cfg.out``, the
    training state saved to :func:`progress_path` (``resume=True`` continues)."""
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tr_x, tr_y, te_x, te_text, model = prepare(cfg, log)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    order = np.argsort([len(x) for x in tr_x], kind="stable")
    batches = [order[i:i + cfg.batch] for i in range(0, len(order), cfg.batch)]
    ck = RunCheckpoint(progress_path(cfg.out), asr_fingerprint(cfg, tr_x), every=0,
                       kind="train-asr")
    best, history, first, elapsed = math.inf, [], 1, 0.0
    if cfg.resume:
        best, history, first, extra = load_progress(ck, model, opt, ("elapsed",))
        elapsed = extra["elapsed"]
        log(f"resuming after epoch {first - 1} from {ck.path}")
    rng = np.random.default_rng(cfg.seed)
    for _ in range(first - 1):
        rng.permutation(len(batches))  # the same batch order as an uninterrupted run
    saved, stopped = first - 1, False  # saved: the last epoch whose state is in ck.path
    try:
        for epoch in range(first, cfg.epochs + 1):
            model.train()
            start = time.time()
            with flush_denormals(torch.device("cpu")):  # the trainer runs on CPU
                total, n, stopped = _train_epoch(
                    model, opt, ctc, tr_x, tr_y,
                    [batches[b] for b in rng.permutation(len(batches))], cfg, elapsed, start)
            seconds = time.time() - start
            elapsed += seconds
            rates = error_rates(te_text, transcribe(model, te_x))
            record = {"epoch": epoch, "train_loss": total / max(n, 1), "cer": rates["cer"],
                      "wer": rates["wer"], "seconds": seconds, "utterances": n,
                      "complete": not stopped}
            history.append(record)
            with deferred_interrupts():  # both files are written before a signal counts
                if rates["cer"] < best:
                    best = rates["cer"]
                    save_asr(cfg.out, model, {"train_asr": asdict(cfg), "history": history,
                                              "heldout": rates})
                ck.save(epoch_state(epoch, best, history, model, opt, elapsed=elapsed))
                saved = epoch
            log(f"epoch {epoch}: CTC loss {total / max(n, 1):.3f}, held-out CER "
                f"{100 * rates['cer']:.1f}% WER {100 * rates['wer']:.1f}%, {seconds:.0f}s")
            if stopped or (cfg.time_limit is not None and elapsed > 60 * cfg.time_limit):
                log(f"time limit of {cfg.time_limit} min reached after epoch {epoch}")
                break
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise interrupted(ck, saved, cfg.epochs) from None
    if not stopped or saved >= cfg.epochs:
        ck.finish()  # kept after a time-limit stop with epochs left: --resume continues
    best_model = load_asr(cfg.out)
    best_model.history = history
    return best_model
