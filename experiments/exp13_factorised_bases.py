"""Experiment 13: does information diverge in the bases of a factorised recurrent kernel?
(Koppula et al., ICASSP 2018; issue 24, item 5, "factorised-kernel bases").

A 1-layer character F-LSTM (E=32, H=256, recurrent kernel W_hh = B A of rank r = 16, Adam lr
0.003, no dropout, BPTT 35, batch 20) is trained on the first 400,000 characters of WikiText-2
valid for 12 epochs, validated on the last 60,000 characters of WikiText-2 test (written to
runs/exp13/valid-slice.txt; the best epoch is kept, the per-epoch validation bits per
character show the plateau). Then ``memlens signatures --units bases`` decodes x[t-k],
k = 0..15, from the factor space A h and from each basis coefficient c_j = (A h)_j, on the
states of the first 20,000 characters of WikiText-2 test (scored on the next 10,000; disjoint
from the validation slice), with the linear and the MLP decoder, each with its random-init
control (same config, seeded with the model's seed), for seeds 0, 1 and 2.

Measure: the pairwise Jensen-Shannon divergence between the bases' lag x symbol recall
profiles (memlens ``add_divergence``); the headline is its mean over the r (r - 1) / 2 pairs.
memlens gives the divergence without an interval, so the script adds a parametric one: per
basis, lag and symbol the held-out hits are redrawn as Binomial(support, recall) (200 draws,
seeded) and the 2.5 / 97.5 percentiles of the mean divergence are taken. It ignores the
correlation of neighbouring positions (narrower than a block bootstrap); the spread across
seeds and decoders is shown beside it.

Verdict rule (fixed before the numbers were seen): for each decoder, the trained model is
*above* its control when, for every seed, the lower end of the trained mean divergence's
interval exceeds the upper end of the control's, and the smallest trained value over seeds
exceeds the largest control value. **agree**: above for both decoders; **disagree**: for both
decoders the trained mean divergence is at or below the control's for every seed;
**inconclusive**: anything else. Specialisation (reported, not part of the verdict): the bases
whose lag-1 bits exceed their lag-0 bits with separated block-bootstrap intervals, and each
basis's share of its bits at lags >= 1. Added after the first numbers were seen (exploratory,
not part of the verdict): the mean divergence between the bases' bits-by-lag profiles (how much
the bases differ in *when* they look, whatever the symbols).

    python experiments/exp13_factorised_bases.py [SEEDS]   # default 3 seeds (0, 1, 2)

Runtime on the shared 2-core machine (one thread, about half a core): training 13-31 s per
epoch, 3-6 min per seed; signatures 2.5-5 min (linear) and 5-8 min (MLP) per seed with the
control; seed 2 alone 19 min wall (548 s CPU); 35-60 min in all, about 20 s when cached.
Everything is cached under runs/exp13/. Output: experiments/results/exp13.json,
docs/img/exp13-factorised-bases.png.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
from analysis import IMG, RUNS, WT2, load_result, markdown_header, plt, run_memlens, save_summary

import memlens

os.environ["OMP_NUM_THREADS"] = "1"  # the 2 cores are shared (inherited by memlens)
BASE = RUNS / "exp13"
RANK, HIDDEN, EMB, EPOCHS, TRAIN_CHARS = 16, 256, 32, 12, 400_000
VALID_CHARS = 60_000  # the last characters of WikiText-2 test: the validation slice
K = 15
DECODERS = ("linear", "mlp")
REPORT_LAGS = (0, 1, 2, 4, 8)
DRAWS = 200  # binomial redraws of the divergence's interval
CLAIM = "information diverges in the bases of factorised kernels"
# memlens train on CPU slows down after the first epochs without flushing denormals (exp 3b)
FLUSH_DENORMAL = ("import sys, torch; torch.set_flush_denormal(True); torch.set_num_threads(1); "
                  "from memlens.cli import main; sys.exit(main(sys.argv[1:]))")


def valid_slice():
    """runs/exp13/valid-slice.txt: the last VALID_CHARS characters of WikiText-2 test."""
    path = BASE / "valid-slice.txt"
    if not path.exists():
        BASE.mkdir(parents=True, exist_ok=True)
        text = (WT2 / "test.txt").read_text(encoding="utf-8")
        path.write_text(text[-VALID_CHARS:], encoding="utf-8")
    return path


def train(seed: int):
    """``memlens train`` of the seed's F-LSTM (skipped when the checkpoint exists)."""
    out = BASE / f"flstm-r{RANK}-s{seed}.pt"
    if not out.exists():
        cmd = [sys.executable, "-c", FLUSH_DENORMAL, "train", "--train", str(WT2 / "valid.txt"),
               "--valid", str(valid_slice()), "--unit", "char", "--arch", "flstm", "--rank",
               str(RANK), "--hidden", str(HIDDEN), "--emb", str(EMB), "--epochs", str(EPOCHS),
               "--optimizer", "adam", "--lr", "0.003", "--dropout", "0", "--max-tokens",
               str(TRAIN_CHARS), "--seed", str(seed), "--device", "cpu", "--no-progress",
               "--out", str(out)]
        print("+ memlens", " ".join(cmd[3:]), flush=True)
        with open(BASE / f"train-s{seed}.log", "w") as log:  # the per-epoch lines
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode:
                sys.exit(f"training seed {seed} failed (see {log.name})")
    return out


