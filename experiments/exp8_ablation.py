"""Experiment 8: how far back the experiment-1 word LSTM *uses* its context (context ablation,
Khandelwal et al. 2018), beside how far back its state *holds* the input (state gradients,
memory signature) -- on WikiText-2 test.

    python experiments/exp8_ablation.py [MODEL]   # default runs/wt2-lstm-h256-e10.pt

Khandelwal et al. (LSTM LMs on PTB and WikiText-103): about 200 tokens of context used,
word order mattering only nearby (about 20 tokens). Output: experiments/results/exp8.json,
docs/img/exp8-ablation.png, the tables quoted in docs/experiments/exp8.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from analysis import (
    DATA,
    IMG,
    RUNS,
    curve,
    fmt_ci,
    load_result,
    markdown_header,
    need_model,
    plt,
    run_memlens,
    save_summary,
)

MODEL = Path(sys.argv[1]) if len(sys.argv) > 1 else RUNS / "wt2-lstm-h256-e10.pt"
TEST = DATA / "wikitext-2" / "test.txt"
DISTANCES = (1, 2, 3, 5, 10, 20, 50, 100, 200)
TAG = MODEL.stem
CLAIM = {"effective_context": 200, "order_matters_within": 20}


def main() -> None:
    model = str(need_model(MODEL))
    abl = load_result(run_memlens(
        RUNS / f"exp8-ablation-{TAG}", "ablation", "--model", model, "--corpus", str(TEST),
        "--distances", ",".join(map(str, DISTANCES)), "--context", "300", "--targets", "1000",
        "--bootstrap", "1000", "--seed", "0", "--no-progress"))
    grad = load_result(run_memlens(
        RUNS / f"exp8-gradients-{TAG}", "gradients", "--model", model, "--corpus", str(TEST),
        "--max-delay", "50", "--max-tokens", "5000", "--no-progress"))
    sig = load_result(run_memlens(
        RUNS / f"exp8-signatures-{TAG}", "signatures", "--model", model, "--corpus", str(TEST),
        "--max-delay", "20", "--symbols", "top:1000", "--control", "none", "--ngram", "0",
        "--train-tokens", "20000", "--heldout-tokens", "5000"))

    s = abl["summary"]
    rows = abl["table"]
    inc = {p: {r["distance"]: r for r in rows if r["perturbation"] == p}
           for p in ("shuffle", "replace", "drop")}
    print(f"unperturbed loss {s['base_loss_nats']:.3f} nats (perplexity "
          f"{s['base_perplexity']:.1f}), {s['targets']} targets, window {s['context']}; "
          f"tolerance {s['tolerance_nats']:.4f} nats (1%)")
    markdown_header("k", *[f"{p}: increase (nats) [95% CI]" for p in inc])
    for k in DISTANCES:
        print(f"| {k} | " + " | ".join(
            fmt_ci(inc[p][k]["increase_nats"], inc[p][k]["increase_low"],
                   inc[p][k]["increase_high"]) for p in inc) + " |")
    eff = s["effective_context"]
    print("effective context:", eff)

    tau, memory, lo, hi = curve(grad["table"])
    rel = memory / memory[0]
    grad_horizon = {f"{q:g}": (int(tau[np.argmax(rel < q)]) if (rel < q).any() else None)
                    for q in (0.1, 0.01)}
    sig_rows = sorted((r for r in sig["table"] if r.get("role") != "ngram"),
                      key=lambda r: r["lag"])
    sig_acc = {int(r["lag"]): [r["accuracy"], r.get("ci_low"), r.get("ci_high"),
                               r.get("majority")] for r in sig_rows}
    span = sig["summary"]["signatures"][0]["memory_span"] if "signatures" in sig[
        "summary"] else sig["summary"].get("memory_span")
    print("state gradient (cell, sum of singular values) relative to delay 0:",
          {int(t): round(float(rel[t]), 4) for t in (1, 2, 5, 10, 20, 50)})
    print("state-gradient horizon (first delay below 10% / 1% of delay 0):", grad_horizon)
    print("signature memory span (last lag above majority + 0.05):", span)

    print("last distance with a significant increase (interval above 0):",
          s["last_significant_distance"])
    summary = {
        "model": MODEL.name, "corpus": abl["corpus"], "settings": abl["settings"],
        "base_loss_nats": s["base_loss_nats"], "base_perplexity": s["base_perplexity"],
        "increase": {p: {int(k): [r["increase_nats"], r["increase_low"], r["increase_high"]]
                         for k, r in d.items()} for p, d in inc.items()},
        "effective_context": eff, "tolerance_nats": s["tolerance_nats"],
        "last_significant_distance": s["last_significant_distance"],
        "state_gradient": {int(t): {"sum_sv": float(m), "relative": float(r),
                                    "ci_low": float(a), "ci_high": float(b)}
                           for t, m, r, a, b in zip(tau, memory, rel, lo, hi)},
        "state_gradient_horizon": grad_horizon,
        "signature": {"accuracy": sig_acc, "memory_span": span},
        "tokens_per_second": abl.get("performance", {}).get("token_steps_per_second"),
        "khandelwal": CLAIM,
    }
    save_summary("exp8", summary)

    fig, axes = plt().subplots(1, 2, figsize=(11, 4))
    for p, d in inc.items():
        ks = np.array(sorted(d))
        m = np.array([d[k]["increase_nats"] for k in ks])
        a = np.array([d[k]["increase_low"] for k in ks])
        b = np.array([d[k]["increase_high"] for k in ks])
        line, = axes[0].plot(ks, m, marker="o", label=p)
        axes[0].fill_between(ks, a, b, color=line.get_color(), alpha=0.2, linewidth=0)
    axes[0].axhline(s["tolerance_nats"], color="grey", ls=":", label="tolerance (1%)")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("distance k (tokens kept intact)")
    axes[0].set_ylabel("loss increase (nats)")
    axes[0].set_title("uses: context ablation")
    axes[0].legend(fontsize=8)
    axes[1].plot(tau[1:], rel[1:], marker=".", label="state gradient / delay 0")
    lags = np.array(sorted(sig_acc))
    acc = np.array([sig_acc[k][0] for k in lags])
    maj = np.array([sig_acc[k][3] or 0.0 for k in lags])
    above = np.where(acc > maj, acc - maj, np.nan)  # log axis: lags above majority only
    axes[1].plot(lags[1:], above[1:], marker="s", label="signature accuracy - majority")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("delay / lag")
    axes[1].set_title("holds: state gradient and signature")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Experiment 8: {MODEL.name} on WikiText-2 test")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "exp8-ablation.png", dpi=110)
    print(f"figure: {IMG / 'exp8-ablation.png'}")


if __name__ == "__main__":
    main()
