"""Experiment 12: do training settings influence memory? (Verwimp et al. 2020 vary the hidden
size, the architecture, fixed pretrained CBOW embeddings and 50 vs 200 BPTT steps; issue 24,
item 5, "training settings". Hidden size and architecture are experiment 4.)

Base recipe: 1-layer word LSTM, E=64, H=128, trained with ``memlens train`` on the first
100,000 tokens of WikiText-2 valid (``--max-tokens``), vocabulary cap 10,000, the default SGD
recipe (lr 1, clip 5, batch 20, lr x 0.8 per epoch after epoch 6), dropout 0.5, BPTT 35,
learned embeddings, EPOCHS epochs, best checkpoint by the perplexity of a validation slice of
WikiText-2 test. Three variants, each changing one setting: (a) BPTT 200, (b) dropout 0,
(c) fixed pretrained CBOW embeddings (``--pretrained``): gensim 4.4 CBOW (sg=0, vector_size
64, window 5, min_count 1, 5 epochs, seed 0, workers=1) trained on text the LM never sees: UD
EWT train (FORMs), PTB valid + test, WikiText-2 valid after the LM's first 100k tokens and
WikiText-2 test before the validation slice. Seeds 0 and 1 per setting (8 models). Control
(not in the verdict rule; added after the first BPTT-200 model was seen to be far less trained
at 8 epochs): the base recipe stopped after 2 epochs, seed 0, at about BPTT 200's perplexity.

WikiText-2 test is cut at line boundaries from its end: the last >= 20,000 tokens are the
analysis slice (the same text for every model; its perplexity is the "test" perplexity), the
>= 20,000 tokens before them the validation slice; the rest goes to the CBOW text.

Analysis: state gradients of the cell state on the analysis slice, 20 contiguous blocks, 200
block-bootstrap resamples; K = 50 for the base and BPTT-200 models (delays beyond 35 matter
for that comparison), K = 20 for the others. Per delay: memory (sum of singular values of the
normalised average gradient), relative memory sum_sv(tau) / sum_sv(0) (comparable across input
spaces: the fixed-embedding model reads other input vectors), effective rank (selectiveness),
decay-law fit (analysis.fit_decay, delays 1..K).

    pip install 'memlens[experiments]'            # gensim, for the CBOW embeddings
    python experiments/exp12_training_settings.py

Runtime on ~half a core of the 2 shared cores: about 38 min (docs/experiments/exp12.md).
Caches under runs/exp12/ (slices, CBOW vectors, checkpoints, logs, result directories): a
rerun skips finished work. Output: experiments/results/exp12.json,
docs/img/exp12-training-settings.png.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / torch load (shared CPU)

import numpy as np  # noqa: E402
from analysis import (  # noqa: E402
    DATA,
    IMG,
    RUNS,
    WT2,
    fit_decay,
    fmt_ci,
    law_summary,
    markdown_header,
    plt,
    run_memlens,
    save_summary,
)

OUT = RUNS / "exp12"
TRAIN_TOKENS = 100_000
SLICE = 20_000            # analysis and validation slices (at least this many tokens each)
EPOCHS = 8
SEEDS = (0, 1)
CBOW_SEED = 0
SETTINGS = {              # name -> (label, extra `memlens train` options, K)
    "base": ("base (BPTT 35, dropout 0.5, learned)", (), 50),
    "bptt200": ("(a) BPTT 200", ("--bptt", "200"), 50),
    "dropout0": ("(b) dropout 0", ("--dropout", "0"), 20),
    "cbow": ("(c) fixed CBOW embeddings", ("--pretrained", "CBOW"), 20),
    # control added after the first BPTT-200 model (valid ppl 220 after 8 epochs, base 161):
    # the base recipe stopped at 2 epochs (base valid ppl 224), seed 0 only: is a difference
    # due to BPTT 200 or to the 5.7x fewer updates per epoch it makes?
    "base2ep": ("control: base, 2 epochs", ("--epochs", "2"), 50),
}
CONTROL = "base2ep"
CONTROL_SEEDS = (0,)
DELAYS = (1, 5, 10, 20)
VERDICT_DELAYS = (5, 10, 20)
LONG_DELAYS = (35, 50)    # base vs BPTT 200 only
CLAIM = "training settings influence memory"
EWT_TRAIN = DATA / "ud-english-ewt" / "en_ewt-ud-train.conllu"
PTB = DATA / "ptb"


# -- data -----------------------------------------------------------------------------------------
def lines_of(path) -> list[list[str]]:
    """The non-blank lines of a text file as word lists (memlens adds ``<eos>`` to each)."""
    return [ws for ws in (line.split() for line in path.read_text(encoding="utf-8")
                          .splitlines()) if ws]


def conllu_sentences(path) -> list[list[str]]:
    """The FORMs of each sentence of a CoNLL-U file (multi-word and empty tokens skipped)."""
    out, cur = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur = []
        elif not line.startswith("#"):
            cols = line.split("\t")
            if cols[0].isdigit():
                cur.append(cols[1])
    return out + ([cur] if cur else [])


def take_tail(lines: list[list[str]], n: int) -> int:
    """The index of the first line of the shortest tail of ``lines`` with >= n tokens
    (``<eos>`` included)."""
    count, i = 0, len(lines)
    while count < n:
        i -= 1
        count += len(lines[i]) + 1
    return i


def write_lines(path, lines: list[list[str]]) -> int:
    path.write_text("".join(" ".join(ws) + "\n" for ws in lines), encoding="utf-8")
    return sum(len(ws) + 1 for ws in lines)


def after_tokens(lines: list[list[str]], n: int) -> list[list[str]]:
    """The lines after the one holding token n (the LM's ``--max-tokens`` cut)."""
    count = 0
    for i, ws in enumerate(lines):
        count += len(ws) + 1
        if count >= n:
            return lines[i + 1:]
    return []


def prepare() -> dict:
    """The validation and analysis slices, the CBOW text, and the CBOW vectors (cached)."""
    OUT.mkdir(parents=True, exist_ok=True)
    test = lines_of(WT2 / "test.txt")
    a = take_tail(test, SLICE)
    v = take_tail(test[:a], SLICE)
    info = {"analysis_tokens": write_lines(OUT / "analysis.txt", test[a:]),
            "valid_tokens": write_lines(OUT / "valid.txt", test[v:a])}
    vec = OUT / f"cbow-e64-s{CBOW_SEED}.vec"
    parts = {"ewt_train": conllu_sentences(EWT_TRAIN),
             "ptb_valid_test": lines_of(PTB / "ptb.valid.txt") + lines_of(PTB / "ptb.test.txt"),
             "wt2_valid_after_lm_text": after_tokens(lines_of(WT2 / "valid.txt"), TRAIN_TOKENS),
             "wt2_test_before_valid": test[:v]}
    info["cbow_tokens"] = {k: sum(len(ws) + 1 for ws in p) for k, p in parts.items()}
    if not vec.exists():
        try:
            from gensim.models import Word2Vec
        except ImportError:
            sys.exit("exp12 needs gensim for the CBOW embeddings: pip install "
                     "'memlens[experiments]'")
        sentences = [ws + ["<eos>"] for p in parts.values() for ws in p]
        t0 = time.time()
        w2v = Word2Vec(sentences=sentences, vector_size=64, window=5, min_count=1, sg=0,
                       epochs=5, seed=CBOW_SEED, workers=1)
        tmp = vec.with_suffix(".tmp")
        w2v.wv.save_word2vec_format(str(tmp), binary=False)
        tmp.replace(vec)
        print(f"+ CBOW: {len(w2v.wv)} words, {time.time() - t0:.0f} s", flush=True)
    info["cbow_words"] = int(vec.read_text(encoding="utf-8").split("\n", 1)[0].split()[0])
    return info


# -- training and analysis ------------------------------------------------------------------------
def model_path(setting: str, seed: int):
    return OUT / f"lstm-{setting}-s{seed}.pt"


def train(setting: str, seed: int) -> None:
    """``memlens train`` of one setting and seed (skipped when its checkpoint exists)."""
    out = model_path(setting, seed)
    partial = out.with_name(f".{out.name}.partial.pt")  # memlens train's per-epoch state
    if out.exists() and not partial.exists():
        return
    extra = [str(OUT / f"cbow-e64-s{CBOW_SEED}.vec") if x == "CBOW" else x
             for x in SETTINGS[setting][1]]
    args = ["train", "--train", str(WT2 / "valid.txt"), "--valid", str(OUT / "valid.txt"),
            "--max-tokens", str(TRAIN_TOKENS), "--vocab-size", "10000", "--emb", "64",
            "--hidden", "128", "--epochs", str(EPOCHS), "--seed", str(seed), *extra,
            "--device", "cpu", "--no-progress", "--out", str(out)]
    if partial.exists():  # interrupted: continue from the last finished epoch
        args.append("--resume")
    print("+ memlens", " ".join(args), flush=True)
    log = OUT / f"lstm-{setting}-s{seed}.log"
    with open(log, "a" if partial.exists() else "w") as f:
        done = subprocess.run([sys.executable, "-m", "memlens", *args], stdout=f,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"training failed: see {log}")


def analyse(setting: str, seed: int):
    k = SETTINGS[setting][2]
    return run_memlens(OUT / f"sg-{setting}-s{seed}", "gradients", "--model",
                       str(model_path(setting, seed)), "--corpus", str(OUT / "analysis.txt"),
                       "--max-delay", str(k), "--no-progress")


def compute() -> None:
    """Every model and analysis, seed 0 of every setting first, the control last."""
    jobs = [(seed, k) for seed in SEEDS for k in SETTINGS if k != CONTROL]
    for seed, setting in jobs + [(seed, CONTROL) for seed in CONTROL_SEEDS]:
        t0 = time.time()
        train(setting, seed)
        analyse(setting, seed)
        print(f"  {setting} s{seed}: {time.time() - t0:.0f} s", flush=True)


# -- reading --------------------------------------------------------------------------------------
def model_stats(setting: str, seed: int) -> dict:
    """Training history, perplexity of the analysis slice, pretrained coverage."""
    import torch

    import memlens
    from memlens.data import load_corpus
    from memlens.training.lm import evaluate

    torch.set_num_threads(1)
    model = memlens.load_checkpoint(model_path(setting, seed))
    history = (getattr(model, "extra", None) or {}).get("history") or []
    best = min(history, key=lambda h: h["valid_ppl"])
    text = load_corpus(str(OUT / "analysis.txt"), "text", "word").tokens
    log = (OUT / f"lstm-{setting}-s{seed}.log").read_text()
    found = re.search(r"pretrained embeddings \(fixed\): (\d+)/(\d+)", log)
    return {"epochs": len(history), "best_epoch": best["epoch"], "valid_ppl": best["valid_ppl"],
            "train_seconds": sum(h["seconds"] for h in history),
            "test_ppl": math.exp(evaluate(model, model.vocab.encode(text))),
            "analysis_unk": float(np.mean([w not in model.vocab.stoi or w == "<unk>"
                                           for w in text])),
            "pretrained_found": [int(found[1]), int(found[2])] if found else None}


def read(out) -> dict:
    """{measure: [[value, low, high] per delay 0..K]} of the overall row, plus the relative
    memory sum_sv(tau) / sum_sv(0) with the conservative interval
    [low(tau) / high(0), high(tau) / low(0)]."""
    from memlens.results import load_result

    f = load_result(out).to_frame()
    f = f[f["class"] == "all"].sort_values("delay")
    rows = {"sum_sv": f[["sum_sv", "ci_low", "ci_high"]].to_numpy(),
            "eff_rank": f[["eff_rank", "eff_rank_low", "eff_rank_high"]].to_numpy()}
    m0, lo0, hi0 = rows["sum_sv"][0]
    s = rows["sum_sv"]
    rows["relative"] = np.stack([s[:, 0] / m0, s[:, 1] / hi0, s[:, 2] / lo0], axis=1)
    return {k: [[float(f"{x:.6g}") for x in r] for r in v] for k, v in rows.items()}


def rounded(x):
    """``x`` with every float rounded to 4 significant digits (the summary stays < 50 kB)."""
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rounded(v) for v in x]
    return float(f"{x:.4g}") if isinstance(x, float) else x


