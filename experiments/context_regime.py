"""Which context regime should I use? Two models trained from a zero state on short
sequences, each analysed in its training regime and with the state carried over a stream
(docs/context.md quotes the numbers).

    python experiments/context_regime.py      # about 10 minutes on 2 CPU cores

(a) A character LSTM (E=32, H=512; plain torch nn.Embedding / nn.LSTM / nn.Linear, wrapped with
    ``memlens.wrap``) trained as a next-character LM on independent 40-character windows of
    WikiText-2 valid, each from a zero state (Adam, no state carried between windows), then
    analysed on WikiText-2 test:
    * ``memlens.state_gradients`` (cell state, K=20) under ``stream`` and ``window:40``: the
      memory curve M(tau) (sum of singular values of the normalised mean gradient), the
      stability diagnostic (finite-time Lyapunov estimate, top-1% share, M(K)/M(0), flags)
      and whether a TrustWarning fired;
    * ``memlens.memory_signature`` (top layer's hidden output, lags 0..20, linear decoders)
      under ``stream`` and ``window:40``, beside its random-init control
      (``random_init_copy``), with the study's trust check
      (:func:`memlens.analyses.signatures.trust.check_trust`: control better, saturation).
(b) A character GRU (E=32, H=256) trained as a next-character LM over single words of
    WikiText-2 valid, one word per sequence from a zero state (the word's characters in,
    the next character and finally ``<eos>`` out), then analysed with signatures (lags
    0..8) over WikiText-2 test words, one word per line (the character stream
    ``w o r d <eos> w o r d <eos> ...`` that ``load_corpus(..., unit="char")`` makes of such a
    file) under ``stream`` (state carried across words) and ``sentence`` (reset after each
    ``<eos>``: every word from the zero state), with its random-init control.

Both models are also scored as language models in both regimes (bits per character).
Seeds: torch, numpy and the batch generator (``--seed``, default 0). Reads
../shared/data/wikitext-2 (MEMLENS_DATA overrides ../shared/data); skips with a message when it
is absent. Output: experiments/results/context_regime.json, docs/img/context-regime.png.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from types import SimpleNamespace

import numpy as np
import torch
from analysis import IMG, WT2, plt, save_summary
from torch import nn

import memlens
from memlens.analyses.signatures import random_init_copy
from memlens.analyses.signatures.trust import check_trust
from memlens.core.errors import TrustWarning
from memlens.data import Vocab, load_corpus
from memlens.data.text import tokenize_lines
from memlens.data.vocab import EOS, UNK

WINDOW = 40  # (a): the training window
SHOWN = (0, 1, 2, 5, 10, 15, 20)  # delays / lags quoted in the printout


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=512, help="(a) LSTM hidden size")
    p.add_argument("--epochs", type=float, default=4.0, help="(a) passes over WikiText-2 valid")
    p.add_argument("--grad-tokens", type=int, default=2000, help="(a) test characters analysed")
    p.add_argument("--sig-train", type=int, default=20000, help="decoder training characters")
    p.add_argument("--sig-heldout", type=int, default=5000, help="decoder held-out characters")
    p.add_argument("--gru-hidden", type=int, default=256, help="(b) GRU hidden size")
    p.add_argument("--gru-steps", type=int, default=3000, help="(b) training steps")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def seed_all(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def caught(fn, *args, **kwargs):
    """(fn's value, the TrustWarning lines it issued)."""
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always", TrustWarning)
        value = fn(*args, **kwargs)
    return value, [str(w.message) for w in got if issubclass(w.category, TrustWarning)]


def rounded(a, digits: int = 4) -> list:
    return [None if not np.isfinite(x) else round(float(x), digits) for x in np.asarray(a)]


def lm_bits(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean next-symbol cross entropy (bits) of T x B outputs against T x B targets (-1 out)."""
    logits = head(hidden).reshape(-1, head.out_features)
    nats = nn.functional.cross_entropy(logits, targets.reshape(-1), ignore_index=-1)
    return float(nats) / math.log(2)


# ---------------------------------------------------------------------------------------------
# (a) a character LSTM trained on independent 40-character windows


def train_window_lstm(ids: torch.Tensor, V: int, args, gen: torch.Generator) -> SimpleNamespace:
    """Embedding -> LSTM -> linear over windows of WINDOW + 1 characters drawn at random,
    each from a zero state; batches of 128, Adam lr 2e-3, gradient norm clipped at 1."""
    emb, rnn, head = nn.Embedding(V, 32), nn.LSTM(32, args.hidden), nn.Linear(args.hidden, V)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    steps = max(1, int(args.epochs * len(ids) / (128 * WINDOW)))
    t0, loss = time.time(), torch.tensor(float("nan"))
    for step in range(steps):
        first = torch.randint(0, len(ids) - WINDOW - 1, (128,), generator=gen)
        x = torch.stack([ids[a:a + WINDOW + 1] for a in first.tolist()], 1)  # (W+1) x B
        out, _ = rnn(emb(x[:-1]))  # zero initial state
        loss = nn.functional.cross_entropy(head(out).reshape(-1, V), x[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  lstm step {step + 1}/{steps}: {loss.item() / math.log(2):.3f} bits/char "
                  f"({time.time() - t0:.0f} s)", flush=True)
    return SimpleNamespace(emb=emb.eval(), rnn=rnn.eval(), head=head.eval(), steps=steps,
                           train_bits=loss.item() / math.log(2),
                           train_seconds=time.time() - t0)


@torch.no_grad()
def lstm_regime_bits(m: SimpleNamespace, ids: torch.Tensor) -> dict:
    """Test bits/char in both regimes on the same targets: one carried stream vs independent
    windows of WINDOW characters (each from zero; the first character of a window is context
    only in both, so the targets are the same)."""
    n = (len(ids) - 1) // WINDOW * WINDOW
    out, _ = m.rnn(m.emb(ids[:n + 1, None]))
    targets = ids[1:n + 1].clone()
    targets[WINDOW - 1::WINDOW] = -1  # predicted from a window's last position: no counterpart
    stream = lm_bits(m.head, out[:-1, 0], targets)
    x = ids[:n].reshape(-1, WINDOW).T  # W x windows
    ow, _ = m.rnn(m.emb(x))
    tw = torch.cat([x[1:], torch.full((1, x.shape[1]), -1)], 0)
    return {"stream": stream, f"window:{WINDOW}": lm_bits(m.head, ow, tw)}


def gradient_summary(result, warned: list[str]) -> dict:
    st = result.stability
    memory = result.spectrum(None).sum(1)
    return {"memory": rounded(memory), "mean_norm": rounded(st.mean_norm, 6),
            "top1_share": rounded(st.top1_share), "lyapunov_per_step": st.lyapunov,
            "memory_ratio_K_to_0": st.memory_ratio, "top1_share_max": st.max_top1_share,
            "flags": list(st.flags), "trust_warning": bool(warned), "warnings": warned,
            "pairs_at_K": int(st.counts[-1])}


def signature_pair(model, control, train, held, K: int, context: str, seed: int) -> dict:
    """Model and control signatures under one regime, and the study's trust check."""
    site = memlens.Site(layer=-1)
    sigs, warned = {}, []
    for role, net in (("model", model), ("control", control)):
        sig, w = caught(memlens.memory_signature, net, train, held, K, site, context=context,
                        seed=seed)
        sigs[role], warned = sig, warned + w
    entries = [SimpleNamespace(label="model", role=role, site=site, sig=s)
               for role, s in sigs.items()]
    flags, msgs = caught(check_trust, entries, context)
    out = {role: {"accuracy": rounded(s.accuracy), "ci_low": rounded(s.acc_low),
                  "ci_high": rounded(s.acc_high), "majority": rounded(s.majority),
                  "bits": rounded(s.bits, 3), "saturation": s.saturation,
                  "heldout_rows": int(s.n_heldout)} for role, s in sigs.items()}
    out["control_better_lags"] = flags["control_better_lags"]
    out["trust_warnings"] = warned + msgs
    return out


def part_a(args, gen: torch.Generator, vocab: Vocab, train_ids: torch.Tensor,
           test_ids: torch.Tensor) -> dict:
    print(f"(a) character LSTM H={args.hidden} on independent {WINDOW}-character windows")
    m = train_window_lstm(train_ids, len(vocab), args, gen)
    enc = memlens.wrap(m.emb, m.rnn, vocab=vocab, head=m.head)
    out = {"model": f"char LSTM E=32 H={args.hidden}, {m.steps} steps of 128 windows of "
                    f"{WINDOW} chars (zero state each), Adam 2e-3",
           "train_bits_last_batch": m.train_bits, "train_seconds": m.train_seconds,
           "test_bits_per_char": lstm_regime_bits(m, test_ids[:20000 + 1])}
    print("  test bits/char:", {k: round(v, 3) for k, v in out["test_bits_per_char"].items()})
    grads = {}
    stream = test_ids[:args.grad_tokens]
    for ctx in ("stream", f"window:{WINDOW}"):
        t0 = time.time()
        r, warned = caught(memlens.state_gradients, enc, stream, 20, context=ctx)
        grads[ctx] = gradient_summary(r, warned)
        grads[ctx]["seconds"] = time.time() - t0
        g = grads[ctx]
        print(f"  gradients {ctx}: M(tau) at {SHOWN} = "
              f"{[g['memory'][t] for t in SHOWN]}; lambda {g['lyapunov_per_step']:.3f}, "
              f"M(K)/M(0) {g['memory_ratio_K_to_0']:.3f}, top-1% max "
              f"{g['top1_share_max']:.3f}, flags {g['flags'] or 'none'} "
              f"({g['seconds']:.0f} s)", flush=True)
    out["gradients"] = grads
    control = random_init_copy(enc, seed=args.seed)
    tr = test_ids[:args.sig_train]
    he = test_ids[args.sig_train:args.sig_train + args.sig_heldout]
    sigs = {}
    for ctx in ("stream", f"window:{WINDOW}"):
        t0 = time.time()
        sigs[ctx] = signature_pair(enc, control, tr, he, 20, ctx, args.seed)
        sigs[ctx]["seconds"] = time.time() - t0
        print_signature("  signatures", ctx, sigs[ctx], SHOWN)
    out["signatures"] = sigs
    return out


def print_signature(prefix: str, ctx: str, s: dict, lags) -> None:
    lags = [k for k in lags if k < len(s["model"]["accuracy"])]
    print(f"{prefix} {ctx}: lags {lags}: model {[s['model']['accuracy'][k] for k in lags]}, "
          f"control {[s['control']['accuracy'][k] for k in lags]}; control better at "
          f"{s['control_better_lags'] or 'no lag'} ({s['seconds']:.0f} s)", flush=True)
    for w in s["trust_warnings"]:
        print(f"    TrustWarning: {w}")


# ---------------------------------------------------------------------------------------------
# (b) a character GRU trained on single words


def word_list(path) -> list[str]:
    """The words of a WikiText-2 file in order (no <unk>, no <eos>)."""
    return [w for w in load_corpus(path).tokens if w not in (UNK, EOS)]


def word_batch(words: list[str], vocab: Vocab, rows: list[int], cap: int = 20
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (L x B: each word's characters, padded with <eos>) and targets (L x B: the next
    character, <eos> after the last, -1 on padding). Padding comes after the word, so it never
    reaches a target's state."""
    picked = [list(words[i])[:cap] for i in rows]
    L = max(len(w) for w in picked)
    x = torch.full((L, len(rows)), vocab.eos_id, dtype=torch.long)
    y = torch.full((L, len(rows)), -1, dtype=torch.long)
    for b, w in enumerate(picked):
        ids = vocab.encode(w + [EOS])
        x[:len(w), b] = ids[:-1]
        y[:len(w), b] = ids[1:]
    return x, y


def train_word_gru(words: list[str], vocab: Vocab, args, gen: torch.Generator
                   ) -> SimpleNamespace:
    """Embedding -> GRU -> linear, batches of 256 random words, each from a zero state; Adam
    lr 3e-3, gradient norm clipped at 1."""
    V, H = len(vocab), args.gru_hidden
    emb, rnn, head = nn.Embedding(V, 32), nn.GRU(32, H), nn.Linear(H, V)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    t0, bits = time.time(), float("nan")
    for step in range(args.gru_steps):
        rows = torch.randint(0, len(words), (256,), generator=gen).tolist()
        x, y = word_batch(words, vocab, rows)
        out, _ = rnn(emb(x))
        loss = nn.functional.cross_entropy(head(out).reshape(-1, V), y.reshape(-1),
                                           ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bits = loss.item() / math.log(2)
        if step % 300 == 0 or step == args.gru_steps - 1:
            print(f"  gru step {step + 1}/{args.gru_steps}: {bits:.3f} bits/char "
                  f"({time.time() - t0:.0f} s)", flush=True)
    return SimpleNamespace(emb=emb.eval(), rnn=rnn.eval(), head=head.eval(), train_bits=bits,
                           train_seconds=time.time() - t0)


@torch.no_grad()
def gru_regime_bits(m: SimpleNamespace, vocab: Vocab, words: list[str]) -> dict:
    """Test bits/char over the same targets (each word's characters after its first, and its
    <eos>): every word from zero (its training regime) vs the state carried across words."""
    x, y = word_batch(words, vocab, list(range(len(words))))
    out, _ = m.rnn(m.emb(x))
    per_word = lm_bits(m.head, out, y)
    ids = vocab.encode(tokenize_lines(words, unit="char"))  # w o r d <eos> w o r d <eos> ...
    hs, _ = m.rnn(m.emb(ids[:, None]))
    tgt = ids[1:].clone()
    tgt[(ids[:-1] == vocab.eos_id)] = -1  # a word's first character: context only in both
    return {"sentence": per_word, "stream": lm_bits(m.head, hs[:-1, 0], tgt)}


def part_b(args, gen: torch.Generator) -> dict:
    print(f"(b) character GRU H={args.gru_hidden} on single words")
    train_words, test_words = word_list(WT2 / "valid.txt"), word_list(WT2 / "test.txt")
    chars = [c for w in train_words for c in w]
    vocab = Vocab.build(chars)
    m = train_word_gru(train_words, vocab, args, gen)
    enc = memlens.wrap(m.emb, m.rnn, vocab=vocab, head=m.head)
    # one word per line, as load_corpus(FILE, unit="char") reads such a file
    lines = tokenize_lines(test_words[:12000], unit="char")
    cut = next(i for i in range(args.sig_train, len(lines)) if lines[i] == EOS) + 1
    end = next(i for i in range(cut + args.sig_heldout, len(lines)) if lines[i] == EOS) + 1
    tr, he = lines[:cut], lines[cut:end]
    out = {"model": f"char GRU E=32 H={args.gru_hidden}, {args.gru_steps} steps of 256 single "
                    "words (zero state each), Adam 3e-3",
           "train_bits_last_batch": m.train_bits, "train_seconds": m.train_seconds,
           "test_bits_per_char": gru_regime_bits(m, vocab, test_words[:5000]),
           "train_chars": len(tr), "heldout_chars": len(he)}
    print("  test bits/char:", {k: round(v, 3) for k, v in out["test_bits_per_char"].items()})
    control = random_init_copy(enc, seed=args.seed)
    sigs = {}
    for ctx in ("stream", "sentence"):
        t0 = time.time()
        sigs[ctx] = signature_pair(enc, control, tr, he, 8, ctx, args.seed)
        sigs[ctx]["seconds"] = time.time() - t0
        print_signature("  signatures", ctx, sigs[ctx], range(9))
    out["signatures"] = sigs
    return out


# ---------------------------------------------------------------------------------------------


def figure(a: dict, b: dict) -> None:
    fig, axes = plt().subplots(1, 3, figsize=(15, 4))
    for ctx, g in a["gradients"].items():
        axes[0].plot(g["memory"], marker="o", ms=3, label=f"{ctx} (lambda "
                     f"{g['lyapunov_per_step']:.2f}, flags: {', '.join(g['flags']) or 'none'})")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("delay tau (characters)")
    axes[0].set_ylabel("memory M(tau): sum of singular values")
    axes[0].set_title(f"(a) LSTM trained on {WINDOW}-char windows: state gradients")
    for ax, part, title in ((axes[1], a, "(a) the same LSTM: signatures"),
                            (axes[2], b, "(b) GRU trained on single words: signatures")):
        for i, (ctx, s) in enumerate(part["signatures"].items()):
            for role, ls in (("model", "-"), ("control", "--")):
                acc = s[role]["accuracy"]
                lags = np.arange(len(acc))
                ax.plot(lags, acc, ls, marker="o", ms=3, color=f"C{i}",
                        label=f"{role}, {ctx}")
                ax.fill_between(lags, s[role]["ci_low"], s[role]["ci_high"], color=f"C{i}",
                                alpha=0.15, lw=0)
        ax.set_xlabel("lag k (characters)")
        ax.set_ylabel("held-out accuracy of x[t-k] from h[t]")
        ax.set_title(title)
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("Which context regime? Models trained from a zero state, analysed in their "
                 "training regime and with the state carried (dashed: random-init control)")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "context-regime.png", dpi=110)
    print(f"figure: {IMG / 'context-regime.png'}")


def main() -> None:
    args = parse_args()
    if not (WT2 / "valid.txt").exists() or not (WT2 / "test.txt").exists():
        print(f"skipped: WikiText-2 not found at {WT2} (set MEMLENS_DATA to the folder that "
              "holds wikitext-2/)")
        return
    torch.set_num_threads(args.threads)
    t0 = time.time()
    train_chars = load_corpus(WT2 / "valid.txt", unit="char").tokens
    test_chars = load_corpus(WT2 / "test.txt", unit="char").tokens
    vocab = Vocab.build(train_chars)
    a = part_a(args, seed_all(args.seed), vocab, vocab.encode(train_chars),
               vocab.encode(test_chars))
    b = part_b(args, seed_all(args.seed))
    summary = {"settings": vars(args), "data": str(WT2), "lstm_windows": a, "gru_words": b,
               "seconds": time.time() - t0, "torch": torch.__version__,
               "memlens": memlens.__version__}
    save_summary("context_regime", summary)
    figure(a, b)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
