"""Benchmark: word-level memory signature with every type as a symbol, fast vs joint decoder.

The case of the scale issue: a word LSTM (``--model CKPT``, or trained here for one epoch on
WikiText-2 valid: emb 64, hidden 256, 10,000-word vocabulary, seed 0, as
``memlens train --train ../shared/data/wikitext-2/valid.txt --arch lstm --emb 64 --hidden 256
--vocab-size 10000 --epochs 1 --seed 0``), the hidden states of the first ``--train`` tokens of
WikiText-2 test (decoder training) and the next ``--heldout`` tokens (held-out), lags 0..K,
and every token type of the decoder-training text as a symbol (``symbols="chars"``, several
thousand classes). Prints, in one run, seconds and per-lag held-out accuracy of
``decoder="linear-fast"`` (:class:`~memlens.analyses.signatures.decoders.FastLinearDecoder`)
and of the joint SGD decoder ``decoder="linear"`` (about 10 minutes on 2 cores), and the
largest per-lag accuracy difference. ``--skip-old`` reuses the joint decoder's result cached
in ``--cache`` by a previous run of the same case (its seconds are then not re-measured: say
so when quoting).

    python benchmarks/bench_word_signatures.py [--model CKPT] [--train 20000] [--heldout 5000]
        [--max-delay 10] [--skip-old] [--cache runs/bench_word_old.json] [--scale-stride N]
        [--fast-lr 0.01] [--sklearn-lags 2,5]

``--sklearn-lags`` also fits scikit-learn's ``LogisticRegression(C=1)`` (lbfgs, tol 1e-5, run
to convergence) on the given lags, on the same whitened training rows as the joint decoders
(the first 90%): the optimum of the objective both SGD decoders approximate (4-9 minutes per
lag here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from memlens.analyses.signatures.decoders import lag_targets, make_decoder
from memlens.analyses.signatures.symbols import build_symbols
from memlens.data import load_corpus
from memlens.models import load_checkpoint
from memlens.models.states import extract_states
from memlens.protocol import Site

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "wikitext-2"
DEFAULT_MODEL = HERE.parent / "runs" / "wt2-lstm-e1.pt"


def accuracy(dec, x, y) -> np.ndarray:
    pred, _ = dec.evaluate(x, y)
    valid = y >= 0
    return ((pred == y) & valid).sum(0) / np.maximum(valid.sum(0), 1)


def lag_list(text: str) -> list[int]:
    """``--sklearn-lags``: comma-separated non-negative lags."""
    try:
        lags = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of lags: {text!r}"
                                         ) from None
    if any(k < 0 for k in lags):
        raise argparse.ArgumentTypeError(f"lags must be >= 0: {text!r}")
    return lags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL),
                    help="word checkpoint (trained here if the default path is missing)")
    ap.add_argument("--text", default=str(DATA / "test.txt"))
    ap.add_argument("--lm-train", default=str(DATA / "valid.txt"))
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--heldout", type=int, default=5000)
    ap.add_argument("--max-delay", type=int, default=10)
    ap.add_argument("--skip-old", action="store_true",
                    help="reuse the joint decoder's cached result instead of re-running it")
    ap.add_argument("--old-only", action="store_true",
                    help="only run (and cache) the joint decoder")
    ap.add_argument("--scale-stride", type=int, default=None,
                    help="linear-fast: fit the group scales on every N-th early-stopping row "
                         "(default: the decoder's, 2)")
    ap.add_argument("--fast-lr", type=float, default=None,
                    help="linear-fast: Adam learning rate of its refinement epochs (default 0.01)")
    ap.add_argument("--sklearn-lags", type=lag_list, default=[],
                    help="comma-separated lags to also fit with scikit-learn, e.g. 2,5")
    ap.add_argument("--cache", default=str(HERE.parent / "runs" / "bench_word_old.json"))
    args = ap.parse_args()
    if any(k > args.max_delay for k in args.sklearn_lags):
        ap.error(f"--sklearn-lags beyond --max-delay {args.max_delay}")
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    if not Path(args.model).exists():
        if args.model != str(DEFAULT_MODEL):
            sys.exit(f"no checkpoint {args.model}")
        subprocess.run(["memlens", "train", "--train", args.lm_train, "--arch", "lstm",
                        "--emb", "64", "--hidden", "256", "--vocab-size", "10000",
                        "--epochs", "1", "--seed", "0", "--out", args.model], check=True)
    model = load_checkpoint(args.model)
    tokens = load_corpus(args.text, unit="word").tokens
    tr_tok = tokens[:args.train]
    he_tok = tokens[args.train:args.train + args.heldout]
    tr_ids, he_ids = model.vocab.encode(tr_tok).numpy(), model.vocab.encode(he_tok).numpy()
    view = Site(model.encoder.num_layers - 1, "hidden", "all")
    x_tr = extract_states(model.encoder, tr_ids, [view])[view]
    x_he = extract_states(model.encoder, he_ids, [view])[view]
    sym = build_symbols("chars", "word", tr_ids, itos=model.vocab.itos)  # every type
    y_tr = lag_targets(sym.classes(tr_ids), args.max_delay)
    y_he = lag_targets(sym.classes(he_ids), args.max_delay)
    heads = args.max_delay + 1
    case = {"model": str(args.model), "text": str(args.text), "train": len(tr_ids),
            "heldout": len(he_ids), "max_delay": args.max_delay, "symbols": sym.size,
            "units": int(x_tr.shape[1])}
    print(f"states: {len(x_tr)} train / {len(x_he)} held-out, {x_tr.shape[1]} units, "
          f"{sym.size} symbols (every type), lags 0..{args.max_delay}, torch threads "
          f"{torch.get_num_threads()}", flush=True)

    # warm-up (one-time library initialisation is not what is compared)
    make_decoder("linear-fast").fit(x_tr[:2000], y_tr[:2000], sym.size)

    if not args.old_only:
        t0, c0 = time.perf_counter(), time.process_time()
        options = {}
        if args.scale_stride is not None:
            options["scale_stride"] = args.scale_stride
        if args.fast_lr is not None:
            options["lr"] = args.fast_lr
        fast = make_decoder("linear-fast", **options).fit(x_tr, y_tr, sym.size)
        t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0
        acc_fast = accuracy(fast, x_he, y_he)
        t_fast, c_fast = time.perf_counter() - t0, time.process_time() - c0
        phases = dict(fast.timings)
        lda_scales = [sum(v[i] for v in phases.values()) for i in (0, 1)]
        phases["whitening, epochs, calibration"] = (t_fit - lda_scales[0],
                                                    c_fit - lda_scales[1])
        phases["held-out evaluation"] = (t_fast - t_fit, c_fast - c_fit)
        print(f"linear-fast: {t_fast:.2f} s wall, {c_fast:.2f} s CPU (this process, all "
              f"threads) ({fast.epochs} refinement epochs, best epoch per lag "
              f"{fast.best_epoch.tolist()})", flush=True)
        for name, (w, c) in phases.items():
            print(f"  {name}: {w:.2f} s wall, {c:.2f} s CPU")

    cache = Path(args.cache)
    old = None
    if args.skip_old and cache.exists():
        old = json.loads(cache.read_text())
        if old.get("case") != case:
            print("cached joint-decoder result is for another case: re-running it")
            old = None
    fresh = old is None
    if fresh:
        t0 = time.perf_counter()
        dec = make_decoder("linear").fit(x_tr, y_tr, sym.size)
        acc_old = accuracy(dec, x_he, y_he)
        t_old = time.perf_counter() - t0
        old = {"case": case, "seconds": t_old, "accuracy": acc_old.tolist(),
               "epochs": dec.epochs}
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(old, indent=1))
    acc_old, t_old = np.array(old["accuracy"]), old["seconds"]
    if args.old_only:
        print(f"linear joint SGD ({old['epochs']} epochs): {t_old:.2f} s; accuracy per lag "
              + " ".join(f"{a:.4f}" for a in acc_old))
        return

    print(f"{'lag':>4} {'fast':>8} {'joint':>8} {'diff':>7}")
    for k in range(heads):
        print(f"{k:>4} {acc_fast[k]:8.4f} {acc_old[k]:8.4f} {acc_fast[k] - acc_old[k]:+7.4f}")
    diff = np.abs(acc_fast - acc_old).max()
    print(f"linear-fast (all {heads} lags): {t_fast:.2f} s wall, {c_fast:.2f} s CPU")
    print(f"linear joint SGD ({old['epochs']} epochs): {t_old:.2f} s"
          + ("" if fresh else " (cached from a previous run, not re-measured)"))
    worst = (acc_fast - acc_old).min()
    print(f"speed-up: {t_old / t_fast:.1f}x; max per-lag accuracy difference: "
          f"{100 * diff:.2f} points; largest shortfall of linear-fast below linear: "
          f"{max(0.0, -100 * worst):.2f} points")
    for k in args.sklearn_lags:
        acc, seconds, iters = sklearn_lag(fast, x_tr, y_tr, x_he, y_he, k)
        print(f"sklearn LogisticRegression lag {k}: {acc:.4f} ({iters} iterations, "
              f"{seconds:.0f} s); linear-fast {acc_fast[k] - acc:+.4f}, linear "
              f"{acc_old[k] - acc:+.4f}", flush=True)


def sklearn_lag(dec, x_tr, y_tr, x_he, y_he, k: int) -> tuple[float, float, int]:
    """Held-out accuracy, seconds and iterations of LogisticRegression(C=1) at lag ``k`` on
    the decoder's whitened training rows (the first 90%, as the joint decoders train on)."""
    from sklearn.linear_model import LogisticRegression

    n_tr = len(x_tr) - int(round(len(x_tr) * dec.val_fraction))
    z_tr, z_he = dec._rows(x_tr, 0, n_tr).numpy(), dec._rows(x_he, 0, len(x_he)).numpy()
    m_tr, m_he = y_tr[:n_tr, k] >= 0, y_he[:, k] >= 0
    t0 = time.perf_counter()
    clf = LogisticRegression(C=1.0, max_iter=2000, tol=1e-5).fit(z_tr[m_tr], y_tr[:n_tr][m_tr, k])
    acc = float((clf.predict(z_he[m_he]) == y_he[m_he, k]).mean())
    return acc, time.perf_counter() - t0, int(clf.n_iter_[0])


if __name__ == "__main__":
    main()
