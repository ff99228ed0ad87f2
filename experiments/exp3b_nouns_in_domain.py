"""Experiment 3b: are nouns remembered best, in domain? And are the syntactic differences
between nouns (NNS-NN, NNPS-NNP) remembered best among the within-class tag contrasts?
(Verwimp et al. 2020; issue 24, item 5, "nouns").

A 1-layer word LSTM (E=64, H=128, vocabulary the 10k most frequent words of EWT train, 6 epochs
of the reference SGD recipe) is trained on UD English EWT train and analysed on EWT dev
(27,148 positions with the sentence ends), K = 20, cell state, 20 contiguous blocks, 200
block-bootstrap resamples, one run per seed (seeds 0, 1, 2: the spread across models). One run
carries several class sources at once (a position counts for every class it belongs to; a
class's sums do not depend on the other classes), each under its own prefix:

* ``lu:`` / ``lx:`` / ``lg:``: classes from a lexicon built from EWT train
  (:func:`memlens.data.lexicon.lexicon_from_conllu`: word -> every tag it is seen with; a word
  counts for each), UPOS / XPOS / PTB tag groups, for in-vocabulary words only (the paper's
  lexicon covers its model's vocabulary; an out-of-vocabulary dev word is read as ``<unk>``);
* ``gu:`` / ``gx:`` / ``gg:``: the gold tag of each dev token, all tokens (OOV words too);
* ``ku:`` / ``kx:`` / ``kg:``: gold tags of in-vocabulary tokens only (the control; ``kx:``
  only the 15 tags of the PTB contrasts).

The memory measure is experiment 3's: the sum of singular values of the normalised average
gradient per delay and class (also shown relative to the overall average). Tag contrasts: the
ptb preset pairs' relative memory |Gn_AB dn| / sigma_1 on the gradient pooled over the words of
A and B (docs/contrasts.md), on the lexicon, gold and in-vocabulary gold XPOS classes.

    python experiments/exp3b_nouns_in_domain.py [SEEDS]   # default 3 seeds (0, 1, 2)

Trains runs/ewt-lstm-e64-h128-s{seed}.pt with ``memlens train`` when missing (about 1-4 min
each on 2 cores), then one state-gradient run per seed (runs/exp3b-s{seed}). Output:
experiments/results/exp3b.json, docs/img/exp3b-nouns.png.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
from analysis import DATA, EWT_DEV, IMG, ROOT, RUNS, curve, fmt_ci, load_result, plt, save_summary

import memlens
from memlens.data.corpus import load_corpus
from memlens.data.lexicon import lexicon_from_conllu
from memlens.protocol import Site
from memlens.runtime.options import as_options

EWT_TRAIN = DATA / "ud-english-ewt" / "en_ewt-ud-train.conllu"
SEEDS = 3                            # default number of seeds (0, 1, 2)
K = 20
CI_DELAYS = (1, 5, 10, 20)          # delays with bootstrap intervals (per-class block sums)
VERDICT_DELAYS = (5, 10, 20)
MIN_COUNT = 150                      # classes ranked: at least this many sources
MIN_XPOS = 30                        # other XPOS tags kept as classes: this many dev tokens
CLAIM_A = "nouns are remembered best"
CLAIM_B = "syntactic differences between nouns are remembered best"

# the paper's word classes are groups of Penn Treebank tags (as experiment 3)
PTB_GROUPS = {"nouns": "NN NNS NNP NNPS", "verbs": "VB VBD VBG VBN VBP VBZ MD",
              "adjectives": "JJ JJR JJS", "adverbs": "RB RBR RBS WRB",
              "pronouns": "PRP PRP$ WP WP$", "determiners": "DT PDT WDT",
              "prepositions": "IN TO RP", "conjunctions": "CC", "numbers": "CD",
              "punctuation": ". , : `` '' -LRB- -RRB- HYPH NFP $ #"}
TAG_GROUP = {tag: group for group, tags in PTB_GROUPS.items() for tag in tags.split()}
PTB_PAIRS = [("NNS", "NN"), ("NNPS", "NNP"), ("VBD", "VB"), ("VBZ", "VBP"), ("VBG", "VB"),
             ("VBN", "VB"), ("JJR", "JJ"), ("JJS", "JJ"), ("RBR", "RB")]
NOUN_PAIRS = ("NNS-NN", "NNPS-NNP")
CONTRAST_TAGS = sorted({t for p in PTB_PAIRS for t in p})
SOURCES = {"lexicon": "l", "gold": "g", "gold, in-vocabulary": "k"}


# memlens train on CPU slows down ~25x after the first epochs (epoch 1: 11 s, epoch 3: 295 s of
# CPU time): denormal floats. The CLI is run with denormals flushed to zero (and one thread, as
# the 2 cores are shared); the state gradients below too.
FLUSH_DENORMAL = ("import sys, torch; torch.set_flush_denormal(True); "
                  "from memlens.cli import main; sys.exit(main(sys.argv[1:]))")


def model_path(seed: int):
    return RUNS / f"ewt-lstm-e64-h128-s{seed}.pt"


def train(seed: int):
    """``memlens train`` of the seed's model (skipped when the checkpoint exists)."""
    out = model_path(seed)
    if not out.exists():
        cmd = [sys.executable, "-c", FLUSH_DENORMAL, "train", "--train", str(EWT_TRAIN),
               "--valid", str(EWT_DEV), "--format", "conllu", "--arch", "lstm", "--emb", "64",
               "--hidden", "128", "--vocab-size", "10000", "--epochs", "6",
               "--seed", str(seed), "--device", "cpu", "--no-progress", "--out", str(out)]
        print("+ memlens", " ".join(cmd[3:]), flush=True)
        if subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode:
            sys.exit(f"training seed {seed} failed")
    return out


