"""Experiment 5: character-level memory signatures (Koppula et al.): a 2-layer character LSTM
(E=32, H=512, trained 3 epochs on WikiText-2 valid) vs its random-init control vs the context
window of a 5-gram LM (Kneser-Ney, trained on WikiText-2 valid), per layer; decoders trained on
the states of the first 30,000 characters of WikiText-2 test and scored on the next 10,000;
lags 0..30, hidden readout, linear decoders.

    python experiments/exp5_char_signatures.py   # needs runs/wt2-char-lstm2.pt

Claim under test: signatures separate n-gram from recurrent memory at the character level
and differ per layer. Output: experiments/results/exp5.json, docs/img/exp5-char-signatures.png and
exp5-recall-heatmap.png.
"""

from __future__ import annotations

import shutil

import numpy as np
from analysis import (
    IMG,
    RUNS,
    WT2,
    load_result,
    markdown_header,
    need_model,
    plt,
    run_memlens,
    save_summary,
)

MODEL = RUNS / "wt2-char-lstm2.pt"
OUT = RUNS / "exp-char-signatures"
LAGS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30)


def main() -> None:
    run_memlens(OUT, "signatures", "--model", str(need_model(MODEL)), "--corpus",
                str(WT2 / "test.txt"), "--train-tokens", "30000", "--heldout-tokens", "10000",
                "--layer", "all", "--readout", "hidden", "--max-delay", "30", "--ngram", "5",
                "--control", "random-init", "--lm-train", str(WT2 / "valid.txt"))
    result = load_result(OUT)
    rows = result["table"]
    curves: dict[str, dict] = {}
    for r in rows:
        name = r["model"] if r["role"] == "ngram" else f"{r['model']} layer {r['layer']}"
        c = curves.setdefault(name, {"role": r["role"], "layer": r["layer"], "accuracy": [],
                                     "low": [], "high": [], "bits": [], "majority": []})
        c["accuracy"].append(r["accuracy"])
        c["low"].append(r["ci_low"])
        c["high"].append(r["ci_high"])
        c["bits"].append(r["bits"])
        c["majority"].append(r["majority"])
    spans = {f"{s['model']}" + ("" if s["role"] == "ngram" else f" layer {s['layer']}"):
             s["memory_span"] for s in result["summary"]["signatures"]}
    ngram = next(n for n, c in curves.items() if c["role"] == "ngram")
    window = 4  # a 5-gram's state holds the last 4 characters (lags 0..3)
    # per lag beyond the window: does each recurrent signature beat the n-gram's, beyond the
    # 95% intervals?
    beyond = {}
    for name, c in curves.items():
        if c["role"] == "ngram":
            continue
        beyond[name] = [int(k) for k in range(window, len(c["accuracy"]))
                        if c["low"][k] > curves[ngram]["high"][k]]
    layer_diff = {}
    for label in ("lstm", "lstm (random init)"):
        a, b = curves.get(f"{label} layer 0"), curves.get(f"{label} layer 1")
        if a and b:
            layer_diff[label] = {"layer0_higher": [k for k in range(len(a["accuracy"]))
                                                   if a["low"][k] > b["high"][k]],
                                 "layer1_higher": [k for k in range(len(a["accuracy"]))
                                                   if b["low"][k] > a["high"][k]]}
    trained = [n for n, c in curves.items() if c["role"] == "model"]
    separates = all(beyond[n] for n in trained)
    differs = bool(layer_diff.get("lstm", {}).get("layer0_higher") or
                   layer_diff.get("lstm", {}).get("layer1_higher"))
    finding = "agree" if separates and differs else "disagree" if not (separates or differs) \
        else "partly"
    summary = {"model": MODEL.name, "corpus": result["corpus"], "settings": result["settings"],
               "ngram": result["summary"].get("ngram", {}), "memory_spans": spans,
               "accuracy": {n: {k: round(c["accuracy"][k], 4) for k in LAGS}
                            for n, c in curves.items()},
               "bits": {n: {k: round(c["bits"][k], 3) for k in LAGS} for n, c in curves.items()},
               "lags_beyond_window_above_ngram": beyond, "layer_differences": layer_diff,
               "finding": finding}
    save_summary("exp5", summary)

    p = plt()
    fig, axes = p.subplots(1, 2, figsize=(11, 4))
    lags = np.arange(len(curves[ngram]["accuracy"]))
    styles = {"model": "-", "control": "--", "ngram": "-."}
    for k, (name, c) in enumerate(curves.items()):
        for ax, key in zip(axes, ("accuracy", "bits")):
            ax.plot(lags, c[key], styles[c["role"]], marker="o", ms=2.5, color=f"C{k}",
                    label=name)
        axes[0].fill_between(lags, c["low"], c["high"], color=f"C{k}", alpha=0.2, lw=0)
    axes[0].plot(lags, curves[ngram]["majority"], color="grey", lw=1, label="majority class")
    axes[0].axvline(window - 0.5, color="grey", ls=":", lw=1)
    axes[1].axvline(window - 0.5, color="grey", ls=":", lw=1)
    axes[0].set_ylabel("held-out accuracy of x[t-k] from s[t]")
    axes[1].set_ylabel("information (bits), H(X) - CE")
    for ax in axes:
        ax.set_xlabel("lag k (characters)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Experiment 5: character memory signatures, 2-layer LSTM vs random init vs "
                 "5-gram window (dotted: edge of the window)")
    fig.tight_layout()
    fig.savefig(IMG / "exp5-char-signatures.png", dpi=110)
    shutil.copyfile(OUT / "recall_heatmap.png", IMG / "exp5-recall-heatmap.png")

    markdown_header("signature", "span", *(f"k={k}" for k in LAGS))
    for name, c in curves.items():
        print(f"| {name} accuracy | {spans.get(name, '')} | "
              + " | ".join(f"{c['accuracy'][k]:.3f}" for k in LAGS) + " |")
        print(f"| {name} bits | | " + " | ".join(f"{c['bits'][k]:.2f}" for k in LAGS) + " |")
    print("lags >= 4 where the recurrent signature is above the 5-gram's (intervals):", beyond)
    print("layer differences:", layer_diff)
    print(f"finding: {finding}")


if __name__ == "__main__":
    main()
