"""Experiment 11: does the selectiveness of memory depend on the size of the training data?
(Verwimp et al. 2020 compare WikiText-2 with WikiText-103 under one vocabulary; issue 24,
item 5, "dataset size".)

Data: WikiText-2 valid + test concatenated (460,449 tokens with one ``<eos>`` per line).
Training pool: the first 400,000 tokens; nested subsets are its first 25k / 50k / 100k / 200k /
400k tokens. Held out: the last 50,000 tokens, the first 30,000 of them the validation slice
(best-by-validation checkpoint) and the last 20,000 the analysis slice (the same text for every
model; its perplexity is the "test" perplexity). ONE fixed vocabulary: the 10,000 most
frequent types of the 400k-token set (``<unk>`` and ``<eos>`` included; ties by first
occurrence). Every word outside it is replaced by ``<unk>`` in all slices before training, so
``memlens train``'s vocabulary of the 400k set is exactly the fixed one and a smaller set's
vocabulary is the subset of it that occurs in that set (the analysis text's words missing from
a small set's vocabulary are read as ``<unk>`` by that model; the rate is reported).

Recipe, the same for every size: 1-layer word LSTM, E=64, H=128, the default SGD recipe of
``memlens train`` (lr 1, clip 5, dropout 0.5, lr x 0.8 per epoch after epoch 6, BPTT 35,
batch 20), best checkpoint by validation perplexity. Epochs scale with size so that every
model gets roughly the same number of updates: epochs = clamp(round(UPDATE_TOKENS / N), 2,
MAX_EPOCHS) (:func:`epochs_for`: 30, 30, 30, 16, 8 epochs). Seeds 0 and 1 per size.

Analysis: state gradients of the cell state, K = 20, on the analysis slice, 20 contiguous
blocks and 200 block-bootstrap resamples; per delay the memory (sum of singular values of the
normalised average gradient) and the selectiveness (effective rank exp(H(sigma / sum sigma)),
top-1 and top-5 shares) with 95% intervals (docs/selectiveness.md). Control: the seed-0
models also read the analysis slice mapped to the smallest set's vocabulary (the same input ids
for every model). Verdict rule: :func:`verdict` (fixed before the numbers were seen).

    python experiments/exp11_dataset_size.py
    EXP11_STOP=HH:MM python experiments/exp11_dataset_size.py   # no new training after HH:MM UTC

Runtime on ~half a core of the 2 shared cores, one thread: about 43 min of training (25k: 1-1.5
min, 400k: ~10 min per seed) and 20-50 s of state gradients per model and input; 10 s when
everything is cached (docs/experiments/exp11.md). Caches under
runs/exp11/ (data, checkpoints, result directories): a rerun skips finished work. Output:
experiments/results/exp11.json, docs/img/exp11-dataset-size.png.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter

import numpy as np
from analysis import IMG, RUNS, WT2, fmt_ci, plt, save_summary

import memlens
from memlens.data.corpus import Corpus
from memlens.protocol import Site
from memlens.runtime.options import as_options

OUT = RUNS / "exp11"
SIZES = (25_000, 50_000, 100_000, 200_000, 400_000)
POOL = 400_000
HELD_OUT = 50_000
VALID = 30_000
VOCAB = 10_000
UPDATE_TOKENS = 3_200_000     # each model sees about this many training tokens
MIN_EPOCHS = 8
MAX_EPOCHS = 30
SEEDS: dict[int, tuple[int, ...]] = {}   # per size; others: (0, 1) (a third seed: no time)
CONTROL_SEEDS = (0,)          # seeds whose models are also analysed on the common input
K = 20
DELAYS = (1, 5, 10, 20)
VERDICT_DELAYS = (5, 10, 20)
MEASURES = ("eff_rank", "sv1_share", "sv5_share")
CLAIM = "selectiveness depends on the size of the dataset"


def epochs_for(n: int) -> int:
    """Roughly equal updates per size: UPDATE_TOKENS / n epochs, at least MIN_EPOCHS, at most
    MAX_EPOCHS (25k: 30, 50k: 30, 100k: 30, 200k: 16, 400k: 8)."""
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(UPDATE_TOKENS / n))))


def seeds_for(n: int) -> tuple[int, ...]:
    return SEEDS.get(n, (0, 1))


# -- data -----------------------------------------------------------------------------------------
def stream() -> list[str]:
    """WikiText-2 valid + test as one token stream (``<eos>`` after every non-blank line, as
    memlens.data.load_corpus reads text)."""
    toks: list[str] = []
    for name in ("valid.txt", "test.txt"):
        for line in (WT2 / name).read_text(encoding="utf-8").splitlines():
            words = line.split()
            if words:
                toks += words + ["<eos>"]
    return toks


def prepare() -> dict:
    """The slices (words outside the fixed vocabulary replaced by ``<unk>``) and the
    fixed vocabulary."""
    toks = stream()
    pool, held = toks[:POOL], toks[-HELD_OUT:]
    fixed = [w for w, _ in Counter(pool).most_common(VOCAB)]
    keep = set(fixed)
    assert "<unk>" in keep and "<eos>" in keep

    def mapped(ts):
        return [w if w in keep else "<unk>" for w in ts]

    return {"pool": mapped(pool), "valid": mapped(held[:VALID]), "analysis": mapped(held[VALID:]),
            "vocab": fixed, "total_tokens": len(toks),
            "pool_unk_before": float(np.mean([w == "<unk>" for w in pool])),
            "pool_unk_after": float(np.mean([w not in keep or w == "<unk>" for w in pool]))}


def corpus(tokens: list[str], name: str) -> Corpus:
    return Corpus(tokens, {}, name, "word", "text")


# -- training -------------------------------------------------------------------------------------
def model_path(n: int, seed: int):
    return OUT / f"lstm-e64-h128-n{n // 1000}k-s{seed}.pt"


def train(data: dict, n: int, seed: int):
    """The checkpoint of one size and seed (trained when missing) and its history."""
    from memlens.training.lm import progress_path
    from memlens.training.lm import train as lm_train

    out = model_path(n, seed)
    if not trained(n, seed):
        resume = progress_path(out).exists()
        print(f"+ train n={n} seed={seed} epochs={epochs_for(n)}"
              + (" (resumed)" if resume else ""), flush=True)
        t0 = time.time()
        lm_train(train_corpus=corpus(data["pool"][:n], f"wt2-pool[:{n}]"),
                 valid_corpus=corpus(data["valid"], "wt2-valid-slice"), out=str(out),
                 arch="lstm", emb=64, hidden=128, vocab_size=VOCAB, epochs=epochs_for(n),
                 seed=seed, device="cpu", progress=False, resume=resume)
        print(f"  {time.time() - t0:.0f} s", flush=True)
    return out


def trained(n: int, seed: int) -> bool:
    """The checkpoint exists and its training has ended (no per-epoch state left)."""
    from memlens.training.lm import progress_path

    out = model_path(n, seed)
    return out.exists() and not progress_path(out).exists()


def past_stop() -> bool:
    """After EXP11_STOP (HH:MM UTC, optional) no new training starts; the summary is made
    from the models that exist."""
    stop = os.environ.get("EXP11_STOP")
    return bool(stop) and time.strftime("%H:%M", time.gmtime()) >= stop


def jobs() -> list[tuple[int, int]]:
    """(size, seed) in the order they are trained: seed 0 of every size, then seed 1, then
    the extra seeds of the small sizes."""
    return sorted(((n, s) for n in SIZES for s in seeds_for(n)), key=lambda j: (j[1], j[0]))


# -- analysis -------------------------------------------------------------------------------------
def analysis_tokens(data: dict, common: bool) -> list[str]:
    """The analysis slice; ``common``: mapped to the vocabulary of the smallest set (the
    same input stream, the same ``<unk>`` positions, for every model: the control)."""
    if not common:
        return data["analysis"]
    small = set(data["pool"][:SIZES[0]])
    return [w if w in small else "<unk>" for w in data["analysis"]]


def analyse(data: dict, n: int, seed: int, common: bool = False):
    """The state-gradient result directory of one model (computed when missing)."""
    out = OUT / f"{'sgc' if common else 'sg'}-n{n // 1000}k-s{seed}"
    if not (out / "result.json").exists():
        model = memlens.load_checkpoint(model_path(n, seed))
        ids = model.vocab.encode(analysis_tokens(data, common))
        print(f"+ state_gradients n={n} seed={seed}{' common' if common else ''}: "
              f"{len(ids)} positions, K={K}", flush=True)
        t0 = time.time()
        result = memlens.state_gradients(model, ids, K, site=Site(readout="cell"),
                                         options=as_options(device="cpu"))
        result.model_meta = {"path": str(model_path(n, seed).relative_to(OUT.parent.parent))}
        result.corpus_meta = {"path": "wikitext-2 valid+test, last 20k tokens",
                              "tokens": len(ids), "vocabulary": "smallest set's" if common
                              else "the model's own (fixed-vocabulary subset)"}
        result.save(out)
        print(f"  {time.time() - t0:.0f} s", flush=True)
    return out


def model_stats(data: dict, n: int, seed: int) -> dict:
    """Training history, perplexity of the analysis slice, and <unk> rates."""
    from memlens.training.lm import evaluate

    model = memlens.load_checkpoint(model_path(n, seed))
    history = (getattr(model, "extra", None) or {}).get("history") or []
    best = min(history, key=lambda h: h["valid_ppl"])
    stoi = model.vocab.stoi
    text = data["analysis"]
    # the checkpoint keeps the history up to its (best) epoch: the training time is estimated
    # from the mean epoch time of those epochs
    return {"vocab": len(stoi), "epochs": epochs_for(n), "best_epoch": best["epoch"],
            "valid_ppl": best["valid_ppl"],
            "train_seconds": epochs_for(n) * float(np.mean([h["seconds"] for h in history])),
            "test_ppl": math.exp(evaluate(model, model.vocab.encode(text))),
            "analysis_unk": float(np.mean([w not in stoi or w == "<unk>" for w in text]))}


def read(out) -> dict:
    """{measure: [[value, low, high] per delay 0..K]} of the overall row."""
    from memlens.results import load_result

    f = load_result(out).to_frame()
    f = f[f["class"] == "all"].sort_values("delay")
    cols = {"sum_sv": ("ci_low", "ci_high")}
    cols.update({m: (f"{m}_low", f"{m}_high") for m in MEASURES})
    return {m: [[round(float(v), 6 if m != "sum_sv" else 9) for v in row]
                for row in f[[m, lo, hi]].to_numpy()]
            for m, (lo, hi) in cols.items()}


def spread(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": float(np.min(values)),
            "max": float(np.max(values))}


def aggregate(models: list[dict], variant: str) -> dict:
    """Per size and delay of DELAYS: seed mean / min / max of each measure, and the union of
    the seeds' intervals."""
    out = {}
    for n in SIZES:
        ms = [m for m in models if m["n"] == n and m[variant]]
        if not ms:
            continue
        row = {}
        for meas in ("sum_sv",) + MEASURES:
            row[meas] = {t: {**spread([m[variant][meas][t][0] for m in ms]),
                             "union": [min(m[variant][meas][t][1] for m in ms),
                                       max(m[variant][meas][t][2] for m in ms)]}
                         for t in DELAYS}
        for key in ("test_ppl", "valid_ppl", "analysis_unk", "best_epoch"):
            row[key] = spread([m["stats"][key] for m in ms])
        out[n] = row
    return out


def spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def verdict(agg: dict, control: dict, measure: str = "eff_rank") -> dict:
    """The rule (written before the numbers were seen; docs/experiments/exp11.md):

    per delay of VERDICT_DELAYS, on the seed means of ``measure``: trend = Spearman rho of
    size vs the seed mean (|rho| >= 0.9: monotone with at most one adjacent swap of 5 sizes);
    separated = the union of the smallest size's seed intervals and the union of the
    largest size's do not overlap. agree: at every verdict delay |rho| >= 0.9 with one sign
    and separated, and the control (the common input stream) shows the same sign of rho at
    every verdict delay; disagree: at every verdict delay the unions of ALL sizes share a
    point and the seed means of all sizes lie within 3% of their average (no dependence, and
    tightly measured); otherwise inconclusive."""
    per, sizes = {}, [n for n in SIZES if n in agg]
    for t in VERDICT_DELAYS:
        means = [agg[n][measure][t]["mean"] for n in sizes]
        cmeans = [control[n][measure][t]["mean"] for n in sizes]
        lo_s, hi_s = agg[sizes[0]][measure][t]["union"]
        lo_l, hi_l = agg[sizes[-1]][measure][t]["union"]
        unions = [agg[n][measure][t]["union"] for n in sizes]
        per[t] = {"rho": spearman(sizes, means), "rho_control": spearman(sizes, cmeans),
                  "separated": bool(hi_s < lo_l or hi_l < lo_s),
                  "common_point": bool(max(u[0] for u in unions) <= min(u[1] for u in unions)),
                  "within_3pct": bool(max(abs(m / np.mean(means) - 1) for m in means) <= 0.03),
                  "change_smallest_to_largest": means[-1] / means[0] - 1}
    signs = {np.sign(p["rho"]) for p in per.values()}
    # rho of 5 ranks is a multiple of 0.05: rounded, so that rho = 0.9 is not 0.8999999
    agree = (all(round(abs(p["rho"]), 6) >= 0.9 and p["separated"] for p in per.values())
             and len(signs) == 1
             and all(np.sign(p["rho_control"]) == np.sign(p["rho"]) for p in per.values()))
    disagree = all(p["common_point"] and p["within_3pct"] for p in per.values())
    v = "agree" if agree else "disagree" if disagree else "inconclusive"
    direction = ("more selective (lower effective rank) with more data" if signs == {-1.0}
                 else "less selective (higher effective rank) with more data"
                 if signs == {1.0} else "mixed")
    if measure != "eff_rank":
        direction = "rho > 0" if signs == {1.0} else "rho < 0" if signs == {-1.0} else "mixed"
    return {"verdict": v, "direction": direction, "per_delay": per}