def position_classes(tokens, tags, stoi, lex_x, lex_u):
    """Per position the list of prefixed classes (module docstring) and the dev statistics."""
    counts_x = Counter(t for t in tags["xpos"] if t)
    lex_counts = Counter(t for w in tokens if w in stoi for t in lex_x.get(w, []))
    keep_g = {t for t, n in counts_x.items() if n >= MIN_XPOS or t in CONTRAST_TAGS}
    keep_l = {t for t, n in lex_counts.items() if n >= MIN_XPOS or t in CONTRAST_TAGS}
    out = []
    for w, u, x in zip(tokens, tags["upos"], tags["xpos"]):
        known = w in stoi and w != "<unk>"
        cl = []
        if u:
            cl.append(f"gu:{u}")
        if x:
            if x in keep_g:
                cl.append(f"gx:{x}")
            if x in TAG_GROUP:
                cl.append(f"gg:{TAG_GROUP[x]}")
        if known and u:
            cl.append(f"ku:{u}")
        if known and x:
            if x in CONTRAST_TAGS:
                cl.append(f"kx:{x}")
            if x in TAG_GROUP:
                cl.append(f"kg:{TAG_GROUP[x]}")
        if known:
            xs = lex_x.get(w, [])
            cl += [f"lu:{t}" for t in lex_u.get(w, [])]
            cl += [f"lx:{t}" for t in xs if t in keep_l]
            cl += [f"lg:{g}" for g in dict.fromkeys(TAG_GROUP[t] for t in xs if t in TAG_GROUP)]
        out.append(cl or None)
    words = [(w, x) for w, x in zip(tokens, tags["xpos"]) if x]      # tokens, no <eos>
    oov = [w not in stoi for w, _ in words]
    nouns = [(w not in stoi) for w, x in words if x in ("NN", "NNS", "NNP", "NNPS")]
    stats = {"dev_positions": len(tokens), "dev_tokens": len(words),
             "oov_rate": float(np.mean(oov)), "oov_rate_nouns": float(np.mean(nouns)),
             "oov_by_upos": {u: float(np.mean([w not in stoi for w, uu in
                                               zip(tokens, tags["upos"]) if uu == u]))
                             for u in sorted({u for u in tags["upos"] if u})},
             "lexicon_tokens_oov_but_in_lexicon": int(sum(1 for w, _ in words if w not in stoi
                                                          and w in lex_x)),
             "lexicon_tokens_in_vocab_without_entry": int(sum(1 for w, _ in words if w in stoi
                                                              and w not in lex_x))}
    return out, stats


