"""Experiment 9: do decreasing singular values mean decreasing importance of the input?
A synthetic corpus with a known answer (Verwimp et al. 2020's claim; issue 24, item 3).

    python experiments/exp9_graded_importance.py [SEEDS]   # default 5 seeds (0..4)

Three binary features f1, f2, f3 decide the token two steps later with reliability 0.95, 0.8,
0.65; an irrelevant sign z decides nothing but has by far the largest spread in the fixed
embedding table (memlens.studies.graded). A small LSTM (H=24, only recurrent and output layers
trained) per seed, in two settings of the features' raw spreads: "against" (f1 widest, f3
narrowest: the default) and "with" (f1 narrowest: a control in which the raw order happens to
match). Output: experiments/results/exp9.json, docs/img/exp9-graded-importance.png and the
tables quoted in docs/experiments/graded-importance.md. About 80 s on 2 idle cores.
"""

from __future__ import annotations

import sys

import numpy as np
from analysis import IMG, fmt_ci, markdown_header, plt, save_summary

from memlens.studies.graded import GradedConfig, run_graded_importance
from memlens.studies.graded.study import NAMES

SEEDS = range(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
SETTINGS = {"against": GradedConfig().scales, "with": tuple(reversed(GradedConfig().scales))}
CLAIM = "decreasing singular values = decreasing importance of the input"


def per_seed(out: dict) -> dict:
    """The compact per-run record: checks and the planted delays' readings."""
    c = out["checks"]
    keep = ("normalised_order", "raw_order", "normalised_top", "raw_top",
            "normalised_order_as_planted", "normalised_aligned",
            "normalised_intervals_separated", "raw_order_as_planted", "only_after_normalisation")
    return {"seed": out["config"]["seed"], "training": out["training"],
            **{k: c[k] for k in keep},
            "planted_delays": [r for r in out["delays"] if r["planted"]]}


def table(out: dict) -> None:
    """Markdown: per delay, the strength of each direction in both spaces, and alignments."""
    markdown_header("delay", *[f"{n} normalised" for n in NAMES], "v1..v3 . f1..f3",
                    *[f"{n} raw" for n in NAMES], "raw v1 nearest")
    for r in out["delays"]:
        n, w = r["normalised"], r["raw"]
        print(f"| {r['delay']}{' (planted)' if r['planted'] else ''} | "
              + " | ".join(fmt_ci(*n["strength"][k]) for k in NAMES) + " | "
              + " / ".join(f"{v[0]:.2f}" for v in n["alignment"].values()) + " | "
              + " | ".join(fmt_ci(*w["strength"][k]) for k in NAMES) + f" | {w['top']} |")


def figure(out: dict) -> None:
    """Strength per direction vs delay, normalised and raw (seed 0, default setting)."""
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 3, figsize=(13, 3.8))
    tau = np.array([r["delay"] for r in out["delays"]])
    for ax, space in zip(axes[:2], ("normalised", "raw")):
        for name in NAMES:
            v = np.array([r[space]["strength"][name] for r in out["delays"]])
            ax.errorbar(tau, v[:, 0], yerr=[v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]],
                        marker="o", capsize=3, label=name)
        ax.set_yscale("log")
        ax.set_title(f"{space}: strength |G d| of each planted direction")
        ax.set_xlabel("delay tau")
        ax.axvspan(-0.3, out["config"]["lag"] - 0.7, color="0.92", zorder=0)
        ax.legend()
    for i, name in enumerate(NAMES[:3]):
        a = [r["normalised"]["alignment"][name][0] for r in out["delays"]]
        axes[2].plot(tau, a, marker="o", label=f"|v{i + 1} . {name}|")
    axes[2].set_ylim(0, 1.05)
    axes[2].set_title("normalised: i-th right-singular vector vs f_i")
    axes[2].set_xlabel("delay tau")
    axes[2].axvspan(-0.3, out["config"]["lag"] - 0.7, color="0.92", zorder=0)
    axes[2].legend()
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "exp9-graded-importance.png", dpi=110)
    print(f"figure: {IMG / 'exp9-graded-importance.png'}")


def main() -> None:
    runs: dict[str, list[dict]] = {}
    first = None
    for setting, scales in SETTINGS.items():
        runs[setting] = []
        for seed in SEEDS:
            out = run_graded_importance(seed=seed, scales=scales)
            first = first or out
            runs[setting].append(per_seed(out))
            print(f"{setting} seed {seed}: normalised {out['checks']['normalised_order']}, "
                  f"raw {out['checks']['raw_order']}, held-out loss "
                  f"{out['training']['heldout_loss']:.4f} (floor "
                  f"{out['training']['floor']:.4f})")
    print("\nseed 0, default setting (spreads against importance):")
    table(first)
    tally = {s: {k: sum(r[k] for r in rs) for k in (
        "normalised_order_as_planted", "normalised_aligned", "normalised_intervals_separated",
        "raw_order_as_planted", "only_after_normalisation")} for s, rs in runs.items()}
    print("\nruns out of", len(SEEDS), "per setting:", tally)
    figure(first)
    save_summary("exp9", {"claim": CLAIM, "settings": {s: list(v) for s, v in SETTINGS.items()},
                          "config": first["config"], "seed0": first, "runs": runs,
                          "tally": tally, "seeds": len(SEEDS)})


if __name__ == "__main__":
    main()
