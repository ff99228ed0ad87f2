"""Experiment 4: memory of LSTM vs GRU vs Elman RNN (H=256), and LSTM hidden size 128 / 256 /
512. All word LMs with E=64, trained 10 epochs on WikiText-2 valid (experiments/
train_models.sh); state gradients of the LSTM cell (the paper's readout) and hidden state and
of the GRU/RNN hidden state on the first 5,000 tokens of UD EWT dev, K = 50, overall average.

    python experiments/exp4_architectures.py   # needs runs/wt2-{lstm,gru,rnn}-h*-e10.pt

Output: experiments/results/exp4.json, docs/img/exp4-architectures.png.
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
    law_summary,
    load_result,
    markdown_header,
    need_model,
    plt,
    run_memlens,
    save_summary,
    values_at,
)

# label -> (checkpoint stem, readout; None = the default: cell for LSTMs, hidden otherwise).
# "LSTM H256 hidden" compares like with like against the GRU/RNN hidden state.
MODELS = {"LSTM H128": ("lstm-h128", None), "LSTM H256": ("lstm-h256", None),
          "LSTM H512": ("lstm-h512", None), "GRU H256": ("gru-h256", None),
          "RNN H256": ("rnn-h256", None), "LSTM H256 hidden": ("lstm-h256", "hidden")}
TOKENS = 5000


def separated(a: list[float], b: list[float]) -> str:
    """'>' / '<' when the 95% intervals of a and b do not overlap, else '~'."""
    return ">" if a[1] > b[2] else "<" if a[2] < b[1] else "~"


def main() -> None:
    per_model = {}
    for label, (stem, state) in MODELS.items():
        extra = ("--state", state) if state else ()
        out = run_memlens(RUNS / (f"exp-arch-{stem}" + (f"-{state}" if state else "")),
                          "gradients", "--model", str(need_model(RUNS / f"wt2-{stem}-e10.pt")),
                          "--corpus", str(EWT_DEV), "--format", "conllu", "--max-delay", "50",
                          "--max-tokens", str(TOKENS), "--no-progress", *extra)
        result = load_result(out)
        tau, m, lo, hi = curve(result["table"])
        fit = fit_decay(tau, m)
        per_model[label] = {
            "readout": result["settings"].get("readout", result["settings"].get("state")),
            "tokens_per_second": result["performance"]["tokens_per_second"],
            "sum_sv": values_at(result["table"]),
            "relative_to_tau1": {int(t): float(m[t] / m[1]) for t in HEADLINE_DELAYS},
            "delay_below_1pct_of_tau0": int(np.argmax(m < 0.01 * m[0])) if (m < 0.01 * m[0]).any()
            else None,
            "fit": law_summary(fit),
            "curve": [float(v) for v in m], "ci_low": [float(v) for v in lo],
            "ci_high": [float(v) for v in hi]}
    comparisons = {}
    for a, b in (("LSTM H256", "GRU H256"), ("LSTM H256", "RNN H256"), ("GRU H256", "RNN H256"),
                 ("LSTM H256 hidden", "GRU H256"), ("LSTM H256 hidden", "RNN H256"),
                 ("LSTM H512", "LSTM H256"), ("LSTM H256", "LSTM H128")):
        comparisons[f"{a} vs {b}"] = {
            int(t): separated(per_model[a]["sum_sv"][t], per_model[b]["sum_sv"][t])
            for t in HEADLINE_DELAYS}
    save_summary("exp4", {"tokens": TOKENS, "corpus": str(EWT_DEV.name), "models": per_model,
                          "comparisons": comparisons})

    p = plt()
    fig, axes = p.subplots(1, 2, figsize=(10, 3.8))
    for ax, group in zip(axes, (("LSTM H256", "LSTM H256 hidden", "GRU H256", "RNN H256"),
                                ("LSTM H128", "LSTM H256", "LSTM H512"))):
        for k, label in enumerate(group):
            d = per_model[label]
            t = np.arange(len(d["curve"]))
            ax.fill_between(t, d["ci_low"], d["ci_high"], color=f"C{k}", alpha=0.25, lw=0)
            ax.plot(t, d["curve"], color=f"C{k}", label=f"{label} ({d['readout']})")
        ax.set_yscale("log")
        ax.set_xlabel("delay tau")
        ax.set_ylabel("sum of singular values (normalised)")
        ax.legend(fontsize=8)
    axes[0].set_title("architecture")
    axes[1].set_title("LSTM hidden size")
    fig.suptitle(f"Experiment 4: memory vs delay, UD EWT dev ({TOKENS} tokens), 95% intervals")
    fig.tight_layout()
    fig.savefig(IMG / "exp4-architectures.png", dpi=110)

    markdown_header("model", "readout", *(f"tau {t}" for t in HEADLINE_DELAYS), "fit (better)",
                    "power exponent", "exp. decay length")
    for label, d in per_model.items():
        print(f"| {label} | {d['readout']} | "
              + " | ".join(fmt_ci(*d["sum_sv"][t]) for t in HEADLINE_DELAYS)
              + f" | {d['fit']['better']} | {d['fit']['power_exponent']:.2f} | "
              f"{d['fit']['exp_decay_length']:.2f} |")
    for name, c in comparisons.items():
        print(name, c)


if __name__ == "__main__":
    main()