def gradients(seed: int, corpus, lex_x, lex_u):
    """The seed's state-gradient result directory (computed when missing) and dev stats."""
    out = RUNS / f"exp3b-s{seed}"
    model = memlens.load_checkpoint(train(seed))
    classes, stats = position_classes(corpus.tokens, corpus.tags, model.vocab.stoi, lex_x, lex_u)
    history = (getattr(model, "extra", None) or {}).get("history") or []
    stats["valid_ppl"] = min((h["valid_ppl"] for h in history if "valid_ppl" in h), default=None)
    if not (out / "result.json").exists():
        names = sorted({c for cl in classes if cl for c in cl})
        pairs = [(f"{p}x:{a}", f"{p}x:{b}") for p in ("l", "g", "k") for a, b in PTB_PAIRS
                 if f"{p}x:{a}" in names and f"{p}x:{b}" in names]
        print(f"+ state_gradients seed {seed}: {len(corpus.tokens)} positions, K={K}, "
              f"{len(names)} classes", flush=True)
        t0 = time.time()
        from memlens.analyses.gradients.engine import EngineSettings

        result = memlens.state_gradients(
            model, model.vocab.encode(corpus.tokens), K, site=Site(readout="cell"),
            classes=classes, class_names=names, contrasts=pairs,
            options=as_options(device="cpu"), engine=EngineSettings(class_ci_delays=CI_DELAYS))
        if not result.raw.ci_delays:
            sys.exit("no per-class intervals: the class block sums exceed memlens' 1 GB limit")
        result.model_meta = {"path": str(model_path(seed).relative_to(ROOT))}
        result.corpus_meta = {"path": "ud-english-ewt/en_ewt-ud-dev.conllu",
                              "tokens": len(corpus.tokens), "classes": "exp3b prefixed sets"}
        result.save(out)
        print(f"  {time.time() - t0:.0f} s", flush=True)
    return out, stats


# -- reading the results -------------------------------------------------------------------------
def ranking(rows, prefix: str, counts: dict, delays=CI_DELAYS) -> dict:
    """{delay: [(class, sum_sv, low, high, relative to overall), ...] best first} of the
    classes of one prefix with at least MIN_COUNT sources."""
    _, overall, _, _ = curve(rows, None)
    names = [c for c, n in counts.items() if c.startswith(prefix + ":") and n >= MIN_COUNT]
    out = {}
    for t in delays:
        vals = []
        for c in names:
            _, m, lo, hi = curve(rows, c)
            vals.append((c.split(":", 1)[1], float(m[t]), float(lo[t]), float(hi[t]),
                         float(m[t] / overall[t])))
        out[t] = sorted(vals, key=lambda v: -v[1])
    return out


def verdict_a(ranked: dict, noun: str) -> str:
    """Experiment 3's rule: agree = nouns first with an interval clear of the runner-up at
    every delay of VERDICT_DELAYS; disagree = at every such delay some class lies above nouns
    with non-overlapping intervals; else inconclusive."""
    firsts, beaten = [], []
    for t in VERDICT_DELAYS:
        vals = ranked[t]
        names = [v[0] for v in vals]
        n = vals[names.index(noun)]
        firsts.append(names[0] == noun and n[2] > vals[1][3])
        beaten.append(any(v[2] > n[3] for v in vals if v[0] != noun))
    return "agree" if all(firsts) else "disagree" if all(beaten) else "inconclusive"


def pooled(arrays, a: str, b: str, tau: int) -> np.ndarray:
    """Gn_AB(tau) = (N_A mean_A + N_B mean_B) / (N_A + N_B) D from the saved gradients.npz."""
    names = list(arrays["classes"])
    ia, ib = names.index(a), names.index(b)
    na, nb = arrays["class_counts"][ia, tau], arrays["class_counts"][ib, tau]
    mean = (na * arrays["class_mean"][ia, tau].astype(np.float64)
            + nb * arrays["class_mean"][ib, tau]) / (na + nb)
    return mean @ arrays["D"]


