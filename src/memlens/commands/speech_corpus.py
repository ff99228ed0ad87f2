"""``memlens speech-corpus``: synthesise a speech corpus with espeak-ng (synthetic speech).

Sentences of --text are read by several espeak-ng voices (accents and voice variants) at seeded
speaking rates and pitches; --out receives audio/*.flac (16 kHz), manifest.tsv, the log-mel
feature cache features.npz and result.json. Written atomically: complete or absent.
"""

from __future__ import annotations

import argparse
import json

from memlens.commands.common import add_option, add_overwrite
from memlens.runtime.io import atomic_dir, claim_output


def register(sub) -> None:
    p = sub.add_parser("speech-corpus", help="synthesise a speech corpus with espeak-ng",
                       description=__doc__)
    p.add_argument("--text", required=True, help="running text to take sentences from "
                   "(e.g. ../shared/data/wikitext-2/valid.txt)")
    p.add_argument("--out", required=True, help="corpus directory to write")
    add_option(p, "utterances")
    add_option(p, "test_fraction",
                   help="held-out share (unseen sentences, seen voices)")
    add_option(p, "seed")
    add_option(p, "workers")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memlens.data.speech.synth import espeak_binary, synthesise_corpus

    espeak_binary()
    with claim_output(args.out, args.overwrite, scratch=()) as out:
        with atomic_dir(out, kind="speech-corpus") as tmp:
            info = synthesise_corpus(args.text, tmp, args.utterances, args.seed,
                                     args.test_fraction, args.workers)
            doc = {"kind": "speech-corpus", "corpus": {"path": str(out), "synthetic": True},
                   "settings": info,
                   "summary": {"utterances": info["utterances"], "hours": info["hours"],
                               "speech": "synthetic (espeak-ng)"}}
            (tmp / "result.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {info['utterances']} synthetic utterances ({info['hours']:.2f} h, "
          f"{len(info['voices'])} voices) to {args.out}")
    return 0