# -- output ---------------------------------------------------------------------------------------
LABELS = {"eff_rank": "effective rank", "sv1_share": "top-1 share", "sv5_share": "top-5 share",
          "sum_sv": "memory (sum of singular values)"}


def size_axis(ax, xs) -> None:
    """Log x axis with one tick per training-set size (thousands of tokens)."""
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}k" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("training tokens")


def figure(models: list[dict]) -> None:
    p = plt()
    fig, axes = p.subplots(2, 4, figsize=(15, 7.2))
    sizes = sorted({m["n"] for m in models})
    xs = np.array(sizes) / 1000
    markers = "os^"
    for ax, t in zip(axes[0], DELAYS):
        for m in models:
            k = m["seed"]
            v, lo, hi = m["own"]["eff_rank"][t]
            x = m["n"] / 1000 * (1 + 0.04 * (k - 1))
            ax.errorbar([x], [v], yerr=[[v - lo], [hi - v]], fmt=markers[k], color=f"C{k}",
                        ms=4, capsize=2, label=f"seed {k}" if m["n"] == sizes[0] else None)
            if not m["common"]:
                continue
            vc = m["common"]["eff_rank"][t][0]
            ax.plot([x], [vc], marker=markers[k], mfc="none", color="0.5", ms=5, ls="none",
                    label="common input (control)" if m["n"] == sizes[0] and k == 0 else None)
        means = [np.mean([m["own"]["eff_rank"][t][0] for m in models if m["n"] == n])
                 for n in sizes]
        ax.plot(xs, means, color="k", lw=1)
        size_axis(ax, xs)
        ax.set_title(f"effective rank, delay {t}", fontsize=9)
    axes[0][0].legend(fontsize=7)
    for ax, meas in zip(axes[1][:2], ("sv1_share", "sv5_share")):
        for j, t in enumerate(DELAYS):
            for m in models:
                v, lo, hi = m["own"][meas][t]
                x = m["n"] / 1000 * (1 + 0.04 * (m["seed"] - 1))
                ax.errorbar([x], [v], yerr=[[v - lo], [hi - v]], fmt=markers[m["seed"]],
                            color=f"C{j}", ms=3, capsize=2)
            ax.plot(xs, [np.mean([m["own"][meas][t][0] for m in models if m["n"] == n])
                         for n in sizes], color=f"C{j}", lw=1, label=f"delay {t}")
        size_axis(ax, xs)
        ax.set_title(LABELS[meas], fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[1][2]
    for j, t in enumerate(DELAYS):
        for m in models:
            v, lo, hi = m["own"]["sum_sv"][t]
            x = m["n"] / 1000 * (1 + 0.04 * (m["seed"] - 1))
            ax.errorbar([x], [v], yerr=[[v - lo], [hi - v]], fmt=markers[m["seed"]],
                        color=f"C{j}", ms=3, capsize=2)
        ax.plot(xs, [np.mean([m["own"]["sum_sv"][t][0] for m in models if m["n"] == n])
                     for n in sizes], color=f"C{j}", lw=1, label=f"delay {t}")
    size_axis(ax, xs)
    ax.set_yscale("log")
    ax.set_title(LABELS["sum_sv"], fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1][3]
    for m in models:
        x = m["n"] / 1000 * (1 + 0.04 * (m["seed"] - 1))
        ax.plot([x], [m["stats"]["test_ppl"]], marker=markers[m["seed"]], color="C0")
    size_axis(ax, xs)
    ax.set_title("perplexity of the analysis slice (own vocabulary)", fontsize=9)
    ax2 = ax.twinx()
    ax2.plot(xs, [np.mean([m["stats"]["analysis_unk"] for m in models if m["n"] == n])
                  for n in sizes], color="C3", ls="--")
    ax2.set_ylabel("<unk> rate of the analysis slice", color="C3", fontsize=8)
    fig.suptitle("Experiment 11: WikiText-2 LSTM (E=64, H=128), nested training sets, one fixed "
                 "vocabulary; cell state, K=20, 20k held-out tokens; 95% block-bootstrap "
                 "intervals, markers = seeds (o s ^)", fontsize=9)
    fig.tight_layout()
    fig.savefig(IMG / "exp11-dataset-size.png", dpi=100)


def markdown(models: list[dict], agg: dict, control: dict, verdicts: dict) -> None:
    """The tables of docs/experiments/exp11.md."""
    print("\n### models")
    print("| size | seed | vocabulary | epochs (best) | valid ppl | analysis ppl | analysis <unk> "
          "| train s (est.) |")
    print("|---" * 8 + "|")
    for m in models:
        st = m["stats"]
        print(f"| {m['n'] // 1000}k | {m['seed']} | {st['vocab']} | {st['epochs']} "
              f"({st['best_epoch']}) | {st['valid_ppl']:.1f} | {st['test_ppl']:.1f} | "
              f"{st['analysis_unk']:.1%} | {st['train_seconds']:.0f} |")
    for variant, title in (("own", "own vocabulary"), ("common", "common input (control)")):
        for meas in ("eff_rank", "sv1_share", "sv5_share", "sum_sv")[:4 if variant == "own"
                                                                      else 1]:
            print(f"\n### {LABELS[meas]}, {title}: per seed value [95% CI]")
            print("| size | " + " | ".join(f"delay {t}" for t in DELAYS) + " |")
            print("|---" * (len(DELAYS) + 1) + "|")
            for n in agg:
                cells = []
                for t in DELAYS:
                    cells.append("<br>".join(fmt_ci(*m[variant][meas][t]) for m in models
                                             if m["n"] == n and m[variant]))
                print(f"| {n // 1000}k | " + " | ".join(cells) + " |")
    print("\n### seed means (min..max) of the effective rank")
    print("| size | " + " | ".join(f"delay {t}" for t in DELAYS) + " | control, delay 10 |")
    print("|---" * (len(DELAYS) + 2) + "|")
    for n in agg:
        e = agg[n]["eff_rank"]
        print(f"| {n // 1000}k | " + " | ".join(
            f"{e[t]['mean']:.2f} ({e[t]['min']:.2f}..{e[t]['max']:.2f})" for t in DELAYS)
            + f" | {control[n]['eff_rank'][10]['mean']:.2f} |")
    for key, v in verdicts.items():
        print(f"\nverdict {key}: {v['verdict']} ({v['direction']}); " + "; ".join(
            f"delay {t}: rho {p['rho']:+.2f} (control {p['rho_control']:+.2f}), separated "
            f"{p['separated']}, change {p['change_smallest_to_largest']:+.1%}"
            for t, p in v["per_delay"].items()))


def compact(x):
    """Floats rounded to 4 significant digits (the summary stays under 50 kB)."""
    if isinstance(x, dict):
        return {k: compact(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [compact(v) for v in x]
    if isinstance(x, float) and math.isfinite(x) and x != 0:
        return float(f"{x:.4g}")
    return x


def main() -> None:
    import torch

    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    t0 = time.time()
    data = prepare()
    models = []
    for n, seed in jobs():      # each model analysed right after it is trained
        if not trained(n, seed) and past_stop():
            print(f"skipped n={n} seed={seed}: past EXP11_STOP", flush=True)
            continue
        train(data, n, seed)
        models.append({"n": n, "seed": seed, "stats": model_stats(data, n, seed),
                       "own": read(analyse(data, n, seed)),
                       "common": read(analyse(data, n, seed, common=True))
                       if seed in CONTROL_SEEDS else None})
    agg, control = aggregate(models, "own"), aggregate(models, "common")
    verdicts = {m: verdict(agg, control, m) for m in MEASURES}
    small = set(data["pool"][:SIZES[0]])
    summary = {
        "claim": CLAIM, "K": K, "delays": DELAYS, "verdict_delays": VERDICT_DELAYS,
        "verdict": verdicts["eff_rank"]["verdict"], "verdict_measure": "eff_rank",
        "sizes": SIZES, "epochs": {n: epochs_for(n) for n in SIZES},
        "seeds": {n: seeds_for(n) for n in SIZES},
        "data": {"total_tokens": data["total_tokens"], "pool": POOL, "valid": VALID,
                 "analysis": HELD_OUT - VALID, "fixed_vocab": len(data["vocab"]),
                 "pool_unk_original": data["pool_unk_before"],
                 "pool_unk_fixed_vocab": data["pool_unk_after"],
                 "analysis_unk_common": float(np.mean([w not in small or w == "<unk>"
                                                       for w in data["analysis"]]))},
        "models": [{"n": m["n"], "seed": m["seed"], "stats": m["stats"],
                    "own": {meas: {t: m["own"][meas][t] for t in DELAYS} for meas in m["own"]},
                    **({"common": {"eff_rank": {t: m["common"]["eff_rank"][t] for t in DELAYS}}}
                       if m["common"] else {}),
                    "eff_rank_curve": [r[0] for r in m["own"]["eff_rank"]]} for m in models],
        "by_size": agg, "verdicts": verdicts,
        "by_size_control": {n: {"eff_rank": row["eff_rank"]} for n, row in control.items()},
        "seconds": time.time() - t0}
    save_summary("exp11", compact(summary))
    figure(models)
    markdown(models, agg, control, verdicts)


if __name__ == "__main__":
    main()