def chance(arrays, a: str, b: str, tau: int) -> float:
    """The relative memory a random unit direction gets on average (root mean square) on the
    same pooled gradient: sqrt(sum sigma^2 / r) / sigma_1 (E|Gn d|^2 = |Gn|_F^2 / r)."""
    gn = pooled(arrays, a, b, tau)
    sv = np.linalg.svd(gn, compute_uv=False)
    return float(np.sqrt((sv ** 2).sum() / gn.shape[1]) / sv[0])


def hand_relmem(arrays, a: str, b: str, tau: int) -> float:
    """|Gn_AB dn| / sigma_1 by hand (dn = Z d / |Z d|, d = class-mean embedding difference):
    a check of the saved contrast table."""
    names = list(arrays["classes"])
    d = arrays["class_embeddings"][names.index(a)] - arrays["class_embeddings"][names.index(b)]
    dn = arrays["Z"] @ d
    dn /= np.linalg.norm(dn)
    gn = pooled(arrays, a, b, tau)
    return float(np.linalg.norm(gn @ dn) / np.linalg.norm(gn, 2))


def contrast_table(frame, prefix: str, result=None) -> dict:
    """{delay: [(contrast, relmem, low, high, count, chance), ...] best first} at CI_DELAYS
    (chance: :func:`chance`, None without ``result``)."""
    out = {}
    for t in CI_DELAYS:
        sub = frame[(frame.delay == t) & frame.contrast.str.startswith(prefix + "x:")]
        vals = [(r.contrast.replace(prefix + "x:", ""), float(r.relmem),
                 float(r.relmem_low), float(r.relmem_high), int(r["count"]),
                 chance(result, r.a, r.b, t) if result is not None else None)
                for _, r in sub.iterrows() if r.relmem is not None]
        out[t] = sorted(vals, key=lambda v: -v[1])
    return out


def verdict_b(table: dict) -> str:
    """agree = at every delay of VERDICT_DELAYS the top contrast is a noun contrast whose
    interval lies above every non-noun contrast's; disagree = at every such delay some non-noun
    contrast lies above both noun contrasts with non-overlapping intervals; else inconclusive."""
    firsts, beaten = [], []
    for t in VERDICT_DELAYS:
        vals = table[t]
        nouns = [v for v in vals if v[0] in NOUN_PAIRS]
        others = [v for v in vals if v[0] not in NOUN_PAIRS]
        if not nouns or not others:
            return "inconclusive"
        top = vals[0]
        firsts.append(top[0] in NOUN_PAIRS and all(top[2] > o[3] for o in others))
        beaten.append(any(all(o[2] > n[3] for n in nouns) for o in others))
    return "agree" if all(firsts) else "disagree" if all(beaten) else "inconclusive"


def combine(verdicts: list[str]) -> str:
    """Across seeds: a verdict all seeds share, else inconclusive."""
    return verdicts[0] if len(set(verdicts)) == 1 else "inconclusive"