def spread(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": float(np.min(values)),
            "max": float(np.max(values))}


def compare(base: list[dict], var: list[dict], measure: str, delays) -> dict:
    """Per delay: seed means, seed ranges and interval unions of base and variant; ``side``:
    '>' / '<' when both the seed ranges and the interval unions are disjoint, else '~'."""
    out = {}
    for t in delays:
        b = [m[measure][t] for m in base]
        v = [m[measure][t] for m in var]
        bu, vu = [min(x[1] for x in b), max(x[2] for x in b)], [min(x[1] for x in v),
                                                                 max(x[2] for x in v)]
        bmin, bmax = min(x[0] for x in b), max(x[0] for x in b)
        vmin, vmax = min(x[0] for x in v), max(x[0] for x in v)
        side = (">" if vmin > bmax and vu[0] > bu[1] else
                "<" if vmax < bmin and vu[1] < bu[0] else "~")
        out[t] = {"base_mean_min_max": list(spread([x[0] for x in b]).values()),
                  "variant_mean_min_max": list(spread([x[0] for x in v]).values()),
                  "base_union": bu, "variant_union": vu, "side": side,
                  "overlap": bool(vu[0] <= bu[1] and bu[0] <= vu[1]),
                  "ratio": float(np.mean([x[0] for x in v]) / np.mean([x[0] for x in b]))}
    return out


