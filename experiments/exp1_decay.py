"""Experiment 1: memory (sum of singular values of the normalised average state gradient) vs
delay 0..50 for a 1-layer word LSTM (E=64, H=256), and whether the decay is exponential or a
power law (Verwimp et al.: it decays quickly, but not exponentially).

    python experiments/exp1_decay.py        # needs runs/wt2-lstm-h256-e10.pt (train_models.sh)

The state-gradient run (UD EWT dev, UPOS classes, 22,000 tokens, K = 50) is shared with
experiment 3. Output: experiments/results/exp1.json, docs/img/exp1-decay.png.
"""

from __future__ import annotations

import numpy as np
from analysis import (
    EWT_DEV,
    HEADLINE_DELAYS,
    IMG,
    RUNS,
    curve,
    fit_decay,
    fmt_ci,
    load_result,
    markdown_header,
    need_model,
    plt,
    run_memlens,
    save_summary,
)

MODEL = RUNS / "wt2-lstm-h256-e10.pt"
OUT = RUNS / "exp-ewt-upos"


def gradients_upos():
    """The shared UPOS state-gradient run of experiments 1 and 3."""
    return run_memlens(OUT, "gradients", "--model", str(need_model(MODEL)), "--corpus",
                       str(EWT_DEV), "--format", "conllu", "--classes", "upos", "--max-delay",
                       "50", "--max-tokens", "22000", "--no-progress")


def main() -> None:
    result = load_result(gradients_upos())
    tau, memory, low, high = curve(result["table"])
    fits = {name: fit_decay(tau[(tau >= a) & (tau <= b)], memory[(tau >= a) & (tau <= b)])
            for name, (a, b) in {"1-50": (1, 50), "1-10": (1, 10), "10-50": (10, 50)}.items()}
    # local slopes: constant in log-log for a power law, constant in semi-log for an exponential
    pairs = [(1, 2), (2, 5), (5, 10), (10, 20), (20, 50)]
    local = [{"from": a, "to": b,
              "loglog_slope": float(np.log(memory[b] / memory[a]) / np.log(b / a)),
              "semilog_slope_per_step": float(np.log(memory[b] / memory[a]) / (b - a))}
             for a, b in pairs]
    best = fits["1-50"]
    summary = {
        "model": str(MODEL.name), "corpus": result["corpus"], "settings": result["settings"],
        "memory": {int(t): {"sum_sv": float(m), "ci_low": float(lo), "ci_high": float(hi)}
                   for t, m, lo, hi in zip(tau, memory, low, high)},
        "fits": fits, "local_slopes": local,
        "finding": ("agree" if best["better"] == "power" else "disagree"),
    }
    save_summary("exp1", summary)

    p = plt()
    fig, axes = p.subplots(1, 2, figsize=(10, 3.8))
    for ax, logx in zip(axes, (False, True)):
        ax.fill_between(tau, low, high, alpha=0.3, color="C0", lw=0)
        ax.plot(tau, memory, "o", ms=3, color="C0", label="measured (95% interval)")
        t = tau[tau >= 1]
        e, pw = best["exponential"], best["power"]
        ax.plot(t, np.exp(e["intercept"] + e["slope"] * t), "--", color="C3",
                label=f"exponential, decay length {e['decay_length']:.1f} (R² {e['r2']:.3f})")
        ax.plot(t, np.exp(pw["intercept"] + pw["slope"] * np.log(t)), "-", color="C2",
                label=f"power law, exponent {pw['exponent']:.2f} (R² {pw['r2']:.3f})")
        ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel("delay tau" + (" (log)" if logx else ""))
        ax.set_ylabel("sum of singular values (normalised)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Experiment 1: LSTM memory vs delay, fits on tau = 1..50")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "exp1-decay.png", dpi=110)

    markdown_header("delay", *(str(t) for t in HEADLINE_DELAYS))
    print("| sum of sv | " + " | ".join(fmt_ci(memory[t], low[t], high[t])
                                         for t in HEADLINE_DELAYS) + " |")
    for name, f in fits.items():
        print(f"fit tau {name}: exponential RSS {f['exponential']['rss']:.3f} "
              f"(R² {f['exponential']['r2']:.4f}, length {f['exponential']['decay_length']:.2f})"
              f", power RSS {f['power']['rss']:.3f} (R² {f['power']['r2']:.4f}, exponent "
              f"{f['power']['exponent']:.2f}) -> {f['better']}")
    for s in local:
        print(f"tau {s['from']}->{s['to']}: log-log slope {s['loglog_slope']:.2f}, "
              f"semi-log slope {s['semilog_slope_per_step']:.3f}/step")
    print(f"finding: {summary['finding']}")


if __name__ == "__main__":
    main()