def seed_summary(seed: int, out, stats) -> dict:
    from memlens.analyses.gradients.contrasts import saved_frame
    from memlens.results import load_result as load_full

    res = load_result(out)
    rows = res["table"]
    counts = {r["class"]: int(r["count"]) for r in rows
              if r["delay"] == 0 and r["class"] not in (None, "all", "ALL")}
    frame = saved_frame(load_full(out))
    full = dict(np.load(out / "gradients.npz"))
    r = frame[(frame.delay == 5) & (frame.contrast == "lx:NNS-lx:NN")].iloc[0]
    assert abs(hand_relmem(full, r.a, r.b, 5) - r.relmem) < 1e-4 * max(1, r.relmem), \
        "saved relative memory differs from the hand computation"
    s = {"seed": seed, "dev": stats, "counts": counts, "ranking": {}, "verdict_a": {},
         "noun_rank": {}, "contrasts": {}, "verdict_b": {}}
    for label, prefix, noun in (("lexicon UPOS", "lu", "NOUN"), ("lexicon PTB groups", "lg",
                                                                   "nouns"),
                                ("gold UPOS", "gu", "NOUN"), ("gold PTB groups", "gg", "nouns"),
                                ("gold UPOS, in-vocabulary", "ku", "NOUN"),
                                ("gold PTB groups, in-vocabulary", "kg", "nouns"),
                                ("lexicon XPOS", "lx", None), ("gold XPOS", "gx", None)):
        ranked = ranking(rows, prefix, counts)
        s["ranking"][label] = ranked
        if noun:
            s["verdict_a"][label] = verdict_a(ranked, noun)
            s["noun_rank"][label] = {t: [v[0] for v in vals].index(noun) + 1
                                     for t, vals in ranked.items()}
        else:
            s["noun_rank"][label] = {t: {v[0]: i + 1 for i, v in enumerate(vals)
                                         if v[0] in ("NN", "NNS", "NNP", "NNPS")}
                                     for t, vals in ranked.items()}
    for label, prefix in (("lexicon", "l"), ("gold", "g"), ("gold, in-vocabulary", "k")):
        table = contrast_table(frame, prefix, full)
        s["contrasts"][label] = table
        s["verdict_b"][label] = verdict_b(table)
    s["train"] = (model_path(seed).with_suffix(".pt")).name
    return s


