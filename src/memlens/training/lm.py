"""Training and evaluation of recurrent language models (truncated BPTT, carried state).

(``memlens train`` and ``memlens eval``; was ``memlens.training.lm``.)

The reference recipe (Verwimp et al., after the TensorFlow PTB "medium" setup): SGD with
lr 1, gradient-norm clip 5, lr x 0.8 per epoch after epoch 6, dropout 0.5; the loss of an
SGD step is summed over the BPTT window and averaged over the batch, as in that setup.
Adam uses the mean token loss. Deterministic on CPU for a given seed.

Progress: after every epoch the full training state (weights, optimizer, random-number state,
history) is saved to ``.<OUT>.partial.pt`` beside the checkpoint OUT, a
:class:`~memlens.runtime.progress.RunCheckpoint` of kind ``"train"``; an interrupted run
(Ctrl-C / SIGTERM: :class:`~memlens.runtime.progress.Interrupted`) continues from its last
finished epoch with ``resume=True`` and ends with the same model as an uninterrupted run. The
file is deleted when training ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from memlens.core.errors import MemlensError
from memlens.core.signals import deferred_interrupts
from memlens.data import Corpus, Vocab, batchify, bptt_windows, load_corpus
from memlens.models import devices
from memlens.models.checkpoint import load_checkpoint, save_checkpoint
from memlens.models.embeddings import load_word2vec
from memlens.models.lm import LanguageModel, check_config
from memlens.runtime.options import check_fields, check_option, resolve_device
from memlens.runtime.progress import (
    Interrupted,
    RunCheckpoint,
    fingerprint,
    partial_path,
    progress_bar,
)


@dataclass
class TrainConfig:
    """Everything ``memlens train`` accepts (see ``memlens train --help``).

    The defaults are the reference recipe (SGD, lr 1, clip 5, lr x 0.8 per epoch after epoch
    6, dropout 0.5). :func:`train` checks the fields against the option schema
    (:data:`memlens.runtime.options.OPTIONS`), a one-line MemlensError naming the flag.

    Parameters
    ----------
    train : str
        The training corpus file.
    valid : str or None, optional
        The validation corpus file (default None: the best epoch is chosen by training loss).
    out : str, optional
        The checkpoint written (default "model.pt").
    format : str, optional
        Corpus format, "text" (default) or "conllu".
    unit : str, optional
        "word" (default) or "char".
    arch : str, optional
        "lstm" (default), "gru", "rnn", "flstm", "glstm" or a registered layer type.
    layers : int, optional
        Recurrent layers, 1..64 (default 1).
    emb : int, optional
        Embedding size, 1..65536 (default 64).
    hidden : int, optional
        Hidden (state) size per layer, 1..65536 (default 256).
    vocab_size : int or None, optional
        Word vocabulary cap, specials included, 3..2**24 (default 10000; None: no cap;
        ignored for characters).
    min_freq : int, optional
        Least count of a word kept in the vocabulary, >= 1 (default 1).
    epochs : int, optional
        Training epochs, 1..100000 (default 2).
    bptt : int, optional
        Truncated backpropagation steps, 1..2**20 (default 35).
    batch : int, optional
        Parallel streams per batch, 1..2**20 (default 20).
    optimizer : str, optional
        "sgd" (default; loss summed over the window) or "adam" (mean token loss).
    lr : float or None, optional
        Learning rate, in (0, 1e4] (default None: 1.0 for SGD, 2e-3 for Adam).
    clip : float, optional
        Gradient-norm clip, > 0 (default 5.0).
    decay : float, optional
        SGD learning-rate factor per epoch after ``decay_after`` (default 0.8).
    decay_after : int, optional
        The last epoch at the base learning rate (default 6).
    dropout : float, optional
        Dropout probability, in [0, 1) (default 0.5).
    tied : bool, optional
        Tie the decoder to the embedding table (needs emb == hidden; default False).
    rank : int or None, optional
        Rank of the recurrent kernel of an flstm, 1..hidden (default None).
    groups : int, optional
        Number of groups of a glstm, dividing emb and hidden (default 2).
    pretrained : str or None, optional
        A word2vec text file of embeddings, kept fixed during training (default None).
    seed : int, optional
        Random seed, 0 <= seed < 2**63 (default 0).
    device : str, optional
        "auto" (default: cuda if available), "cpu", "cuda" or "cuda:N".
    max_tokens : int or None, optional
        Train on the first N tokens only, N >= 1 (default None: all).
    progress : bool or None, optional
        Show a progress bar per epoch (None, default: only on a terminal).
    resume : bool, optional
        Continue an interrupted run from its per-epoch state ``.<out>.partial.pt``
        (default False).
    """

    train: str
    valid: str | None = None
    out: str = "model.pt"
    format: str = "text"
    unit: str = "word"
    arch: str = "lstm"
    layers: int = 1
    emb: int = 64
    hidden: int = 256
    vocab_size: int | None = 10000
    min_freq: int = 1
    epochs: int = 2
    bptt: int = 35
    batch: int = 20
    optimizer: str = "sgd"
    lr: float | None = None
    clip: float = 5.0
    decay: float = 0.8
    decay_after: int = 6
    dropout: float = 0.5
    tied: bool = False
    rank: int | None = None
    groups: int = 2
    pretrained: str | None = None
    seed: int = 0
    device: str = "auto"
    max_tokens: int | None = None
    progress: bool | None = None
    resume: bool = False


MIN_SYMBOLS = 3


def progress_path(out: str | Path) -> Path:
    """Where training keeps its per-epoch state: ``.<name>.partial.pt`` beside ``out``
    (:func:`~memlens.runtime.progress.partial_path` with suffix ``.pt``)."""
    return partial_path(out, ".pt")


def _check_evaluate(model: LanguageModel, ids: torch.Tensor, batch: int, bptt: int,
                    device: torch.device | str) -> tuple[int, int, torch.device]:
    """The arguments of :func:`evaluate`, checked (one-line MemlensError naming the
    parameter): returns ``batch``, ``bptt`` and the resolved device."""
    if not isinstance(model, LanguageModel):
        raise MemlensError("evaluate needs a memlens LanguageModel (memlens.load_checkpoint or "
                           f"memlens.train), got {type(model).__name__}")
    if not isinstance(ids, torch.Tensor):
        raise MemlensError("ids must be a 1-D torch tensor of token ids (e.g. "
                           f"vocab.encode(tokens)), got {type(ids).__name__}")
    if ids.dim() != 1 or ids.dtype.is_floating_point or ids.is_complex() or \
            ids.dtype == torch.bool:
        raise MemlensError(f"ids must be a 1-D tensor of integer token ids, got shape "
                           f"{tuple(ids.shape)} of {ids.dtype}")
    if ids.numel() < 2:
        raise MemlensError(f"ids has {ids.numel()} token(s): at least 2 are needed")
    V = model.encoder.vocab_size
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= V:
        raise MemlensError(f"ids: token id {lo if lo < 0 else hi} is outside the model's "
                           f"vocabulary (0..{V - 1})")
    return (check_option("batch", batch), check_option("bptt", bptt),
            devices.resolve_device(device, "device", allow_none=False))


@torch.no_grad()
def evaluate(model: LanguageModel, ids: torch.Tensor, batch: int = 10, bptt: int = 70,
             device: torch.device | str = "cpu") -> float:
    """Mean negative log-likelihood of a token stream, in nats per token.

    The stream is cut into ``batch`` contiguous streams read in windows of ``bptt`` steps,
    the state carried across windows (eval mode); the loss is averaged over every predicted
    token. Perplexity is ``exp`` of the result.

    Parameters
    ----------
    model : LanguageModel
        A memlens language model (:func:`load_checkpoint`, :func:`train`).
    ids : torch.Tensor
        1-D integer token ids, at least 2, each in 0..V-1 (e.g. ``vocab.encode(tokens)``).
    batch : int, optional
        Parallel streams, 1..2**20 (default 10; at most half the tokens are used).
    bptt : int, optional
        Window length, 1..2**20 (default 70).
    device : torch.device or str, optional
        Where to compute: "cpu" (default), "cuda", "cuda:N" or "auto".

    Returns
    -------
    float
        The mean cross-entropy in nats per token.

    Raises
    ------
    MemlensError
        When ``model`` is not a LanguageModel, ``ids`` is not a 1-D integer tensor of at
        least 2 ids within the vocabulary, or an option is out of range.
    """
    batch, bptt, device = _check_evaluate(model, ids, batch, bptt, device)
    model.eval()
    batch = max(1, min(batch, ids.numel() // 2))
    data = batchify(ids, batch).to(device)
    state = model.init_state(batch, device)
    total, count = 0.0, 0
    for inputs, targets in bptt_windows(data, bptt):
        logits, state = model(inputs, state)
        total += F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1),
                                 reduction="sum").item()
        count += targets.numel()
    return total / max(count, 1)


def _check(cfg: TrainConfig) -> None:
    """The options against their declarations in the option schema (one place for the CLI
    and the API: :data:`memlens.runtime.options.OPTIONS`)."""
    if cfg.optimizer not in ("sgd", "adam"):
        raise MemlensError(f"unknown optimizer {cfg.optimizer!r}: choose sgd or adam")
    check_fields(cfg, "layers", "emb", "hidden", "rank", "groups", "vocab_size", "min_freq",
                 "epochs", "bptt", "batch", "lr", "clip", "dropout", "seed", "max_tokens")


def _vocab_and_ids(cfg: TrainConfig, train_c: Corpus, valid_c: Corpus | None, log
                   ) -> tuple[Vocab, torch.Tensor, torch.Tensor | None]:
    """The vocabulary of the (capped) training tokens and the id streams of both corpora."""
    train_tokens = train_c.tokens[: cfg.max_tokens] if cfg.max_tokens else train_c.tokens
    vocab = Vocab.build(train_tokens, None if cfg.unit == "char" else cfg.vocab_size,
                        cfg.min_freq)
    if len(vocab) - 2 < MIN_SYMBOLS:
        raise MemlensError(f"the vocabulary has only {len(vocab) - 2} symbol(s) besides <unk> "
                           f"and <eos> (--min-freq {cfg.min_freq}): at least {MIN_SYMBOLS} are "
                           "needed for a meaningful language model")
    train_ids = vocab.encode(train_tokens)
    log(f"training tokens: {train_ids.numel()} of {len(train_c.tokens)}")
    if train_ids.numel() < 2 * cfg.batch:
        raise MemlensError(f"training corpus has {train_ids.numel()} tokens: too short for "
                           f"batch size {cfg.batch}")
    valid_ids = None
    if valid_c is not None:
        valid_ids = vocab.encode(valid_c.tokens)
        log(f"validation OOV rate: {100 * vocab.oov_rate(valid_c.tokens):.2f}%")
    return vocab, train_ids, valid_ids


def _build_model(cfg: TrainConfig, model_cfg: dict, vocab: Vocab, device: torch.device, log
                 ) -> tuple[LanguageModel, list[torch.nn.Parameter], torch.optim.Optimizer,
                            float]:
    """The seeded model (with fixed pretrained embeddings when asked), its trainable
    parameters, the optimizer and its base learning rate."""
    torch.manual_seed(cfg.seed)
    model = LanguageModel(model_cfg, len(vocab))
    model.vocab = vocab
    if cfg.pretrained:
        table, found = load_word2vec(cfg.pretrained, vocab, cfg.emb, cfg.seed)
        model.encoder.embedding.weight.data.copy_(table)
        log(f"pretrained embeddings (fixed): {found}/{len(vocab)} vocabulary words found")
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr if cfg.lr is not None else (1.0 if cfg.optimizer == "sgd" else 2e-3)
    opt = (torch.optim.SGD(params, lr=lr) if cfg.optimizer == "sgd"
           else torch.optim.Adam(params, lr=lr))
    return model, params, opt, lr


@contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """Flush subnormal floats to zero on CPU while the block runs, then restore the setting.

    Subnormal (denormal) values appear in the gradients of saturated LSTM gates after a few
    epochs; x86 CPUs compute with them 10-100x more slowly, which made ``memlens train``
    epochs grow from 11 s to 295 s (issue 24's in-domain experiment). Flushing changes values
    only below 1.2e-38 in magnitude. No-op on other devices."""
    if device.type != "cpu":
        yield
        return
    was_on = float((torch.tensor([1e-39]) * 1.0).item()) == 0.0  # torch has no getter
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def _train_epoch(model: LanguageModel, opt: torch.optim.Optimizer, params: list, data: Tensor,
                 cfg: TrainConfig, epoch: int, device: torch.device) -> tuple[float, int]:
    """One pass of truncated BPTT over ``data`` (T x B ids, state carried across windows);
    returns (summed token loss, tokens). SGD steps on the window loss summed over time
    (mean token loss x window length), Adam on the mean token loss."""
    model.train()
    state = model.init_state(cfg.batch, device)
    total, count = 0.0, 0
    n_windows = math.ceil((data.shape[0] - 1) / cfg.bptt)
    with progress_bar(n_windows, cfg.progress, f"epoch {epoch}",
                      iterable=bptt_windows(data, cfg.bptt), unit="win", leave=False) as bar:
        for inputs, targets in bar:
            state = model.encoder.detach_state(state)
            logits, state = model(inputs, state)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
            opt.zero_grad(set_to_none=True)
            (loss * inputs.shape[0] if cfg.optimizer == "sgd" else loss).backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            total += loss.item() * targets.numel()
            count += targets.numel()
            bar.set_postfix(loss=f"{total / count:.3f}", ppl=f"{math.exp(total / count):.1f}")
    return total, count


def train(cfg: TrainConfig | None = None, *, train_corpus: Corpus | None = None,
          valid_corpus: Corpus | None = None, log=print, **kwargs: Any) -> LanguageModel:
    """Train a language model and write the best checkpoint (by validation loss) to ``cfg.out``.

    The vocabulary is built from the (capped) training tokens; after every epoch the
    checkpoint is rewritten when the validation loss (training loss without a validation
    corpus) improves, and the per-epoch state is saved beside it for ``resume``.

    Parameters
    ----------
    cfg : TrainConfig or None, optional
        The options; None (default): ``TrainConfig(**kwargs)``, with ``train`` "" when only
        corpora are given.
    train_corpus : Corpus or None, optional
        A ready training corpus, used instead of ``cfg.train`` (default None).
    valid_corpus : Corpus or None, optional
        A ready validation corpus, used instead of ``cfg.valid`` (default None).
    log : callable, optional
        Called with one line of text per message (default ``print``).
    **kwargs
        The fields of :class:`TrainConfig`, when ``cfg`` is None.

    Returns
    -------
    LanguageModel
        The best model (eval mode) with ``.vocab``, ``.config`` and ``.history`` (one record
        per epoch: epoch, train_loss, valid_loss, valid_ppl, lr, seconds).

    Raises
    ------
    MemlensError
        When an option is out of range, a corpus is missing or malformed, the vocabulary has
        fewer than 3 symbols besides the specials, or the corpus is too short for the batch.
    Interrupted
        On Ctrl-C / SIGTERM after at least one finished epoch (resume with
        ``resume=True``).
    """
    if cfg is None:
        cfg = TrainConfig(**{"train": "", **kwargs})
    _check(cfg)
    model_cfg = check_config({"arch": cfg.arch, "layers": cfg.layers, "emb": cfg.emb,
                              "hidden": cfg.hidden, "dropout": cfg.dropout, "tied": cfg.tied,
                              "rank": cfg.rank, "groups": cfg.groups, "unit": cfg.unit,
                              "fixed_embeddings": cfg.pretrained is not None})
    device = resolve_device(cfg.device)
    train_c = train_corpus or load_corpus(cfg.train, cfg.format, cfg.unit)
    valid_c = valid_corpus or (load_corpus(cfg.valid, cfg.format, cfg.unit) if cfg.valid
                               else None)
    vocab, train_ids, valid_ids = _vocab_and_ids(cfg, train_c, valid_c, log)
    model, params, opt, lr = _build_model(cfg, model_cfg, vocab, device, log)
    data = batchify(train_ids, cfg.batch).to(device)
    ck = RunCheckpoint(progress_path(cfg.out), train_fingerprint(cfg, train_ids, valid_ids),
                       every=0, kind="train")
    best, history, first = math.inf, [], 1
    if cfg.resume:
        best, history, first = load_progress(ck, model, opt)[:3]
        log(f"resuming after epoch {first - 1} from {ck.path}")
    saved = first - 1  # the last epoch whose state is in ck.path
    try:
        for epoch in range(first, cfg.epochs + 1):
            if cfg.optimizer == "sgd" and epoch > cfg.decay_after:
                for group in opt.param_groups:
                    group["lr"] = lr * cfg.decay ** (epoch - cfg.decay_after)
            start = time.time()
            with flush_denormals(device):  # subnormal gradients: 25x slower on CPU
                total, count = _train_epoch(model, opt, params, data, cfg, epoch, device)
            record = {"epoch": epoch, "train_loss": total / count,
                      "lr": opt.param_groups[0]["lr"], "seconds": time.time() - start}
            if valid_ids is not None:
                record["valid_loss"] = evaluate(model, valid_ids, device=device)
            key = record.get("valid_loss", record["train_loss"])
            record["valid_ppl"] = math.exp(key)
            history.append(record)
            log(f"epoch {epoch}: train ppl {math.exp(record['train_loss']):.2f}, "
                + (f"valid ppl {math.exp(record['valid_loss']):.2f}, " if valid_ids is not None
                   else "") + f"{record['seconds']:.0f}s")
            with deferred_interrupts():  # both files are written before a signal counts
                if key < best:
                    best = key
                    save_checkpoint(cfg.out, model, {"train": asdict(cfg), "history": history})
                ck.save(epoch_state(epoch, best, history, model, opt))
                saved = epoch
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise interrupted(ck, saved, cfg.epochs) from None
    best_model = load_checkpoint(cfg.out, device)
    ck.finish()
    best_model.history = history
    return best_model


def train_fingerprint(cfg: TrainConfig, train_ids: torch.Tensor,
                      valid_ids: torch.Tensor | None) -> str:
    """What must not change between an interrupted run and its resumption: the options
    (except resume, progress, device, out and epochs) and both id streams
    (:func:`~memlens.runtime.progress.fingerprint`)."""
    keep = {k: v for k, v in asdict(cfg).items()
            if k not in ("resume", "progress", "device", "out", "epochs")}
    return fingerprint(keep, train_ids, valid_ids)


def epoch_state(epoch: int, best: float, history: list, model: torch.nn.Module,
                opt: torch.optim.Optimizer, **extra: float) -> dict:
    """The payload saved after each finished ``epoch`` (``memlens train`` and ``memlens
    train-asr``): epoch, best score, history, weights, optimizer and torch RNG state, plus
    ``extra`` numbers (``elapsed``)."""
    return {"epoch": epoch, "best": best, "history": history, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "rng": torch.get_rng_state(), **extra}


def interrupted(ck: RunCheckpoint, saved: int, epochs: int) -> KeyboardInterrupt:
    """The exception for a Ctrl-C / SIGTERM during training: :class:`Interrupted` naming
    ``ck.path`` when ``saved`` (> 0) epochs are in it, else a plain KeyboardInterrupt."""
    if saved < 1 or not ck.enabled or not ck.path.is_file():
        return KeyboardInterrupt()
    return Interrupted(ck.path, saved, epochs, unit="epochs",
                       head=f"interrupted after epoch {saved} of {epochs}")


def load_progress(ck: RunCheckpoint, model: torch.nn.Module, opt, extra: tuple[str, ...] = ()
                  ) -> tuple[float, list, int, dict]:
    """Load the per-epoch training state of ``ck`` (``memlens train``, ``memlens train-asr``)
    into ``model`` / ``opt`` and the torch RNG; return (best, history, next epoch,
    {name: float} for the ``extra`` fields). A missing, foreign (other kind or fingerprint),
    old-format or damaged file is a one-line :class:`MemlensError` (``ck.load``)."""
    st = ck.load()
    try:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["rng"])
        epoch, best, history = int(st["epoch"]), float(st["best"]), list(st["history"])
        values = {name: float(st[name]) for name in extra}
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise MemlensError(f"training progress {ck.path} is damaged: "
                           f"{str(exc).splitlines()[0][:200]}") from None
    if not 1 <= epoch or len(history) != epoch:
        raise MemlensError(f"training progress {ck.path} is damaged (epoch {epoch})")
    return best, history, epoch + 1, values


def corpus_ids(model: LanguageModel, corpus: Corpus, log=None) -> torch.Tensor:
    """Encode a corpus with the model's vocabulary, reporting the OOV rate through ``log``."""
    if model.vocab is None:
        raise MemlensError("the model has no vocabulary")
    rate = model.vocab.oov_rate(corpus.tokens)
    if log is not None:
        log(f"OOV rate: {100 * rate:.2f}% of {len(corpus.tokens)} tokens map to <unk>")
    return model.vocab.encode(corpus.tokens)


def perplexity_report(model: LanguageModel, corpus: Corpus, device="cpu",
                      log=print) -> dict[str, float]:
    """Evaluate ``model`` on ``corpus``: nats/token, perplexity and bits per token."""
    ids = corpus_ids(model, corpus, log)
    nll = evaluate(model, ids, device=device)
    return {"tokens": ids.numel(), "nll": nll, "perplexity": math.exp(nll),
            "bits": nll / math.log(2), "unigram_perplexity": unigram_perplexity(model.vocab, ids)}


def unigram_perplexity(vocab: Vocab, ids: torch.Tensor) -> float:
    """Perplexity of the add-one-smoothed unigram model of the vocabulary's training counts.

    exp(-mean_t log p(w_t)) with p(w) = (count(w) + 1) / (sum of counts + V): the baseline a
    language model must beat on the same vocabulary.
    """
    counts = torch.tensor(vocab.counts, dtype=torch.float64) + 1.0
    logp = torch.log(counts / counts.sum())
    return math.exp(-logp[ids].mean().item())
