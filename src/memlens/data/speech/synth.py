"""A speech corpus anyone can make offline: espeak-ng synthesis of text sentences.

**The speech is synthetic** (formant synthesis by espeak-ng): every utterance is a sentence of
the given text read by one of :data:`VOICES` (accents x voice variants) at a seeded speaking
rate (words per minute) and pitch. The corpus directory holds ``audio/*.flac`` (16 kHz mono),
``manifest.tsv`` (path, transcript, voice, rate, pitch, split), ``features.npz`` (the log-mel
feature cache) and ``result.json`` (settings; says the speech is synthetic).

Held-out utterances (``split=test``) are different sentences (every sentence is used once)
read by the same voices (each voice has training utterances).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from memlens.core.errors import MemlensError
from memlens.core.optional import require
from memlens.data.speech.graphemes import speakable

VOICES: tuple[str, ...] = ("en-us+m1", "en-gb+f2", "en-gb-scotland+m3", "en-029+f1",
                           "en-gb-x-rp+m2", "en-us-nyc+f4", "en-gb-x-gbclan+m4",
                           "en-gb-x-gbcwmd+f3")
RATES = (140, 200)    # words per minute, uniform
PITCHES = (30, 70)    # espeak-ng pitch 0..99, uniform


def espeak_binary() -> str:
    """Path of espeak-ng, or a one-line error saying how to install it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MemlensError("espeak-ng is not installed (Debian/Ubuntu: apt-get install "
                           "espeak-ng)")
    return exe


def sentences(text: str) -> list[str]:
    """Speakable sentences (:func:`~memlens.data.speech.graphemes.speakable`) of running text, in
    order, without duplicates; headings (`` = Title = ``) are skipped."""
    out, seen = [], set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        if line.startswith("#") or (line[:1].isdigit() and "\t" in line):
            continue  # CoNLL-U comments / token lines are not running text
        for raw in re.split(r"(?<=[.!?])\s+", line):
            s = speakable(raw)
            if s is not None and s not in seen:
                seen.add(s)
                out.append(s)
    return out


def _synthesise(job: tuple[str, str, str, int, int]) -> float:
    """espeak-ng -> wav (22.05 kHz) -> 16 kHz FLAC; returns the duration in seconds."""
    from memlens.data.speech.corpus import SAMPLE_RATE, load_audio

    sf = require("soundfile")
    text, out, voice, rate, pitch = job
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        proc = subprocess.run([espeak_binary(), "-v", voice, "-s", str(rate), "-p", str(pitch),
                               "-w", tmp.name, "--", text], capture_output=True, timeout=120)
        if proc.returncode != 0:
            raise MemlensError(f"espeak-ng failed for voice {voice}: "
                               f"{proc.stderr.decode(errors='replace').strip()[:200]}")
        x = load_audio(tmp.name)
    sf.write(out, x, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return len(x) / SAMPLE_RATE


def synthesise_corpus(text_path: str | os.PathLike, out: Path, utterances: int = 100,
                      seed: int = 0, test_fraction: float = 0.1, workers: int = 2
                      ) -> dict:
    """Write the corpus of the module docstring into the (empty, temporary) directory ``out``;
    returns the settings/summary for result.json. Synthesis and features use ``workers``
    processes (at most 2)."""
    from memlens.data.speech.corpus import compute_features, read_manifest, save_feature_cache

    espeak_binary()
    from memlens.core.files import read_text

    text = read_text(text_path, "speech text (--text)")  # the input gate: special, huge, binary
    if utterances < 2:
        raise MemlensError("--utterances must be at least 2 (training and held-out)")
    sents = sentences(text)
    if len(sents) < utterances:
        raise MemlensError(f"{text_path} has {len(sents)} speakable sentences (3-30 words, no "
                           f"digits or <unk>), fewer than --utterances {utterances}")
    rng = np.random.default_rng(seed)
    chosen = [sents[i] for i in sorted(rng.choice(len(sents), utterances, replace=False))]
    order = rng.permutation(utterances)
    n_test = max(1, round(test_fraction * utterances))
    (out / "audio").mkdir()
    jobs, rows = [], []
    for j, i in enumerate(order):
        voice = VOICES[j % len(VOICES)]
        rate = int(rng.integers(RATES[0], RATES[1] + 1))
        pitch = int(rng.integers(PITCHES[0], PITCHES[1] + 1))
        split = "test" if j >= utterances - n_test else "train"
        name = f"audio/utt{j:06d}.flac"
        jobs.append((chosen[i], str(out / name), voice, rate, pitch))
        rows.append([name, chosen[i], voice, str(rate), str(pitch), split])
    workers = max(1, min(int(workers), 2))
    if workers == 1:
        durations = [_synthesise(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            durations = list(pool.map(_synthesise, jobs, chunksize=8))
    lines = ["path\ttranscript\tvoice\trate\tpitch\tsplit"] + ["\t".join(r) for r in rows]
    (out / "manifest.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = read_manifest(out / "manifest.tsv")
    feats = compute_features(corpus, workers)
    save_feature_cache(out / "features.npz", corpus, feats)
    hours = sum(durations) / 3600
    return {"synthetic": True,
            "note": "synthetic speech (espeak-ng formant synthesis), not recorded speech",
            "text": str(text_path), "utterances": utterances, "test_utterances": n_test,
            "hours": round(hours, 4), "voices": list(VOICES), "rates_wpm": list(RATES),
            "pitches": list(PITCHES), "seed": seed, "sample_rate": 16000,
            "speakable_sentences": len(sents)}