def verdict(per: dict) -> str:
    """The rule (written before the numbers were seen; docs/experiments/exp12.md), on the
    relative memory at VERDICT_DELAYS: "changes memory" when at every verdict delay the
    variant's two seeds lie on one side of both base seeds AND the unions of the seeds' 95%
    intervals are disjoint, in the same direction at every delay; "no change" when at every
    verdict delay the unions overlap; otherwise "inconclusive"."""
    sides = {per[t]["side"] for t in VERDICT_DELAYS}
    if len(sides) == 1 and sides != {"~"}:
        return "changes memory (" + ("more" if sides == {">"} else "less") + ")"
    if all(per[t]["overlap"] for t in VERDICT_DELAYS):
        return "no change"
    return "inconclusive"


def overall(verdicts: dict) -> str:
    """agree: at least two of the three settings change memory (exp 4 already found hidden
    size and architecture do); disagree: none changes memory and at least two show no change;
    otherwise inconclusive."""
    changed = sum(v.startswith("changes") for v in verdicts.values())
    same = sum(v == "no change" for v in verdicts.values())
    return "agree" if changed >= 2 else "disagree" if changed == 0 and same >= 2 else \
        "inconclusive"


# -- report ---------------------------------------------------------------------------------------
COLORS = {"base": "k", "bptt200": "tab:blue", "dropout0": "tab:red", "cbow": "tab:green",
          "base2ep": "tab:grey"}


