"""Speech corpora: readers, decoding, resampling, log-mel features and normalisation.

Layouts read by :func:`read_corpus`:

* a **manifest** (``manifest.tsv``, or any ``.tsv`` file): one utterance per line,
  ``audio path<TAB>transcript`` (more columns are kept as metadata; a first line
  ``path<TAB>transcript...`` is a header); relative paths are relative to the manifest;
* a **LibriSpeech-layout** directory: ``*.trans.txt`` files (``UTT-ID TRANSCRIPT`` per line)
  beside ``UTT-ID.flac`` or ``UTT-ID.wav``.

Audio is decoded with soundfile (libsndfile), mixed down to mono and resampled to 16 kHz with
librosa (soxr). Features: 80-bin log-mel filterbank energies, 25 ms Hann window (400
samples), 10 ms hop (160 samples), from ``librosa.feature.melspectrogram`` (torchaudio's
Kaldi fbank would replace the pinned torch build, see docs/analyses/speech.md), ``log(mel + 1e-6)``.

Bad input is refused before anything is computed or written, with one line naming the file:
a missing audio file, audio that cannot be decoded, empty (or shorter than one 25 ms window)
audio, an empty transcript, transcript characters outside the grapheme set
(:mod:`memlens.data.speech.graphemes`), and a corpus that **mixes sample rates** (different
recording conditions; one rate other than 16 kHz is resampled, a mix is refused).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memlens.core.errors import MemlensError
from memlens.core.files import binary_limit, check_input_file, open_input, read_text
from memlens.core.optional import require
from memlens.data.speech.graphemes import normalize_transcript

SAMPLE_RATE = 16000
N_MELS = 80
WIN = 400   # 25 ms at 16 kHz
HOP = 160   # 10 ms
FEATURES = {"kind": "logmel", "n_mels": N_MELS, "win": WIN, "hop": HOP, "sr": SAMPLE_RATE,
            "floor": 1e-6, "implementation": "librosa"}
CACHE = "features.npz"


def _need(module: str):
    return require(module)


@dataclass
class Utterance:
    """One utterance: ``id``, absolute audio ``path``, normalised ``text``, metadata."""

    id: str
    path: str
    text: str
    meta: dict = field(default_factory=dict)


@dataclass
class SpeechCorpus:
    """The utterances of a corpus and where they came from (``source``: manifest or dir)."""

    utterances: list[Utterance]
    source: str
    layout: str

    def __len__(self) -> int:
        return len(self.utterances)

    def digest(self) -> str:
        """SHA-256 over ids, paths, transcripts and audio file sizes/mtimes (cache key)."""
        h = hashlib.sha256()
        for u in self.utterances:
            st = os.stat(u.path)
            h.update(f"{u.id}\t{os.path.basename(u.path)}\t{u.text}\t{st.st_size}\n".encode())
        return h.hexdigest()

    def split(self, name: str) -> SpeechCorpus:
        """The utterances whose manifest column ``split`` is ``name`` (train/test)."""
        us = [u for u in self.utterances if u.meta.get("split") == name]
        if not us:
            raise MemlensError(f"{self.source}: no utterance has split {name!r} (the manifest "
                               "needs a 'split' column of train/test)")
        return SpeechCorpus(us, self.source, self.layout)


def read_manifest(path: str | os.PathLike) -> SpeechCorpus:
    """A TSV manifest (see module docstring); every path and transcript checked."""
    p = Path(path)
    lines = read_text(p, "speech manifest").splitlines()  # the input gate; UTF-8 checked
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = ["path", "transcript"]
    if rows and rows[0][:2] == header:
        header, rows = rows[0], rows[1:]
    utts, seen = [], set()
    for n, row in enumerate(rows, start=2 if header != ["path", "transcript"] else 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise MemlensError(f"{p}:{n}: expected 'audio path<TAB>transcript'")
        audio = (p.parent / row[0]).resolve() if not os.path.isabs(row[0]) else Path(row[0])
        if not audio.is_file():
            raise MemlensError(f"{p}:{n}: audio file not found: {row[0]}")
        check_input_file(audio, f"{p}:{n}: audio", binary_limit())
        text = normalize_transcript(row[1], f"{p}:{n}")
        uid = Path(row[0]).stem
        if uid in seen:
            uid = f"{uid}#{n}"
        seen.add(uid)
        meta = {k: v for k, v in zip(header[2:], row[2:])}
        utts.append(Utterance(uid, str(audio), text, meta))
    if not utts:
        raise MemlensError(f"{p}: the manifest lists no utterances")
    return SpeechCorpus(utts, str(p), "manifest")


def read_librispeech(root: str | os.PathLike) -> SpeechCorpus:
    """A LibriSpeech-layout directory (``*.trans.txt`` + ``ID.flac``/``ID.wav``)."""
    root = Path(root)
    trans = sorted(root.rglob("*.trans.txt"))
    if not trans:
        raise MemlensError(f"{root}: no manifest.tsv and no *.trans.txt files: not a speech "
                           "corpus")
    utts = []
    for t in trans:
        for n, line in enumerate(read_text(t, "transcript").splitlines(), start=1):
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            audio = next((t.parent / f"{uid}{ext}" for ext in (".flac", ".wav")
                          if (t.parent / f"{uid}{ext}").is_file()), None)
            if audio is None:
                raise MemlensError(f"{t}:{n}: audio file not found: {uid}.flac / {uid}.wav")
            check_input_file(audio, f"{t}:{n}: audio", binary_limit())
            utts.append(Utterance(uid, str(audio.resolve()),
                                  normalize_transcript(text, f"{t}:{n}"),
                                  {"speaker": uid.split("-")[0]}))
    if not utts:
        raise MemlensError(f"{root}: the transcripts list no utterances")
    return SpeechCorpus(utts, str(root), "librispeech")


def read_corpus(path: str | os.PathLike) -> SpeechCorpus:
    """A manifest file, a directory with ``manifest.tsv``, or a LibriSpeech-layout directory."""
    p = Path(path)
    if not p.exists():
        raise MemlensError(f"speech corpus not found: {p}")
    if not p.is_dir():  # a manifest file, or a special file the gate refuses
        return read_manifest(p)
    manifest = p / "manifest.tsv"
    if manifest.exists() or manifest.is_symlink():  # a special file: the gate refuses it
        return read_manifest(manifest)
    return read_librispeech(p)


def is_speech_corpus(path: str | os.PathLike) -> bool:
    """True for a directory holding ``manifest.tsv`` or ``*.trans.txt`` files."""
    p = Path(path)
    return p.is_dir() and ((p / "manifest.tsv").is_file() or any(p.rglob("*.trans.txt")))


# -- audio ------------------------------------------------------------------------------------
def audio_info(path: str) -> tuple[int, int]:
    """(sample rate, frames) of an audio file, or a one-line error if it cannot be decoded."""
    sf = _need("soundfile")
    try:
        info = sf.info(path)
    except Exception as exc:  # libsndfile's errors are RuntimeError / LibsndfileError
        raise MemlensError(f"cannot decode audio {path}: {str(exc).splitlines()[0][:150]}"
                           ) from None
    if info.frames < WIN:
        raise MemlensError(f"audio {path} is empty or shorter than one 25 ms window "
                           f"({info.frames} samples)")
    return int(info.samplerate), int(info.frames)


def check_audio(corpus: SpeechCorpus) -> int:
    """Check every file decodes, is long enough, and all share one sample rate; return it."""
    rates: dict[int, str] = {}
    for u in corpus.utterances:
        sr, _ = audio_info(u.path)
        rates.setdefault(sr, u.path)
        if len(rates) > 1:
            (r1, f1), (r2, f2) = list(rates.items())[:2]
            raise MemlensError(f"{corpus.source}: the corpus mixes sample rates ({r1} Hz in "
                               f"{f1}, {r2} Hz in {f2}): convert it to one rate first")
    return next(iter(rates))


def load_audio(path: str) -> np.ndarray:
    """Mono float32 samples at 16 kHz (resampled with librosa/soxr when needed)."""
    sf = _need("soundfile")
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise MemlensError(f"cannot decode audio {path}: {str(exc).splitlines()[0][:150]}"
                           ) from None
    x = x.mean(axis=1)
    if len(x) < WIN:
        raise MemlensError(f"audio {path} is empty or shorter than one 25 ms window")
    if not np.isfinite(x).all():
        raise MemlensError(f"audio {path} contains NaN or infinite samples")
    if sr != SAMPLE_RATE:
        librosa = _need("librosa")
        x = librosa.resample(x, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return x.astype(np.float32)


def logmel(samples: np.ndarray) -> np.ndarray:
    """T x 80 log-mel features of 16 kHz samples: T = 1 + (N - 400) // 160 frames,
    ``log(mel_power + 1e-6)`` with a 400-point Hann window and 160-sample hop."""
    librosa = _need("librosa")
    mel = librosa.feature.melspectrogram(y=samples, sr=SAMPLE_RATE, n_fft=WIN, win_length=WIN,
                                         hop_length=HOP, n_mels=N_MELS, center=False,
                                         power=2.0)
    return np.log(mel + 1e-6).T.astype(np.float32)


def _features_one(path: str) -> np.ndarray:
    return logmel(load_audio(path))


def compute_features(corpus: SpeechCorpus, workers: int = 1) -> list[np.ndarray]:
    """Log-mel features (T_i x 80) of every utterance, audio checked first (no partial
    results); ``workers`` processes (at most 2 are used)."""
    check_audio(corpus)
    paths = [u.path for u in corpus.utterances]
    workers = max(1, min(int(workers), 2))
    if workers == 1 or len(paths) < 8:
        return [_features_one(p) for p in paths]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_features_one, paths, chunksize=16))


def save_feature_cache(path: str | os.PathLike, corpus: SpeechCorpus,
                       feats: list[np.ndarray]) -> None:
    """Write the features of ``corpus`` as one .npz (concatenated frames + offsets)."""
    from memlens.core.files import write_atomic

    offsets = np.cumsum([0] + [len(f) for f in feats]).astype(np.int64)
    meta = json.dumps({"features": FEATURES, "digest": corpus.digest(),
                       "ids": [u.id for u in corpus.utterances]})
    data = np.concatenate(feats).astype(np.float32)

    def write(p):
        with open(p, "wb") as fh:
            np.savez(fh, frames=data, offsets=offsets, meta=np.array(meta))
    write_atomic(path, write)


def _cache_members(z, path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(meta, frames, offsets) of an open feature cache, each checked: one line naming
    ``path`` for a cache that is malformed (not one written by :func:`save_feature_cache`)."""
    def bad(why: str) -> MemlensError:
        return MemlensError(f"malformed speech feature cache {path}: {why} (delete it to "
                            "recompute the features)")

    if not {"meta", "frames", "offsets"} <= set(z.files):
        raise bad("it needs the arrays meta, frames and offsets")
    meta_a, frames, off = z["meta"], z["frames"], z["offsets"]
    try:
        meta = json.loads(str(meta_a)) if meta_a.dtype.kind == "U" and meta_a.ndim == 0 \
            else None
    except (ValueError, RecursionError):
        meta = None
    ids = meta.get("ids") if isinstance(meta, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad("its metadata lists no utterance ids (strings)")
    if frames.ndim != 2 or frames.shape[1] != N_MELS or frames.dtype.kind != "f":
        raise bad(f"frames must be a T x {N_MELS} float array, got {frames.dtype} "
                  f"{frames.shape}")
    if off.ndim != 1 or off.dtype.kind not in "iu" or len(off) != len(ids) + 1:
        raise bad(f"offsets must be {len(ids) + 1} integers (one per utterance + 1), got "
                  f"{off.dtype} {off.shape}")
    if off[0] != 0 or off[-1] != len(frames) or (np.diff(off) < 0).any():
        raise bad("offsets must rise from 0 to the number of frames")
    if not np.isfinite(frames).all():
        raise bad("frames contain NaN or infinite values")
    return meta, frames, off


def read_feature_cache(path: str | os.PathLike) -> tuple[dict, np.ndarray, np.ndarray]:
    """(meta, frames, offsets) of a feature cache, through the input gate; its members'
    expanded size is checked before anything is expanded, then every array is checked
    (:func:`_cache_members`). Never unpickles."""
    import zipfile

    from memlens.core.limits import check_memory

    with open_input(path, "speech feature cache", binary_limit()) as fh:
        try:
            with zipfile.ZipFile(fh) as zf:
                check_memory(sum(i.file_size for i in zf.infolist()),
                             f"the speech feature cache {path}")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as z:
                return _cache_members(z, path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            why = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else \
                type(exc).__name__
            raise MemlensError(f"cannot read speech feature cache {path}: {why} (delete it "
                               "to recompute the features)") from None


def load_features(corpus: SpeechCorpus, workers: int = 1,
                  cache: str | os.PathLike | None = None) -> list[np.ndarray]:
    """Features of every utterance: from the cache (``features.npz`` beside the manifest by
    default) when it matches the corpus and the feature settings, else computed. A cache of
    other settings or other utterances is ignored (recomputed); a malformed one (not an .npz
    of this layout, short offsets, a wrong width, NaN frames, a special or huge file) is
    refused with one line."""
    if cache is None:
        cache = Path(corpus.source).parent / CACHE if corpus.layout == "manifest" else None
    if cache is not None and (Path(cache).exists() or Path(cache).is_symlink()):
        meta, frames, off = read_feature_cache(cache)
        ids = {u: i for i, u in enumerate(meta["ids"])}
        if meta.get("features") == FEATURES and all(u.id in ids for u in corpus.utterances):
            return [np.array(frames[off[ids[u.id]]:off[ids[u.id] + 1]])
                    for u in corpus.utterances]
    return compute_features(corpus, workers)


# -- normalisation and frame stacking ---------------------------------------------------------
def feature_stats(feats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Corpus mean and standard deviation per feature (80,) over every frame."""
    x = np.concatenate(feats).astype(np.float64)
    return x.mean(0), np.maximum(x.std(0), 1e-5)


def normalize(f: np.ndarray, norm: str, stats: tuple[np.ndarray, np.ndarray] | None
              ) -> np.ndarray:
    """``norm='corpus'``: (f - mean) / std with the training corpus ``stats``;
    ``'utterance'``: each utterance's own mean/std; ``'none'``: unchanged."""
    if norm == "utterance":
        return ((f - f.mean(0)) / np.maximum(f.std(0), 1e-5)).astype(np.float32)
    if norm == "corpus":
        mean, std = stats
        return ((f - mean) / std).astype(np.float32)
    if norm == "none":
        return f.astype(np.float32)
    raise MemlensError(f"unknown normalisation {norm!r} (corpus, utterance, none)")


def stack_frames(f: np.ndarray, stack: int) -> np.ndarray:
    """Stack ``stack`` consecutive frames into one (and subsample by it): T x F ->
    floor(T/stack) x (stack*F); frame j covers input frames j*stack .. j*stack+stack-1."""
    n = len(f) // stack
    return f[: n * stack].reshape(n, stack * f.shape[1])
