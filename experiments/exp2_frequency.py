"""Experiment 2: memory by word frequency. Do infrequent words keep higher memory for longer
(Verwimp et al.: yes)? Classes: 5 bins of equal training-token mass from the model's own
WikiText-2 counts (freq1of5 = the most frequent words, freq5of5 = the rarest), source words
from UD EWT dev, 1-layer word LSTM E=64 H=256, K = 50.

    python experiments/exp2_frequency.py    # needs runs/wt2-lstm-h256-e10.pt

Output: experiments/results/exp2.json, docs/img/exp2-frequency.png.
"""

from __future__ import annotations

from analysis import (
    EWT_DEV,
    HEADLINE_DELAYS,
    IMG,
    RUNS,
    class_counts,
    curve,
    errorbars,
    fmt_ci,
    load_result,
    markdown_header,
    need_model,
    plt,
    run_memlens,
    save_summary,
    values_at,
)

MODEL = RUNS / "wt2-lstm-h256-e10.pt"
OUT = RUNS / "exp-ewt-freq5"
BINS = [f"freq{k}of5" for k in range(1, 6)]


def main() -> None:
    run_memlens(OUT, "gradients", "--model", str(need_model(MODEL)), "--corpus", str(EWT_DEV),
                "--format", "conllu", "--classes", "freq:5", "--max-delay", "50",
                "--max-tokens", "12000", "--no-progress")
    result = load_result(OUT)
    rows = result["table"]
    per_bin = {}
    counts = class_counts(rows)
    for name in BINS:
        _, m, _, _ = curve(rows, name)
        per_bin[name] = {"count_at_delay0": counts[name],
                         "sum_sv": values_at(rows, name),
                         # memory relative to the word's own immediate effect
                         "relative_to_tau0": {int(t): float(m[t] / m[0]) for t in HEADLINE_DELAYS},
                         "curve": [float(v) for v in m]}
    # the claim, delay by delay: is the rarest bin above the most frequent, beyond overlap?
    verdicts = {}
    for t in HEADLINE_DELAYS[1:]:
        rare, freq = per_bin[BINS[-1]]["sum_sv"][t], per_bin[BINS[0]]["sum_sv"][t]
        if rare[1] > freq[2]:
            verdicts[t] = "rare higher"
        elif rare[2] < freq[1]:
            verdicts[t] = "frequent higher"
        else:
            verdicts[t] = "intervals overlap"
    order = {t: sorted(BINS, key=lambda b: -per_bin[b]["sum_sv"][t][0]) for t in HEADLINE_DELAYS}
    long = [verdicts[t] for t in (5, 10, 20, 50)]
    finding = ("agree" if all(v == "rare higher" for v in long) else
               "disagree" if all(v == "frequent higher" for v in long) else "inconclusive")
    summary = {"model": MODEL.name, "corpus": result["corpus"], "settings": result["settings"],
               "bins": per_bin, "rare_vs_frequent": verdicts, "ranking": order,
               "finding": finding}
    save_summary("exp2", summary)

    p = plt()
    fig, axes = p.subplots(1, 2, figsize=(10, 3.8))
    for k, name in enumerate(BINS):
        tau, m, lo, hi = curve(rows, name)
        label = f"{name} ({'most frequent' if k == 0 else 'rarest' if k == 4 else ''})"
        axes[0].plot(tau, m, color=f"C{k}", label=label.replace(" ()", ""))
        errorbars(axes[0], tau, m, lo, hi, f"C{k}")
        axes[1].plot(tau, m / m[0], color=f"C{k}")
    for ax, ylabel in zip(axes, ("sum of singular values (normalised)", "relative to delay 0")):
        ax.set_yscale("log")
        ax.set_xlabel("delay tau")
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
    fig.suptitle("Experiment 2: memory by training-frequency bin (equal token mass)")
    fig.tight_layout()
    fig.savefig(IMG / "exp2-frequency.png", dpi=110)

    markdown_header("bin", "count", *(f"tau {t}" for t in HEADLINE_DELAYS))
    for name in BINS:
        b = per_bin[name]
        print(f"| {name} | {b['count_at_delay0']} | "
              + " | ".join(fmt_ci(*b["sum_sv"][t]) for t in HEADLINE_DELAYS) + " |")
    print("rarest vs most frequent:", verdicts)
    print(f"finding: {finding}")


if __name__ == "__main__":
    main()
