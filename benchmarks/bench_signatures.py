"""Benchmark: joint multi-lag decoder vs one scikit-learn LogisticRegression per lag.

Both see the same whitened states of a character LSTM (trained here for a few seconds on
WikiText-2 valid, or --model CKPT) and the same targets; the per-lag baseline is what
diagnostic-classifier tools do: ``LogisticRegression(max_iter=1000)`` (lbfgs, multinomial,
L2 C=1) fitted separately for every lag k = 0..K. Prints seconds for each, the speed-up and
the per-lag held-out accuracy difference.

    python benchmarks/bench_signatures.py [--model CKPT] [--train 20000] [--heldout 10000]
                                          [--max-delay 10] [--text PATH]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from memlens.analyses.signatures.decoders import JointDecoder, lag_targets
from memlens.analyses.signatures.symbols import build_symbols
from memlens.data import load_corpus
from memlens.models import load_checkpoint
from memlens.models.states import extract_states
from memlens.protocol import Site
from memlens.training import TrainConfig, train

HERE = Path(__file__).resolve().parent
TEXT = HERE.parent.parent / "shared" / "data" / "wikitext-2" / "valid.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--text", default=str(TEXT))
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--heldout", type=int, default=10000)
    ap.add_argument("--max-delay", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    if args.model:
        model = load_checkpoint(args.model)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model = train(TrainConfig(train=args.text, unit="char", max_tokens=100000,
                                      epochs=2, hidden=args.hidden, emb=16, optimizer="adam",
                                      dropout=0.0, out=f"{tmp}/m.pt", progress=False),
                          log=lambda *_: None)
    tokens = load_corpus(args.text, unit="char").tokens
    start = 200000  # states of text the model was not trained on
    tr_tok = tokens[start:start + args.train]
    he_tok = tokens[start + args.train:start + args.train + args.heldout]
    tr_ids, he_ids = model.vocab.encode(tr_tok).numpy(), model.vocab.encode(he_tok).numpy()
    view = Site(model.encoder.num_layers - 1, "hidden", "all")
    x_tr = extract_states(model.encoder, tr_ids, [view])[view]
    x_he = extract_states(model.encoder, he_ids, [view])[view]
    sym = build_symbols("chars", "char", tr_ids, itos=model.vocab.itos)
    y_tr = lag_targets(sym.classes(tr_ids), args.max_delay)
    y_he = lag_targets(sym.classes(he_ids), args.max_delay)
    heads = args.max_delay + 1
    print(f"states: {len(x_tr)} train / {len(x_he)} held-out, {x_tr.shape[1]} units, "
          f"{sym.size} symbols, lags 0..{args.max_delay}, torch threads "
          f"{torch.get_num_threads()}")

    # warm-up of both libraries (one-time initialisation is not what is compared)
    JointDecoder("linear", max_epochs=1).fit(x_tr[:2000], y_tr[:2000], sym.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        LogisticRegression(max_iter=5).fit(x_tr[:2000], y_tr[:2000, 0])

    t0 = time.perf_counter()
    dec = JointDecoder("linear").fit(x_tr, y_tr, sym.size)
    pred, _ = dec.evaluate(x_he, y_he)
    t_joint = time.perf_counter() - t0
    valid = y_he >= 0
    acc_joint = ((pred == y_he) & valid).sum(0) / valid.sum(0)

    # the baseline sees exactly the inputs the joint decoder sees (whitened states; on merely
    # standardised states lbfgs does not converge within max_iter and is far less accurate)
    z_tr = ((torch.from_numpy(x_tr) - dec._mean) @ dec._proj).numpy()
    z_he = ((torch.from_numpy(x_he) - dec._mean) @ dec._proj).numpy()
    # the joint decoder fits on the first 90% of the training states (the last 10% only
    # decide early stopping); the baseline fits on the same 90%
    n_fit = len(x_tr) - max(1, int(round(len(x_tr) * dec.val_fraction)))
    z_tr, y_fit = z_tr[:n_fit], y_tr[:n_fit]
    acc_sk = np.zeros(heads)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(heads):
            m_tr, m_he = y_fit[:, k] >= 0, y_he[:, k] >= 0
            clf = LogisticRegression(max_iter=1000).fit(z_tr[m_tr], y_fit[m_tr, k])
            acc_sk[k] = (clf.predict(z_he[m_he]) == y_he[m_he, k]).mean()
    t_sk = time.perf_counter() - t0

    print(f"{'lag':>4} {'joint':>8} {'sklearn':>8} {'diff':>7}")
    for k in range(heads):
        print(f"{k:>4} {acc_joint[k]:8.4f} {acc_sk[k]:8.4f} {acc_joint[k] - acc_sk[k]:+7.4f}")
    diff = np.abs(acc_joint - acc_sk).max()
    print(f"joint decoder (all {heads} lags, {dec.epochs} epochs): {t_joint:.2f} s")
    print(f"per-lag sklearn LogisticRegression ({heads} fits): {t_sk:.2f} s")
    print(f"speed-up: {t_sk / t_joint:.1f}x; max per-lag accuracy difference: "
          f"{100 * diff:.2f} points")


if __name__ == "__main__":
    main()
