"""Experiment 3: memory by part of speech. Which UPOS class is remembered best (Verwimp et
al.: nouns)? Uses the state-gradient run of experiment 1 (UD EWT dev, 22,000 tokens, K = 50,
1-layer word LSTM E=64 H=256); classes with fewer than 300 source tokens are left out.

Control for a confound: 17% of EWT tokens are outside the model's 10k vocabulary, and they are
not spread evenly (about a third of nouns and most proper nouns become <unk>, pronouns almost
never). A second run (Python API, first 12,000 tokens) counts a source word for its UPOS only
when it is in the vocabulary.

    python experiments/exp3_upos.py         # needs runs/wt2-lstm-h256-e10.pt

Output: experiments/results/exp3.json, docs/img/exp3-upos.png.
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
    plt,
    save_summary,
    values_at,
)
from exp1_decay import MODEL, gradients_upos

import memlens
from memlens.data.corpus import load_corpus
from memlens.protocol import Site
from memlens.runtime.options import as_options

MIN_COUNT = 300
KNOWN_OUT = RUNS / "exp-ewt-upos-in-vocab"
KNOWN_TOKENS = 12000


# the paper's word classes are groups of Penn Treebank tags (nouns include proper nouns)
PTB_GROUPS = {"nouns": "NN NNS NNP NNPS", "verbs": "VB VBD VBG VBN VBP VBZ MD",
              "adjectives": "JJ JJR JJS", "adverbs": "RB RBR RBS WRB",
              "pronouns": "PRP PRP$ WP WP$", "determiners": "DT PDT WDT",
              "prepositions": "IN TO RP", "conjunctions": "CC", "numbers": "CD",
              "punctuation": ". , : `` '' -LRB- -RRB- HYPH NFP $ #"}
TAG_GROUP = {tag: group for group, tags in PTB_GROUPS.items() for tag in tags.split()}


def gradients_in_vocabulary(scheme: str = "upos"):
    """Classes for in-vocabulary source words only (<unk> sources count for no class):
    ``upos``, or ``groups`` = the PTB tag groups above, from the gold XPOS."""
    out = KNOWN_OUT if scheme == "upos" else RUNS / "exp-ewt-ptb-groups-in-vocab"
    if not (out / "result.json").exists():
        model = memlens.load_checkpoint(MODEL)
        corpus = load_corpus(str(EWT_DEV), "conllu", "word")
        tokens = corpus.tokens[:KNOWN_TOKENS]
        if scheme == "upos":
            tags = corpus.tags["upos"][:KNOWN_TOKENS]
        else:
            tags = [TAG_GROUP.get(t) for t in corpus.tags["xpos"][:KNOWN_TOKENS]]
        classes = [t if w in model.vocab.stoi else None for w, t in zip(tokens, tags)]
        print(f"+ state_gradients on {len(tokens)} tokens, in-vocabulary {scheme}", flush=True)
        result = memlens.state_gradients(model, model.vocab.encode(tokens), 50,
                                         site=Site(readout="cell"), classes=classes,
                                         options=as_options(device="cpu"))
        result.model_meta = {"path": str(MODEL)}
        result.corpus_meta = {"path": str(EWT_DEV), "tokens": len(tokens),
                              "classes": f"{scheme} of in-vocabulary source words"}
        result.save(out)
    return out


def verdict(ranked: dict, noun: str = "nouns", delays=(5, 10, 20)) -> str:
    """agree: nouns first with an interval clear of the runner-up at every delay; disagree:
    at every delay some class lies above nouns with non-overlapping intervals; else
    inconclusive."""
    firsts, beaten = [], []
    for t in delays:
        vals = ranked[t]
        names = [v[0] for v in vals]
        n = vals[names.index(noun)]
        firsts.append(names[0] == noun and n[2] > vals[1][3])
        beaten.append(any(v[2] > n[3] for v in vals if v[0] != noun))
    return "agree" if all(firsts) else "disagree" if all(beaten) else "inconclusive"


def ranking_at(rows: list[dict], classes: list[str], delays=(1, 5, 10, 20, 50)) -> dict:
    """{delay: [(class, sum_sv, low, high), ...] best first}."""
    out = {}
    for t in delays:
        vals = []
        for c in classes:
            _, m, lo, hi = curve(rows, c)
            vals.append((c, float(m[t]), float(lo[t]), float(hi[t])))
        out[t] = sorted(vals, key=lambda v: -v[1])
    return out


def print_ranking(ranked: dict, noun: str, top: int) -> None:
    """One line per delay: the ``top`` classes with intervals, and the rank of ``noun``."""
    for t, vals in ranked.items():
        print(f"tau {t}: " + ", ".join(f"{c} {fmt_ci(v, lo, hi)}" for c, v, lo, hi in vals[:top])
              + f"; {noun} rank {[v[0] for v in vals].index(noun) + 1} of {len(vals)}")


def main() -> None:
    result = load_result(gradients_upos())
    rows = result["table"]
    counts = class_counts(rows)
    classes = sorted(c for c, n in counts.items() if n >= MIN_COUNT)
    table = {c: values_at(rows, c) for c in classes}
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
    known_rows = load_result(gradients_in_vocabulary())["table"]
    known_counts = class_counts(known_rows)
    known_classes = sorted(c for c, n in known_counts.items() if n >= MIN_COUNT // 2)
    known = ranking_at(known_rows, known_classes)
    group_rows = load_result(gradients_in_vocabulary("groups"))["table"]
    group_counts = class_counts(group_rows)
    groups = ranking_at(group_rows, [g for g, n in group_counts.items() if n >= MIN_COUNT // 2])
    summary = {"model": MODEL.name, "corpus": result["corpus"], "min_count": MIN_COUNT,
               "counts": counts, "sum_sv": table, "ranking": ranking, "best": best,
               "in_vocabulary": {"tokens": KNOWN_TOKENS, "counts": known_counts,
                                 "ranking": known},
               "ptb_groups_in_vocabulary": {"tokens": KNOWN_TOKENS, "groups": PTB_GROUPS,
                                            "counts": group_counts, "ranking": groups},
               "finding": {"upos": finding, "ptb_groups_in_vocabulary": verdict(groups)}}
    save_summary("exp3", summary)

    p = plt()
    fig, ax = p.subplots(figsize=(7.5, 4.2))
    for k, c in enumerate(classes):
        tau, m, lo, hi = curve(rows, c)
        style = "-" if k < 10 else "--"
        ax.plot(tau, m, style, color=f"C{k % 10}", lw=2.5 if c == "NOUN" else 1.2, label=c)
        errorbars(ax, tau, m, lo, hi, f"C{k % 10}")
    ax.set_yscale("log")
    ax.set_xlabel("delay tau")
    ax.set_ylabel("sum of singular values (normalised)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Experiment 3: memory by UPOS of the source word (95% block-bootstrap)")
    fig.tight_layout()
    fig.savefig(IMG / "exp3-upos.png", dpi=110)

    markdown_header("UPOS", "count", *(f"tau {t}" for t in HEADLINE_DELAYS))
    for c in sorted(classes, key=lambda c: -table[c][10][0]):
        print(f"| {c} | {counts[c]} | "
              + " | ".join(fmt_ci(*table[c][t]) for t in HEADLINE_DELAYS) + " |")
    for t in HEADLINE_DELAYS:
        print(f"tau {t}: best {best[t]['class']} (runner-up {best[t]['runner_up']}, "
              f"separated: {best[t]['separated']}), NOUN rank {best[t]['noun_rank']}")
    print(f"in-vocabulary sources only (first {KNOWN_TOKENS} tokens; counts {known_counts}):")
    print_ranking(known, "NOUN", 6)
    print(f"PTB tag groups, in-vocabulary sources only (counts {group_counts}):")
    print_ranking(groups, "nouns", 5)
    print(f"finding: UPOS {finding}; PTB groups (in vocabulary) {verdict(groups)}")


if __name__ == "__main__":
    main()
