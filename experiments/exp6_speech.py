"""Experiment 6: what the layers of a grapheme CTC recogniser remember (Koppula et al.'s third
demonstration), on **synthetic speech** (espeak-ng, 8 voices).

    memlens speech-corpus --text ../shared/data/wikitext-2/valid.txt --out runs/speech-wt2 \\
        --utterances 1500 --seed 0
    memlens train-asr --data runs/speech-wt2 --out runs/asr-lstm3.pt --layers 3 --hidden 128 \\
        --stack 3 --batch 16 --lr 3e-3 --epochs 40 --time-limit 55 --threads 2 --seed 0
    python experiments/exp6_speech.py     # EXP6_QUICK=1: a small smoke run
    # the documented epoch-4 run (docs/experiments/exp6.md):
    # EXP6_MODEL=runs/asr-lstm3-e4.pt EXP6_OUT=exp6-epoch4.json

Held-out CER/WER (greedy, the manifest's test split: unseen sentences, seen voices); per layer
of the 3-layer LSTM and of a random-init encoder of the same shape: memory signatures with
lags in graphemes (decoders trained on the states of training utterances, scored on held-out
ones; 95% block-bootstrap intervals) and state gradients w.r.t. the input frames (normalised
by the frame covariance; classes vowel / consonant / space of the aligned grapheme). Verdict
on "the layers encode different history". Output: experiments/results/exp6.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from analysis import RESULTS, RUNS, need_model

from memlens.analyses.signatures import random_init_copy
from memlens.analyses.speech.analysis import grapheme_signature, prepare_speech, speech_gradients
from memlens.data.speech.corpus import read_corpus
from memlens.models.asr import error_rates, load_asr, transcribe
from memlens.protocol import Site
from memlens.runtime.options import as_options

QUICK = bool(os.environ.get("EXP6_QUICK"))
CORPUS = RUNS / "speech-wt2"
MODEL = Path(os.environ.get("EXP6_MODEL", RUNS / "asr-lstm3.pt"))
N_TRAIN, N_HELD = (40, 20) if QUICK else (120, 60)      # utterances for the decoders
MAX_DELAY = 4 if QUICK else 6                            # graphemes back
N_GRAD, GRAD_K = (2, 4) if QUICK else (3, 8)             # utterances, delays (30 ms steps)
BOOT = 50 if QUICK else 200
SEED = 0


def verdict(sigs: list[dict]) -> dict:
    """Do the layers' signatures differ beyond their 95% intervals? agree: some lag >= 1
    where two layers' accuracy intervals do not overlap; disagree: the intervals overlap at
    every lag; per pair the lags that separate."""
    pairs = {}
    for i in range(len(sigs)):
        for j in range(i + 1, len(sigs)):
            a, b = sigs[i], sigs[j]
            sep = [k for k in range(1, len(a["accuracy"]))
                   if a["ci_low"][k] > b["ci_high"][k] or b["ci_low"][k] > a["ci_high"][k]]
            pairs[f"layer{a['layer']} vs layer{b['layer']}"] = sep
    any_sep = any(pairs.values())
    return {"verdict": "agree" if any_sep else "disagree", "separating_lags": pairs}


def main() -> None:
    t0 = time.time()
    asr = load_asr(need_model(MODEL))
    corpus = read_corpus(CORPUS)
    test = corpus.split("test")
    held_all = prepare_speech(asr, test)
    hyps = transcribe(asr, held_all.inputs)
    rates = error_rates([u.text for u in test.utterances], hyps)
    print(f"held-out CER {100 * rates['cer']:.2f}% WER {100 * rates['wer']:.2f}% "
          f"({rates['utterances']} utterances)")
    train = prepare_speech(asr, corpus, "train", max_utterances=N_TRAIN)
    held = prepare_speech(asr, corpus, "test", max_utterances=N_HELD)
    control = random_init_copy(asr.encoder, SEED)
    out = {"synthetic_speech": True, "model": str(MODEL), "corpus": str(CORPUS),
           "training": asr.extra.get("history"), "train_settings": asr.extra.get("train_asr"),
           "heldout": rates, "examples": [{"ref": u.text, "hyp": h} for u, h in
                                           zip(test.utterances[:3], hyps[:3])],
           "settings": {"train_utterances": N_TRAIN, "train_steps": train.steps,
                        "heldout_utterances": N_HELD, "heldout_steps": held.steps,
                        "max_lag_graphemes": MAX_DELAY, "bootstrap": BOOT,
                        "gradient_utterances": N_GRAD, "gradient_max_delay_steps": GRAD_K,
                        "step_ms": 10 * asr.stack, "seed": SEED},
           "signatures": {}, "gradients": {}}
    for role, enc in (("trained", asr.encoder), ("random-init", control)):
        sigs = []
        for layer in range(enc.num_layers):
            s = grapheme_signature(enc, train, held, MAX_DELAY, Site(layer, "hidden"),
                                   seed=SEED, options=as_options(bootstrap=BOOT))
            row = {"layer": layer, "accuracy": s.accuracy.tolist(),
                   "ci_low": s.acc_low.tolist(), "ci_high": s.acc_high.tolist(),
                   "majority": s.majority.tolist(), "prior": s.prior.tolist(),
                   "bits": s.bits.tolist(), "memory_span": s.memory_span(),
                   "recall_lag0": dict(zip(s.symbols, np.nan_to_num(s.recall[0]).round(3)
                                           .tolist()))}
            sigs.append(row)
            print(f"{role} layer {layer}: accuracy by graphemes back "
                  + " ".join(f"{a:.3f}" for a in s.accuracy)
                  + f"; span {s.memory_span()} ({time.time() - t0:.0f}s)")
        out["signatures"][role] = {"layers": sigs, **verdict(sigs)}
    grad_data = prepare_speech(asr, corpus, "test", max_utterances=N_GRAD)
    for role, enc in (("trained", asr.encoder), ("random-init", control)):
        per = []
        for layer in range(enc.num_layers):
            g = speech_gradients(enc, grad_data, GRAD_K, site=Site(layer, "hidden"),
                                 options=as_options(device="cpu", bootstrap=0))
            rows = [r for r in g.rows() if r["class"] == "all"]
            by_cls = {c: [r["sum_sv"] for r in g.rows() if r["class"] == c]
                      for c in ("vowel", "consonant", "space")}
            curve = [r["sum_sv"] for r in rows]
            rel = [c / curve[0] for c in curve]
            per.append({"layer": layer, "sum_sv": curve, "relative": rel,
                        "by_class": by_cls, "pairs_at_delay_0": rows[0]["count"],
                        "delay_below_10pct": next((k for k, v in enumerate(rel) if v < 0.1),
                                                  None)})
            print(f"{role} layer {layer} gradients: sum_sv relative to delay 0: "
                  + " ".join(f"{v:.3f}" for v in rel) + f" ({time.time() - t0:.0f}s)")
        out["gradients"][role] = per
    out["seconds"] = time.time() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = os.environ.get("EXP6_OUT", "exp6-quick.json" if QUICK else "exp6.json")
    (RESULTS / name).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS / name} ({out['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