EPOCH_LINE = re.compile(r"epoch (\d+): train ppl ([\d.]+), valid ppl ([\d.]+), ([\d.]+)s")


def training_curve(seed: int, ckpt) -> dict:
    """Per-epoch validation bits per character (from the training log: the checkpoint is
    the best epoch's and its history stops there), seconds, and the relative gain of the
    last epochs."""
    epochs = EPOCH_LINE.findall((BASE / f"train-s{seed}.log").read_text())
    bits = [math.log2(float(v)) for _, _, v, _ in epochs]
    best = min(h["valid_loss"] for h in memlens.load_checkpoint(ckpt).extra["history"])
    gains = [(a - b) / a for a, b in zip(bits[:-1], bits[1:])]
    return {"valid_bits_per_char": [round(b, 4) for b in bits],
            "epoch_seconds": [float(t) for *_, t in epochs],
            "best_epoch": int(np.argmin(bits)) + 1,
            "best_valid_bits": round(best / math.log(2), 4),
            "relative_gain_last_3_epochs": [round(g, 4) for g in gains[-3:]],
            "converged": bool(max(gains[-3:]) < 0.01)}


def signatures(seed: int, decoder: str, ckpt):
    """The ``--units bases`` result directory of one seed and decoder (with the control)."""
    return run_memlens(BASE / f"bases-s{seed}-{decoder}", "signatures", "--model", str(ckpt),
                       "--corpus", str(WT2 / "test.txt"), "--train-tokens", "20000",
                       "--heldout-tokens", "10000", "--max-delay", str(K), "--units", "bases",
                       "--decoder", decoder, "--control", "random-init", "--seed", str(seed),
                       "--no-progress")


def curves(rows: list[dict]) -> dict:
    """{(role, units): {column: per-lag list}} from a result table."""
    out: dict = {}
    for r in sorted(rows, key=lambda r: r["lag"]):
        c = out.setdefault((r["role"], r["units"]), {k: [] for k in (
            "accuracy", "ci_low", "ci_high", "bits", "bits_ci_low", "bits_ci_high",
            "majority")})
        for k in c:
            c[k].append(r[k])
    return out


def mean_offdiag(m: np.ndarray) -> float:
    return float(m[np.triu_indices(len(m), 1)].mean())


def lag_profile_divergence(cv: dict, role: str, units: list[str]) -> float:
    """Exploratory (added after the first numbers, not in the verdict): the mean pairwise
    Jensen-Shannon divergence between the bases' bits-by-lag profiles (bits_k / sum bits),
    i.e. how much the bases differ in *when* they look, whatever the symbols."""
    from memlens.analyses.signatures import group_divergence

    return mean_offdiag(group_divergence([np.array(cv[(role, u)]["bits"]) for u in units]))