def figure(summaries: list[dict]) -> None:
    p = plt()
    fig, axes = p.subplots(1, 3, figsize=(13, 4.2))
    main = summaries[0]
    for ax, label in zip(axes[:2], ("lexicon UPOS", "gold UPOS, in-vocabulary")):
        ranked = main["ranking"][label]
        names = [v[0] for v in ranked[10]]
        for k, c in enumerate(names):
            ys = [next(v for v in ranked[t] if v[0] == c) for t in CI_DELAYS]
            m = np.array([v[1] for v in ys])
            rel = np.array([v[4] for v in ys])
            lo = np.array([v[2] for v in ys]) * rel / m
            hi = np.array([v[3] for v in ys]) * rel / m
            x = np.array(CI_DELAYS) * (1 + 0.015 * (k - len(names) / 2))
            ax.errorbar(x, rel, yerr=[rel - lo, hi - rel], marker="o", ms=3, capsize=2,
                        lw=2.5 if c == "NOUN" else 1, color=f"C{k % 10}",
                        ls="-" if k < 10 else "--", label=c)
        ax.set_xscale("log")
        ax.set_xlabel("delay tau")
        ax.set_ylabel("sum of singular values / overall")
        ax.set_title(f"{label} (seed {main['seed']})", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    ax = axes[2]
    for s, marker in zip(summaries, "os^"):
        table = s["contrasts"]["lexicon"]
        names = [v[0] for v in table[1]]
        for k, c in enumerate(names):
            ys = [next((v for v in table[t] if v[0] == c), None) for t in CI_DELAYS]
            ok = [(t, v) for t, v in zip(CI_DELAYS, ys) if v]
            x = np.array([t for t, _ in ok]) * (1 + 0.02 * (k - 4))
            m = np.array([v[1] for _, v in ok])
            lo, hi = np.array([v[2] for _, v in ok]), np.array([v[3] for _, v in ok])
            color = f"C{sorted(PTB_PAIRS_NAMES).index(c)}"
            ax.errorbar(x, m, yerr=[m - lo, hi - m], marker=marker, ms=3, capsize=2,
                        lw=2.5 if c in NOUN_PAIRS else 0.8, color=color,
                        label=c if s is main else None)
    ax.set_xscale("log")
    ax.set_xlabel("delay tau")
    ax.set_ylabel("relative memory |Gn dn| / sigma_1")
    ax.set_title("ptb contrasts, lexicon classes (seeds: o s ^)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.suptitle("Experiment 3b: EWT-trained LSTM (E=64, H=128), EWT dev, K=20, "
                 "95% block-bootstrap intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(IMG / "exp3b-nouns.png", dpi=110)


PTB_PAIRS_NAMES = [f"{a}-{b}" for a, b in PTB_PAIRS]


def report(summaries: list[dict]) -> None:
    for s in summaries:
        print(f"== seed {s['seed']}: OOV {s['dev']['oov_rate']:.1%} (nouns "
              f"{s['dev']['oov_rate_nouns']:.1%})")
        for label, ranked in s["ranking"].items():
            print(f"-- {label}: verdict {s['verdict_a'].get(label, '-')}; noun rank "
                  f"{s['noun_rank'][label]}")
            for t in CI_DELAYS:
                print(f"   tau {t}: " + ", ".join(f"{c} {fmt_ci(m, lo, hi)}"
                                                  for c, m, lo, hi, _ in ranked[t][:6]))
        for label, table in s["contrasts"].items():
            print(f"-- contrasts {label}: verdict {s['verdict_b'][label]}")
            for t in CI_DELAYS:
                print(f"   tau {t}: " + ", ".join(f"{c} {fmt_ci(m, lo, hi)}"
                                                  for c, m, lo, hi, *_ in table[t]))


def markdown(summaries: list[dict]) -> None:
    """The tables of docs/experiments/exp3b.md."""
    main, seeds = summaries[0], [s["seed"] for s in summaries]
    print(f"\n### nouns vs the leader (seed {main['seed']}; verdicts of seeds {seeds})")
    print("| class source | " + " | ".join(f"tau {t}: first / nouns (rank)" for t in
                                           VERDICT_DELAYS) + " | verdict per seed |")
    print("|---" * (len(VERDICT_DELAYS) + 2) + "|")
    for label, noun in (("lexicon UPOS", "NOUN"), ("lexicon PTB groups", "nouns"),
                        ("gold UPOS", "NOUN"), ("gold PTB groups", "nouns"),
                        ("gold UPOS, in-vocabulary", "NOUN"),
                        ("gold PTB groups, in-vocabulary", "nouns")):
        cells = []
        for t in VERDICT_DELAYS:
            vals = main["ranking"][label][t]
            n = next(v for v in vals if v[0] == noun)
            f = vals[0]
            cells.append(f"{f[0]} {fmt_ci(*f[1:4])} / {fmt_ci(*n[1:4])} "
                         f"({main['noun_rank'][label][t]} of {len(vals)})")
        print(f"| {label} | " + " | ".join(cells) + " | "
              + ", ".join(s["verdict_a"][label] for s in summaries) + " |")
    for label in ("lexicon UPOS", "lexicon PTB groups"):
        ranked = main["ranking"][label]
        print(f"\n### {label}, seed {main['seed']}: sum of singular values [95% CI] "
              "(relative to the overall average), sorted at tau 10")
        print("| class | sources | " + " | ".join(f"tau {t}" for t in CI_DELAYS) + " |")
        print("|---" * (len(CI_DELAYS) + 2) + "|")
        pre = "lu" if "UPOS" in label else "lg"
        for c, *_ in ranked[10]:
            cells = []
            for t in CI_DELAYS:
                v = next(v for v in ranked[t] if v[0] == c)
                cells.append(f"{fmt_ci(*v[1:4])} ({v[4]:.2f})")
            print(f"| {c} | {main['counts'][f'{pre}:{c}']} | " + " | ".join(cells) + " |")
    for label in ("lexicon XPOS", "gold XPOS"):
        print(f"\n{label}: rank of the noun tags (seeds {seeds}): "
              + "; ".join(f"tau {t}: " + ", ".join(
                  f"{tag} " + "/".join(str(s["noun_rank"][label][t].get(tag, "-"))
                                       for s in summaries)
                  for tag in ("NN", "NNS", "NNP", "NNPS")) + f" of {len(main['ranking'][label][t])}"
                  for t in CI_DELAYS))
    for label in main["contrasts"]:
        table = main["contrasts"][label]
        print(f"\n### contrasts, {label} classes, seed {main['seed']}: relative memory [95% CI] "
              "(a random direction's)")
        print("| contrast | positions | " + " | ".join(f"tau {t}" for t in CI_DELAYS) + " |")
        print("|---" * (len(CI_DELAYS) + 2) + "|")
        for c, *_ in table[5]:
            cells = []
            for t in CI_DELAYS:
                v = next((v for v in table[t] if v[0] == c), None)
                cells.append(f"{fmt_ci(*v[1:4])} ({v[5]:.2f})" if v else "n/a")
            n = next(v for v in table[1] if v[0] == c)[4]
            name = f"**{c}**" if c in NOUN_PAIRS else c
            print(f"| {name} | {n} | " + " | ".join(cells) + " |")
        print("top contrast per delay and seed: " + "; ".join(
            f"tau {t}: " + "/".join(s["contrasts"][label][t][0][0] for s in summaries)
            for t in CI_DELAYS) + "; verdicts " + ", ".join(s["verdict_b"][label]
                                                           for s in summaries))
    print("\n### seed spread: rank of nouns (seeds " + "/".join(map(str, seeds)) + ")")
    print("| class source | " + " | ".join(f"tau {t}" for t in CI_DELAYS) + " |")
    print("|---" * (len(CI_DELAYS) + 1) + "|")
    for label in main["verdict_a"]:
        print(f"| {label} | " + " | ".join("/".join(str(s["noun_rank"][label][t])
                                                     for s in summaries) for t in CI_DELAYS)
              + " |")
    print("\n### seed spread: noun contrasts vs the best other contrast")
    print("| classes | seed | " + " | ".join(f"tau {t}: NNS-NN / NNPS-NNP / best other"
                                            for t in VERDICT_DELAYS) + " | verdict |")
    print("|---" * (len(VERDICT_DELAYS) + 3) + "|")
    for label in main["contrasts"]:
        for s in summaries:
            cells = []
            for t in VERDICT_DELAYS:
                vals = s["contrasts"][label][t]
                get = {v[0]: v for v in vals}
                other = next(v for v in vals if v[0] not in NOUN_PAIRS)
                cells.append(" / ".join(fmt_ci(*get[c][1:4]) if c in get else "n/a"
                                        for c in NOUN_PAIRS)
                             + f" / {other[0]} {fmt_ci(*other[1:4])}")
            print(f"| {label} | {s['seed']} | " + " | ".join(cells)
                  + f" | {s['verdict_b'][label]} |")
    print("\ndev: " + ", ".join(f"seed {s['seed']}: valid ppl {s['dev']['valid_ppl']:.1f}, "
                                 f"OOV {s['dev']['oov_rate']:.1%}, nouns "
                                 f"(NN*) {s['dev']['oov_rate_nouns']:.1%}" for s in summaries))


def main() -> None:
    import torch

    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    corpus = load_corpus(str(EWT_DEV), "conllu", "word")
    lex_x = lexicon_from_conllu(EWT_TRAIN, "xpos")
    lex_u = lexicon_from_conllu(EWT_TRAIN, "upos")
    summaries = []
    for seed in range(int(sys.argv[1]) if len(sys.argv) > 1 else SEEDS):
        out, stats = gradients(seed, corpus, lex_x, lex_u)
        summaries.append(seed_summary(seed, out, stats))
    labels_a = list(summaries[0]["verdict_a"])
    labels_b = list(summaries[0]["verdict_b"])
    verdicts = {"a": {lab: combine([s["verdict_a"][lab] for s in summaries])
                      for lab in labels_a},
                "b": {lab: combine([s["verdict_b"][lab] for s in summaries])
                      for lab in labels_b}}
    summary = {"claims": {"a": CLAIM_A, "b": CLAIM_B}, "K": K, "ci_delays": CI_DELAYS,
               "verdict_delays": VERDICT_DELAYS, "min_count": MIN_COUNT,
               "ptb_groups": PTB_GROUPS, "lexicon_words": {"xpos": len(lex_x),
                                                           "upos": len(lex_u)},
               "seeds": summaries, "verdicts": verdicts}
    save_summary("exp3b", summary)
    figure(summaries)
    report(summaries)
    markdown(summaries)
    print("verdicts:", verdicts)


if __name__ == "__main__":
    main()
