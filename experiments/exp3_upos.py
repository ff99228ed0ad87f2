"""Experiment 3: memory by part of speech. Which UPOS class is remembered best (Verwimp et
al.: nouns)? Uses the state-gradient run of experiment 1 (UD EWT dev, 22,000 tokens, K = 50,
1-layer word LSTM E=64 H=256); classes with fewer than 300 source tokens are left out.

    python experiments/exp3_upos.py         # needs runs/wt2-lstm-h256-e10.pt

Output: experiments/results/exp3.json, docs/img/exp3-upos.png.
"""

from __future__ import annotations

import numpy as np
from analysis import HEADLINE_DELAYS, IMG, curve, fmt_ci, load_result, plt, save_summary
from exp1_decay import MODEL, gradients_upos

MIN_COUNT = 300


def main() -> None:
    result = load_result(gradients_upos())
    rows = result["table"]
    counts = {r["class"]: r["count"] for r in rows if r["delay"] == 0 and r["class"] != "all"}
    classes = sorted(c for c, n in counts.items() if n >= MIN_COUNT)
    table = {}
    for c in classes:
        tau, m, lo, hi = curve(rows, c)
        table[c] = {int(t): [float(m[t]), float(lo[t]), float(hi[t])] for t in HEADLINE_DELAYS}
    ranking, best = {}, {}
    for t in HEADLINE_DELAYS:
        order = sorted(classes, key=lambda c: -table[c][t][0])
        ranking[t] = order
        top, second = table[order[0]][t], table[order[1]][t]
        best[t] = {"class": order[0], "runner_up": order[1],
                   "separated": bool(top[1] > second[2]),
                   "noun_rank": order.index("NOUN") + 1 if "NOUN" in order else None}
    long = [best[t] for t in (5, 10, 20)]
    if all(b["class"] == "NOUN" and b["separated"] for b in long):
        finding = "agree"
    elif all(b["noun_rank"] and b["noun_rank"] > 1 and
             table[b["class"]][t][1] > table["NOUN"][t][2] for b, t in zip(long, (5, 10, 20))):
        finding = "disagree"
    else:
        finding = "inconclusive"
    summary = {"model": MODEL.name, "corpus": result["corpus"], "min_count": MIN_COUNT,
               "counts": counts, "sum_sv": table, "ranking": ranking, "best": best,
               "finding": finding}
    save_summary("exp3", summary)

    p = plt()
    fig, ax = p.subplots(figsize=(7.5, 4.2))
    for k, c in enumerate(classes):
        tau, m, lo, hi = curve(rows, c)
        style = "-" if k < 10 else "--"
        ax.plot(tau, m, style, color=f"C{k % 10}", lw=2.5 if c == "NOUN" else 1.2, label=c)
        ok = ~np.isnan(lo)
        ax.errorbar(tau[ok], m[ok], yerr=[m[ok] - lo[ok], hi[ok] - m[ok]], fmt="none",
                    color=f"C{k % 10}", capsize=2)
    ax.set_yscale("log")
    ax.set_xlabel("delay tau")
    ax.set_ylabel("sum of singular values (normalised)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Experiment 3: memory by UPOS of the source word (95% block-bootstrap)")
    fig.tight_layout()
    fig.savefig(IMG / "exp3-upos.png", dpi=110)

    print("| UPOS | count | " + " | ".join(f"tau {t}" for t in HEADLINE_DELAYS) + " |")
    print("|---" * (len(HEADLINE_DELAYS) + 2) + "|")
    for c in sorted(classes, key=lambda c: -table[c][10][0]):
        print(f"| {c} | {counts[c]} | "
              + " | ".join(fmt_ci(*table[c][t]) for t in HEADLINE_DELAYS) + " |")
    for t in HEADLINE_DELAYS:
        print(f"tau {t}: best {best[t]['class']} (runner-up {best[t]['runner_up']}, "
              f"separated: {best[t]['separated']}), NOUN rank {best[t]['noun_rank']}")
    print(f"finding: {finding}")


if __name__ == "__main__":
    main()