def figure(models: dict) -> None:
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(15, 4.4))
    for setting, ms in models.items():
        for i, m in enumerate(ms):
            for ax, key in zip(axes, ("sum_sv", "relative", "eff_rank")):
                arr = np.array(m[key])
                tau = np.arange(len(arr))
                sel = tau >= (1 if key != "eff_rank" else 0)
                ax.plot(tau[sel], arr[sel, 0], color=COLORS[setting], lw=1.2,
                        ls="-" if i == 0 else "--",
                        label=f"{SETTINGS[setting][0]}" if i == 0 else None)
                ax.fill_between(tau[sel], arr[sel, 1], arr[sel, 2], color=COLORS[setting],
                                alpha=0.12, lw=0)
    for ax, title in zip(axes, ("memory (sum of singular values)",
                                "relative memory sum_sv(tau) / sum_sv(0)",
                                "effective rank (selectiveness; lower = more selective)")):
        ax.set_xlabel("delay tau")
        ax.set_title(title, fontsize=10)
        if ax is not axes[2]:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.axvline(35, color="grey", lw=0.6, ls=":")
    axes[0].legend(fontsize=8)
    fig.suptitle("Experiment 12: training settings (LSTM E64 H128, 100k WT2 tokens; "
                 "seed 0 solid, seed 1 dashed; 95% block-bootstrap bands)", fontsize=10)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "exp12-training-settings.png", dpi=110)
    print(f"figure: {IMG / 'exp12-training-settings.png'}")


