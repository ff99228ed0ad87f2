"""Experiment 10: does average memory depend on the type of data? (Verwimp et al. 2020 run
the same recipe on PTB and WikiText-2; issue 24, item 5, "data type".)

Three kinds of text at MATCHED training-token counts: news (PTB valid, all of it: N tokens with
the sentence ends), encyclopaedic (the first N tokens of WikiText-2 valid) and web text (the
first N tokens of UD English EWT train); ``memlens train --max-tokens N``, N = the PTB count.
The same recipe for all: 1-layer word LSTM, E=64, H=128, vocabulary cap 10k (from the N
training tokens), the default SGD recipe (lr 1, clip 5, dropout 0.5, BPTT 35, batch 20),
EPOCHS epochs, best checkpoint by validation perplexity. Validation and analysis text of each
model's own kind, disjoint: PTB test (first 40,000 tokens validation, the next 20,000
analysed), WikiText-2 test (same cut), EWT test (validation) and EWT dev (the first 20,000
tokens analysed). Seeds 0 and 1 per corpus.

Analysis: state gradients of the cell state, K = 20, on 20,000 positions of each model's own
kind (the same count for every model), 20 contiguous blocks, 200 block-bootstrap resamples.
Reported per delay: memory (sum of singular values of the normalised average gradient, with
its interval), relative memory sum_sv(tau) / sum_sv(0) (the three models have different
embedding spaces; the relative curve compares their decay), the decay law fitted to the
relative curve (tau 1..K), and the selectiveness (effective rank, with interval).

Verdict rule, fixed before the numbers were seen. The relative memory of a model at delay tau
gets the conservative interval [ci_low(tau) / ci_high(0), ci_high(tau) / ci_low(0)] (from the
block-bootstrap intervals of sum_sv, as experiment 12). At each of the delays 5, 10 and 20 the
corpora are ranked by relative memory per seed. **agree** (memory depends on the data type):
both seeds give the same order at every one of these delays and, at every one, each corpus's
intervals (both seeds) lie above the next corpus's intervals (both seeds): the differences are
larger than the seed spread and the within-model uncertainty. **disagree**: at every one of
these delays, in every seed, the three corpora's intervals overlap pairwise. **inconclusive**
otherwise (e.g. the order changes between seeds, or the seed spread covers a difference).

    python experiments/exp10_data_type.py

Runtime on one thread of the 2 shared CPU cores: training 20 epochs about 1.5-2 min per model
(6 models), state gradients 30-160 s per model (one run took 486 s under contention); a rerun
with everything cached in runs/exp10/ takes about 30 s (the perplexities are recomputed).

Caches under runs/exp10/ (slices, checkpoints, result directories): a rerun skips finished
work. Output: experiments/results/exp10.json, docs/img/exp10-data-type.png.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import numpy as np
from analysis import DATA, IMG, RUNS, WT2, fit_decay, fmt_ci, plt, save_summary

import memlens
from memlens.data.corpus import load_corpus
from memlens.protocol import Site
from memlens.runtime.options import as_options

OUT = RUNS / "exp10"
EWT = DATA / "ud-english-ewt"
PTB = DATA / "ptb"
EPOCHS = 20
SEEDS = (0, 1)
K = 20
ANALYSED = 20_000
VALID = 40_000
DELAYS = (1, 5, 10, 20)
VERDICT_DELAYS = (5, 10, 20)
KINDS = ("news (PTB)", "encyclopaedic (WikiText-2)", "web (EWT)")
CLAIM = "average memory depends on the type of data"


def tokens(path, fmt: str = "text") -> list[str]:
    return list(load_corpus(str(path), format=fmt).tokens)


def write(tokens_: list[str], name: str):
    """A slice as a text file in runs/exp10 (sentence ends as line breaks)."""
    path = OUT / name
    if not path.exists():
        text = " ".join(tokens_).replace(" <eos> ", "\n").replace(" <eos>", "\n")
        path.write_text(text if text.endswith("\n") else text + "\n")
    return path


def setup() -> dict:
    """{kind: (train file, format, valid file, analysis tokens)} and N."""
    OUT.mkdir(parents=True, exist_ok=True)
    n = len(tokens(PTB / "ptb.valid.txt"))
    ptb_test, wt2_test = tokens(PTB / "ptb.test.txt"), tokens(WT2 / "test.txt")
    data = {
        KINDS[0]: (PTB / "ptb.valid.txt", "text",
                   write(ptb_test[:VALID], "ptb-valid.txt"), ptb_test[VALID:VALID + ANALYSED]),
        KINDS[1]: (WT2 / "valid.txt", "text",
                   write(wt2_test[:VALID], "wt2-valid.txt"), wt2_test[VALID:VALID + ANALYSED]),
        KINDS[2]: (EWT / "en_ewt-ud-train.conllu", "conllu", EWT / "en_ewt-ud-test.conllu",
                   tokens(EWT / "en_ewt-ud-dev.conllu", "conllu")[:ANALYSED]),
    }
    return {"n": n, "data": data}


def check_tokens(data: dict, n: int) -> dict:
    """{kind: (tokens trained on, tokens in the file, word types and sentence ends in the first
    N)}: memlens train cuts the loaded corpus to its first N tokens
    (src/memlens/training/lm.py, _vocab_and_ids); every corpus must have N."""
    counts = {}
    for kind, (train_file, fmt, _, _) in data.items():
        all_ = tokens(train_file, fmt)
        total, first = len(all_), all_[:n]
        counts[kind] = (len(first), total, len(set(first)), first.count("<eos>"))
        if total < n:
            raise SystemExit(f"{kind}: only {total} training tokens, fewer than N = {n}")
    return counts


def logged(kind: str, seed: int) -> dict:
    """What the training log says: the training-token count (logged since session 5) and the
    validation OOV rate."""
    out = {}
    for line in (OUT / f"train-{slug(kind)}-s{seed}.log").read_text().splitlines():
        if line.startswith("training tokens:"):
            out["logged_train_tokens"] = int(line.split(":")[1].split()[0])
        elif line.startswith("validation OOV rate:"):
            out["valid_oov"] = float(line.split(":")[1].strip().rstrip("%")) / 100
    return out


def slug(kind: str) -> str:
    return kind.split("(")[1].rstrip(")").lower().replace("-", "")


def train(kind: str, spec, n: int, seed: int):
    out = OUT / f"lstm-{slug(kind)}-s{seed}.pt"
    log_path = OUT / f"train-{slug(kind)}-s{seed}.log"
    if out.exists() and log_path.exists() and "best epoch" in log_path.read_text():
        return out  # a finished run (the checkpoint is rewritten after every better epoch)
    train_file, fmt, valid, _ = spec
    cmd = [sys.executable, "-m", "memlens", "train", "--train", str(train_file), "--valid",
           str(valid), "--format", fmt, "--arch", "lstm", "--emb", "64", "--hidden", "128",
           "--vocab-size", "10000", "--epochs", str(EPOCHS), "--max-tokens", str(n),
           "--seed", str(seed), "--device", "cpu", "--no-progress", "--overwrite",
           "--out", str(out)]
    if fmt == "conllu" and valid.suffix != ".conllu":
        raise SystemExit("the EWT validation file must be CoNLL-U")
    print("+ memlens", " ".join(cmd[3:]), flush=True)
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"training {kind} seed {seed} failed: see {log.name}")
    return out


def analyse(kind: str, spec, path, seed: int):
    out = OUT / f"sg-{slug(kind)}-s{seed}"
    model = memlens.load_checkpoint(path)
    text = spec[3]
    if not (out / "result.json").exists():
        t0 = time.time()
        r = memlens.state_gradients(model, model.vocab.encode(text), K,
                                    site=Site(readout="cell"), options=as_options(device="cpu"))
        r.save(out)
        print(f"  gradients {kind} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    from memlens.models.lm import LanguageModel  # noqa: F401  (type of the checkpoint)
    from memlens.training.lm import evaluate

    ids = model.vocab.encode(text)
    history = (getattr(model, "extra", None) or {}).get("history") or []
    return out, {"test_ppl": math.exp(evaluate(model, ids)),
                 "valid_ppl": min((h["valid_ppl"] for h in history if "valid_ppl" in h),
                                  default=None),
                 "analysis_unk": float(np.mean([w not in model.vocab.stoi or w == "<unk>"
                                                for w in text])),
                 "vocab": len(model.vocab)}


def read(out) -> dict:
    """Overall rows: sum_sv and eff_rank [value, low, high] per delay 0..K."""
    from memlens.results import load_result

    f = load_result(out).to_frame()
    f = f[f["class"] == "all"].sort_values("delay")
    return {"sum_sv": f[["sum_sv", "ci_low", "ci_high"]].to_numpy().tolist(),
            "eff_rank": f[["eff_rank", "eff_rank_low", "eff_rank_high"]].to_numpy().tolist()}


def verdict(models: list[dict]) -> dict:
    """The rule of the module docstring on the relative memory and its intervals."""
    def get(kind, seed):
        return next(m for m in models if m["kind"] == kind and m["seed"] == seed)

    orders, separated, all_overlap = [], [], []
    for t in VERDICT_DELAYS:
        per_seed = [sorted(KINDS, key=lambda k: -get(k, s)["relative"][t]) for s in SEEDS]
        orders.append(all(o == per_seed[0] for o in per_seed))
        lows = {k: min(get(k, s)["relative_ci"][t][0] for s in SEEDS) for k in KINDS}
        highs = {k: max(get(k, s)["relative_ci"][t][1] for s in SEEDS) for k in KINDS}
        seq = per_seed[0]
        separated.append(all(lows[a] > highs[b] for a, b in zip(seq, seq[1:])))
        all_overlap.append(all(
            get(a, s)["relative_ci"][t][0] <= get(b, s)["relative_ci"][t][1]
            for s in SEEDS for a in KINDS for b in KINDS if a != b))
    if all(orders) and all(separated):
        v = "agree"
    elif all(all_overlap):
        v = "disagree"
    else:
        v = "inconclusive"
    return {"verdict": v, "verdict_delays": list(VERDICT_DELAYS),
            "same_order_per_delay": orders, "separated_per_delay": separated,
            "all_overlap_per_delay": all_overlap}


def main() -> None:
    setup_ = setup()
    n, data = setup_["n"], setup_["data"]
    counts = check_tokens(data, n)
    print(f"matched training tokens N = {n}: " + ", ".join(
        f"{k} {c[0]} of {c[1]} ({c[2]} types, {c[3]} <eos>)" for k, c in counts.items()),
        flush=True)
    models = []
    for kind, spec in data.items():
        for seed in SEEDS:
            path = train(kind, spec, n, seed)
            out, stats = analyse(kind, spec, path, seed)
            vals = read(out)
            s = np.array([row[0] for row in vals["sum_sv"]])
            rel = s / s[0]
            fit = fit_decay(np.arange(K + 1), rel)
            models.append({"kind": kind, "seed": seed, "train_tokens": counts[kind][0],
                           **logged(kind, seed), **stats,
                           "sum_sv": {t: vals["sum_sv"][t] for t in (0, *DELAYS)},
                           "eff_rank": {t: vals["eff_rank"][t] for t in DELAYS},
                           "relative": {t: float(rel[t]) for t in range(K + 1)},
                           "relative_ci": {t: [vals["sum_sv"][t][1] / vals["sum_sv"][0][2],
                                               vals["sum_sv"][t][2] / vals["sum_sv"][0][1]]
                                           for t in DELAYS},
                           "fit": {"better": fit["better"],
                                   "power_exponent": fit["power"]["exponent"],
                                   "decay_length": fit["exponential"]["decay_length"],
                                   "r2_power": fit["power"]["r2"],
                                   "r2_exponential": fit["exponential"]["r2"]}})
    v = verdict(models)
    print("\n| corpus | seed | training tokens (logged) | vocabulary | valid OOV | analysis "
          "<unk> | best valid ppl | test ppl | better law | power exponent | decay length |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m in models:
        f = m["fit"]
        print(f"| {m['kind']} | {m['seed']} | {m.get('logged_train_tokens', m['train_tokens'])} "
              f"| {m['vocab']} | {m.get('valid_oov', float('nan')):.1%} | "
              f"{m['analysis_unk']:.1%} | {m['valid_ppl']:.1f} | {m['test_ppl']:.1f} | "
              f"{f['better']} | {f['power_exponent']:.2f} | {f['decay_length']:.1f} |")
    print("\n| corpus | seed | delay | memory sum_sv | relative sum_sv(tau)/sum_sv(0) | "
          "eff. rank |")
    print("|---|---|---|---|---|---|")
    for m in models:
        for t in DELAYS:
            print(f"| {m['kind']} | {m['seed']} | {t} | {fmt_ci(*m['sum_sv'][t])} | "
                  f"{fmt_ci(m['relative'][t], *m['relative_ci'][t])} | "
                  f"{fmt_ci(*m['eff_rank'][t])} |")
    print(f"\nverdict: {v['verdict']} ({v})")
    figure(models)
    save_summary("exp10", {"claim": CLAIM, "N": n, "train_tokens_of_file": counts,
                           "epochs": EPOCHS, "K": K,
                           "analysed": ANALYSED, "seeds": list(SEEDS), "models": models, **v})


def figure(models: list[dict]) -> None:
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(13, 3.8))
    colors = dict(zip(KINDS, ("C0", "C1", "C2")))
    taus = np.arange(K + 1)
    for m in models:
        c, ls = colors[m["kind"]], "-" if m["seed"] == 0 else "--"
        label = f"{m['kind']} s{m['seed']}"
        axes[0].plot(taus, [m["relative"][t] for t in taus], color=c, ls=ls, label=label)
        axes[0].errorbar(list(DELAYS), [m["relative"][t] for t in DELAYS],
                         yerr=[[m["relative"][t] - m["relative_ci"][t][0] for t in DELAYS],
                               [m["relative_ci"][t][1] - m["relative"][t] for t in DELAYS]],
                         color=c, ls="none", capsize=2)
        ts = list(m["sum_sv"])
        axes[1].errorbar(ts, [m["sum_sv"][t][0] for t in ts],
                         yerr=[[m["sum_sv"][t][0] - m["sum_sv"][t][1] for t in ts],
                               [m["sum_sv"][t][2] - m["sum_sv"][t][0] for t in ts]],
                         color=c, ls=ls, capsize=2)
        ts = list(m["eff_rank"])
        axes[2].errorbar(ts, [m["eff_rank"][t][0] for t in ts],
                         yerr=[[m["eff_rank"][t][0] - m["eff_rank"][t][1] for t in ts],
                               [m["eff_rank"][t][2] - m["eff_rank"][t][0] for t in ts]],
                         color=c, ls=ls, capsize=2)
    axes[0].set(xlabel="delay tau", ylabel="sum_sv(tau) / sum_sv(0)", yscale="log",
                title="relative memory [conservative CI]")
    axes[1].set(xlabel="delay tau", ylabel="sum of singular values", yscale="log",
                title="memory [95% CI]")
    axes[2].set(xlabel="delay tau", ylabel="effective rank", title="selectiveness [95% CI]")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "exp10-data-type.png", dpi=120)


if __name__ == "__main__":
    main()