def divergence_interval(out, label: str, units: list[str], seed: int) -> list[float]:
    """2.5 / 97.5 percentiles of the mean between-basis divergence under binomial redraws of
    the held-out hits (module docstring)."""
    from memlens.analyses.signatures import group_divergence

    arrays = np.load(out / "recall.npz")
    where = {}
    for line in arrays["index"]:
        i, rest = line.split(": ", 1)
        name, _, _, unit = (s.strip() for s in rest.split("|"))
        where[(name, unit)] = int(i)
    rec = [np.nan_to_num(arrays[f"recall_{where[(label, u)]}"]) for u in units]
    sup = [arrays[f"support_{where[(label, u)]}"] for u in units]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(DRAWS):
        redrawn = [rng.binomial(s, np.clip(r, 0, 1)) / np.maximum(s, 1) for r, s in zip(rec, sup)]
        draws.append(mean_offdiag(group_divergence(redrawn)))
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def analyse(out, seed: int) -> dict:
    """Per role: divergence (matrix, mean, max, interval), per-basis numbers, specialisation."""
    res = load_result(out)
    cv = curves(res["table"])
    labels = {r["role"]: r["model"] for r in res["table"]}
    div = res["summary"]["basis_divergence"]
    per_role = {}
    for role in ("model", "control"):
        d = div[f"{role}/layer0"]
        units, js = d["bases"], np.array(d["js_divergence"])
        lo, hi = divergence_interval(out, labels[role], units, seed)
        bases = {}
        for u in ["factor", *units]:
            c = cv[(role, u)]
            b = np.array(c["bits"])
            bases[u] = {
                "accuracy": {k: [round(c[x][k], 4) for x in ("accuracy", "ci_low", "ci_high")]
                             for k in REPORT_LAGS},
                "bits": {k: [round(c[x][k], 3) for x in ("bits", "bits_ci_low", "bits_ci_high")]
                         for k in REPORT_LAGS},
                "bits_sum": round(float(b.sum()), 3),
                "share_beyond_lag0": round(float(b[1:].sum() / b.sum()) if b.sum() else 0.0, 3),
                "lag1_above_lag0": bool(c["bits_ci_low"][1] > c["bits_ci_high"][0]),
                "lag0_above_lag1": bool(c["bits_ci_low"][0] > c["bits_ci_high"][1])}
        per_role[role] = {
            "label": labels[role], "js_divergence": np.round(js, 4).tolist(),
            "mean_divergence": round(mean_offdiag(js), 4),
            "mean_divergence_interval": [round(lo, 4), round(hi, 4)],
            "max_divergence": round(float(js.max()), 4), "per_basis": bases,
            "bases_lag1_above_lag0": [u for u in units if bases[u]["lag1_above_lag0"]],
            "share_beyond_lag0_range": [min(bases[u]["share_beyond_lag0"] for u in units),
                                        max(bases[u]["share_beyond_lag0"] for u in units)],
            "mean_lag_profile_divergence": round(lag_profile_divergence(cv, role, units), 4),
            "majority": round(cv[(role, "factor")]["majority"][0], 4)}
    return per_role


def compact(run: dict, detail: bool, matrix: bool) -> dict:
    """The summary's part of one run (< 50 kB in all): headline numbers for every run; per-basis
    accuracy and bits at lags 0 and 1 with intervals (as "v [lo, hi]") for the first seed; the
    divergence matrix (upper triangle, row by row) for the first seed's MLP run."""
    out = {}
    for role, r in run.items():
        units = list(r["per_basis"])
        keep = {k: r[k] for k in ("label", "mean_divergence", "mean_divergence_interval",
                                  "max_divergence", "bases_lag1_above_lag0",
                                  "share_beyond_lag0_range", "mean_lag_profile_divergence")}
        keep["bits_sum"] = [round(r["per_basis"][u]["bits_sum"], 2) for u in units]
        if detail:
            keep["share_beyond_lag0"] = [r["per_basis"][u]["share_beyond_lag0"] for u in units]
            keep["per_basis"] = {u: {f"{m} k={k}": fmt(b[m][k]) for m in ("accuracy", "bits")
                                     for k in (0, 1)} for u, b in r["per_basis"].items()}
        if matrix:
            js = np.array(r["js_divergence"])
            keep["js_divergence_upper"] = [js[i, i + 1:].round(3).tolist()
                                           for i in range(len(js) - 1)]
        out[role] = keep
    return out