def print_tables(models: dict, comparisons: dict, verdicts: dict) -> None:
    markdown_header("setting", "seed", "test ppl", "best epoch", "rel. tau 1", "rel. tau 5",
                    "rel. tau 10", "rel. tau 20", "memory tau 0", "eff. rank tau 1",
                    "eff. rank tau 5", "eff. rank tau 10", "eff. rank tau 20", "better fit 1-20",
                    "power exp.", "decay length")
    for setting, ms in models.items():
        for m in ms:
            cells = [fmt_ci(*m["relative"][t]) for t in DELAYS]
            ranks = [fmt_ci(*m["eff_rank"][t]) for t in DELAYS]
            law = m["law20"]
            print(f"| {SETTINGS[setting][0]} | {m['seed']} | {m['stats']['test_ppl']:.1f} | "
                  f"{m['stats']['best_epoch']} | " + " | ".join(cells) + " | "
                  f"{fmt_ci(*m['sum_sv'][0])} | " + " | ".join(ranks)
                  + f" | {law['better']} | {law['power_exponent']:.2f} | "
                  f"{law['exp_decay_length']:.1f} |")
    print()
    print("variant / reference ratio of the seed means; '>' / '<': seed ranges and interval "
          "unions disjoint (variant above / below), '~' otherwise")
    markdown_header("setting vs base", "measure", *[f"tau {t}" for t in DELAYS], "verdict")
    for setting, comp in comparisons.items():
        for meas, per in comp.items():
            cells = [(f"tau {t}: " if t not in DELAYS else "")
                     + f"{per[t]['ratio']:.3g} {per[t]['side']}" for t in per]
            cells = (cells + [""] * len(DELAYS))[:max(len(DELAYS), len(cells))]
            name = ("(a) BPTT 200 vs the 2-epoch control" if setting == "bptt200_vs_control"
                    else SETTINGS[setting][0])
            print(f"| {name} | {meas} | " + " | ".join(cells)
                  + f" | {verdicts.get(setting, '') if meas == 'relative' else ''} |")


def collect() -> dict:
    models = {}
    for setting in SETTINGS:
        ms = []
        for seed in SEEDS:
            out = OUT / f"sg-{setting}-s{seed}"
            if not (out / "result.json").exists():
                continue
            m = {"seed": seed, **read(out), "stats": model_stats(setting, seed)}
            vals = np.array(m["sum_sv"])[:, 0]
            m["law"] = law_summary(fit_decay(np.arange(len(vals)), vals))  # delays 1..K
            m["law20"] = law_summary(fit_decay(np.arange(21), vals[:21]))  # 1..20: all models
            ms.append(m)
        if ms:
            models[setting] = ms
    return models


def main() -> None:
    t0 = time.time()
    info = prepare()
    if "report" not in sys.argv[1:]:
        compute()
    models = collect()
    comparisons, verdicts = {}, {}
    base = models.get("base", [])
    for setting in [s for s in models if s not in ("base", CONTROL)]:
        var = models[setting]
        if len(var) < len(SEEDS) or len(base) < len(SEEDS):
            verdicts[setting] = "not run (fewer than 2 seeds)"
        comp = {"relative": compare(base, var, "relative", DELAYS),
                "eff_rank": compare(base, var, "eff_rank", DELAYS)}
        if setting != "cbow":  # the same input space: absolute memory comparable too
            comp["sum_sv"] = compare(base, var, "sum_sv", DELAYS)
        if setting == "bptt200":
            comp["relative_long"] = compare(base, var, "relative", LONG_DELAYS)
        comparisons[setting] = comp
        verdicts.setdefault(setting, verdict(comp["relative"]))
    if CONTROL in models and "bptt200" in models:
        comparisons["bptt200_vs_control"] = {
            k: compare(models[CONTROL], models["bptt200"], k, DELAYS + LONG_DELAYS)
            for k in ("relative", "sum_sv", "eff_rank")}
    figure(models)
    print_tables(models, comparisons, verdicts)
    summary = {
        "claim": CLAIM, "data": info, "train_tokens": TRAIN_TOKENS, "epochs": EPOCHS,
        "seeds": list(SEEDS), "settings": {k: {"label": v[0], "options": list(v[1]),
                                                "max_delay": v[2]}
                                            for k, v in SETTINGS.items()},
        "models": {s: [{"seed": m["seed"], "stats": m["stats"], "law": m["law"],
                        "law_delays_1_20": m["law20"],
                        **{k: {t: m[k][t] for t in (0,) + DELAYS + tuple(
                            t for t in LONG_DELAYS if t < len(m[k]))}
                           for k in ("sum_sv", "relative", "eff_rank")}}
                       for m in ms] for s, ms in models.items()},
        "comparisons": comparisons, "verdicts": verdicts, "overall": overall(verdicts),
        "verdict_rule": " ".join((verdict.__doc__ + " " + overall.__doc__).split()),
        "report_seconds": time.time() - t0,
    }
    save_summary("exp12", rounded(summary))
    print(f"verdicts: {verdicts}; overall: {summary['overall']}")


if __name__ == "__main__":
    main()