def verdict(runs: dict) -> tuple[str, dict]:
    """The rule of the module docstring, per decoder and overall."""
    per_decoder = {}
    for dec in DECODERS:
        seeds = [s for (s, d) in runs if d == dec]
        t = [runs[(s, dec)]["model"] for s in seeds]
        c = [runs[(s, dec)]["control"] for s in seeds]
        above = all(a["mean_divergence_interval"][0] > b["mean_divergence_interval"][1]
                    for a, b in zip(t, c)) and \
            min(a["mean_divergence"] for a in t) > max(b["mean_divergence"] for b in c)
        not_above = all(a["mean_divergence"] <= b["mean_divergence"] for a, b in zip(t, c))
        per_decoder[dec] = "above" if above else "not above" if not_above else "overlapping"
    states = set(per_decoder.values())
    result = "agree" if states == {"above"} else "disagree" if states == {"not above"} \
        else "inconclusive"
    return result, per_decoder


def figure(runs: dict, train_curves: dict, seed: int) -> None:
    p = plt()
    fig, axes = p.subplots(2, 3, figsize=(15, 8.5))
    lags = np.arange(K + 1)
    cmap = p.get_cmap("viridis")
    for ax, role, title in ((axes[0, 0], "model", "trained"),
                            (axes[0, 1], "control", "random-init control")):
        res = load_result(BASE / f"bases-s{seed}-mlp")
        cv = curves(res["table"])
        for j in range(RANK):
            ax.plot(lags, cv[(role, f"basis:{j}")]["bits"], color=cmap(j / RANK), lw=1,
                    marker="o", ms=2)
        ax.set_title(f"{title}: bits per basis, MLP decoder, seed {seed}", fontsize=9)
        ax.set_xlabel("lag k (characters)")
        ax.set_ylabel("bits about x[t-k] from c_j = (A h)_j")
    ymax = max(axes[0, 0].get_ylim()[1], axes[0, 1].get_ylim()[1])
    for ax in axes[0, :2]:
        ax.set_ylim(0, ymax)
    ax = axes[0, 2]
    x = 0
    ticks, names = [], []
    for dec in DECODERS:
        for s in sorted({s for (s, d) in runs if d == dec}):
            for role, color in (("model", "C0"), ("control", "C1")):
                r = runs[(s, dec)][role]
                m, (lo, hi) = r["mean_divergence"], r["mean_divergence_interval"]
                ax.bar(x, m, color=color, yerr=[[m - lo], [hi - m]], capsize=3,
                       label={"model": "trained", "control": "random init"}[role]
                       if x < 2 else None)
                x += 1
            ticks.append(x - 1.5)
            names.append(f"{dec}\nseed {s}")
            x += 0.6
    ax.set_xticks(ticks, names, fontsize=8)
    ax.set_ylabel("mean JS divergence between bases (bits)")
    ax.set_title("mean between-basis divergence [binomial 95% interval]", fontsize=9)
    ax.legend(fontsize=8)
    for ax, role, title in ((axes[1, 0], "model", "trained"),
                            (axes[1, 1], "control", "random-init control")):
        js = np.array(runs[(seed, "mlp")][role]["js_divergence"])
        im = ax.imshow(js, vmin=0, vmax=0.5, cmap="magma")
        ax.set_title(f"{title}: JS divergence between bases (MLP, seed {seed})", fontsize=9)
        ax.set_xlabel("basis j")
        ax.set_ylabel("basis i")
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[1, 2]
    for s, c in train_curves.items():
        b = c["valid_bits_per_char"]
        ax.plot(np.arange(1, len(b) + 1), b, marker="o", ms=3, label=f"seed {s}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation bits per character")
    ax.set_title("training: validation curve (last 60k chars of WT2 test)", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle(f"Experiment 13: bases of a rank-{RANK} factorised LSTM (H={HIDDEN}), "
                 "trained vs random init")
    fig.tight_layout()
    fig.savefig(IMG / "exp13-factorised-bases.png", dpi=100)


def fmt(v: list[float], d: int = 3) -> str:
    return f"{v[0]:.{d}f} [{v[1]:.{d}f}, {v[2]:.{d}f}]"


def main() -> None:
    n_seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seeds = list(range(n_seeds))
    train_curves, runs = {}, {}
    for s in seeds:  # seed by seed: a finished seed is complete in runs/ before the next
        ckpt = train(s)
        train_curves[s] = training_curve(s, ckpt)
        for dec in DECODERS:
            runs[(s, dec)] = analyse(signatures(s, dec, ckpt), s)
    result, per_decoder = verdict(runs)
    summary = {"claim": CLAIM, "settings": {
        "model": f"1-layer character F-LSTM, E={EMB}, H={HIDDEN}, rank {RANK}, Adam lr 0.003, "
                 f"dropout 0, {EPOCHS} epochs on the first {TRAIN_CHARS} characters of WT2 "
                 f"valid; validation: last {VALID_CHARS} characters of WT2 test",
        "signatures": f"--units bases, K={K}, decoders on the first 20,000 characters of WT2 "
                      "test, scored on the next 10,000, random-init control, 1000 block-"
                      "bootstrap resamples of 20 blocks",
        "divergence_interval": f"binomial redraws of the held-out hits ({DRAWS})",
        "units (order of bits_sum, share_beyond_lag0)": ["factor"] + [f"basis:{j}"
                                                                     for j in range(RANK)]},
        "training": {str(s): c for s, c in train_curves.items()},
        "runs": {f"s{s}-{d}": compact(r, s == seeds[0], d == "mlp")
                 for (s, d), r in runs.items()},
        "verdict_per_decoder": per_decoder, "verdict": result}
    save_summary("exp13", summary)
    figure(runs, train_curves, seeds[0])

    for s, c in train_curves.items():
        print(f"seed {s}: validation bits/char per epoch {c['valid_bits_per_char']}, gains of "
              f"the last 3 epochs {c['relative_gain_last_3_epochs']}")
    markdown_header("seed", "decoder", "mean JS trained [95%]", "mean JS control [95%]",
                    "max trained / control", "bases lag1 > lag0 (trained / control)",
                    "share k>=1 range trained / control", "lag-profile JS trained / control")
    for (s, d), r in runs.items():
        m, c = r["model"], r["control"]
        print(f"| {s} | {d} | {m['mean_divergence']:.3f} [{m['mean_divergence_interval'][0]:.3f}"
              f", {m['mean_divergence_interval'][1]:.3f}] | {c['mean_divergence']:.3f} "
              f"[{c['mean_divergence_interval'][0]:.3f}, {c['mean_divergence_interval'][1]:.3f}]"
              f" | {m['max_divergence']:.3f} / {c['max_divergence']:.3f} | "
              f"{len(m['bases_lag1_above_lag0'])} / {len(c['bases_lag1_above_lag0'])} | "
              f"{m['share_beyond_lag0_range']} / {c['share_beyond_lag0_range']} | "
              f"{m['mean_lag_profile_divergence']:.3f} / {c['mean_lag_profile_divergence']:.3f} |")
    for d in DECODERS:
        r = runs[(seeds[0], d)]
        markdown_header("units", *(f"{role} acc k={k}" for role in ("trained", "control")
                                   for k in (0, 1, 2)), "trained bits k=0 / 1",
                        "bits sum trained / control", "share k>=1 trained / control")
        for u, b in r["model"]["per_basis"].items():
            cb = r["control"]["per_basis"][u]
            print(f"| {u} ({d}) | " + " | ".join(fmt(x["accuracy"][k]) for x in (b, cb)
                                                  for k in (0, 1, 2))
                  + f" | {b['bits'][0][0]:.2f} / {b['bits'][1][0]:.2f} | {b['bits_sum']:.2f} / "
                  f"{cb['bits_sum']:.2f} | {b['share_beyond_lag0']:.2f} / "
                  f"{cb['share_beyond_lag0']:.2f} |")
    print(f"verdict per decoder: {per_decoder}; verdict: {result}")


if __name__ == "__main__":
    main()
