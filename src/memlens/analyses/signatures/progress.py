"""The finished signatures of a study, kept in one checkpoint so that an interrupted study
resumes where it stopped (:class:`StudyCheckpoint`, on :mod:`memlens.runtime.progress`).

The checkpoint is one ``.npz`` file (a :class:`~memlens.runtime.progress.RunCheckpoint` of
kind "signatures"; ``memlens signatures`` puts it at ``.<OUT>.partial.npz`` beside OUT) whose
fingerprint covers the study's settings (all but ``out``) and the contents of its model,
corpus, held-out and LM-training files. Its payload is flat: for the i-th finished signature
``"{i}/{array}"`` (the per-lag arrays, recall and support), ``"{i}/symbols"`` and
``"{i}/meta"`` (JSON: counts, decoder, epochs, info and the study extras that came with it),
and ``"keys"``: the key of each (``Entry.key``). It is saved again, whole and atomically,
after every signature, so a run interrupted at any moment resumes from the finished
signatures and gives the same result as an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from memlens.analyses.signatures.config import StudyConfig
from memlens.analyses.signatures.signature import Signature
from memlens.core.errors import MemlensError
from memlens.runtime.progress import RunCheckpoint, fingerprint

KIND = "signatures"
ARRAYS = ("accuracy", "acc_low", "acc_high", "bits", "bits_low", "bits_high", "bits_fraction",
          "cross_entropy", "entropy", "majority", "prior", "recall", "support", "temperature")


def study_fingerprint(cfg: StudyConfig) -> str:
    """What a resumed study must share with the one that saved: its settings and the contents
    of the files it reads."""
    files = [Path(f) for f in (cfg.model, cfg.corpus, cfg.heldout, cfg.lm_train) if f]
    return fingerprint(cfg.settings(), *files)


class StudyCheckpoint:
    """Finished signatures of a study (see module docstring). ``resume=False`` starts afresh
    (deleting an earlier checkpoint at ``path``); ``resume=True`` loads it (a missing, foreign
    or damaged file is a one-line MemlensError)."""

    def __init__(self, path: str | Path, cfg: StudyConfig, resume: bool):
        self.ck = RunCheckpoint(path, study_fingerprint(cfg), every=0.0, kind=KIND)
        self.payload: dict = {}
        self.keys: list[str] = []
        if resume:
            self.payload = dict(self.ck.load())
            keys = self.payload.get("keys")
            if not isinstance(keys, np.ndarray) or keys.ndim != 1 or keys.dtype.kind != "U":
                raise self._bad("no list of finished signatures")
            self.keys = [str(k) for k in keys]
        else:
            self.ck.discard()

    @property
    def path(self) -> Path:
        return self.ck.path

    @property
    def done(self) -> int:
        """The number of finished signatures saved."""
        return len(self.keys)

    def _bad(self, why: str) -> MemlensError:
        return MemlensError(f"checkpoint {self.path} is damaged or was edited ({why}): delete "
                            "it or run without --resume")

    def get(self, key: str, max_delay: int) -> tuple[Signature, dict] | None:
        """The saved signature (and its extras) for ``key``, checked against the study's
        K = ``max_delay``; None if it is not done yet."""
        if key not in self.keys:
            return None
        i = self.keys.index(key)
        try:
            meta = json.loads(str(self.payload[f"{i}/meta"]))
            symbols = [str(s) for s in np.atleast_1d(self.payload[f"{i}/symbols"])]
            arrays = {k: np.asarray(self.payload[f"{i}/{k}"]) for k in ARRAYS}
            sig_meta, extras = meta["sig"], meta["extras"]
        except (KeyError, ValueError, TypeError):
            raise self._bad(f"signature {i} is incomplete") from None
        n = max_delay + 1
        for k in ARRAYS:
            if k == "temperature" and arrays[k].size == 0:
                arrays[k] = None
                continue
            want = (n, len(symbols)) if k in ("recall", "support") else (n,)
            if arrays[k].shape != want:
                raise self._bad(f"signature {i}: {k} has the wrong shape")
        return Signature(**arrays, symbols=symbols, **sig_meta), extras

    def put(self, key: str, sig: Signature, extras: dict) -> None:
        """Add one finished signature and save the whole checkpoint (atomically)."""
        i = len(self.keys)
        for k in ARRAYS:
            value = getattr(sig, k)
            self.payload[f"{i}/{k}"] = np.zeros(0) if value is None else np.asarray(value)
        self.payload[f"{i}/symbols"] = np.array(sig.symbols, dtype=str)
        meta = {"sig": {"n_train": sig.n_train, "n_heldout": sig.n_heldout,
                        "decoder": sig.decoder, "epochs": int(sig.epochs), "info": sig.info,
                        "saturation": sig.saturation, "saturated_units": sig.saturated_units},
                "extras": extras}
        self.payload[f"{i}/meta"] = json.dumps(meta)
        self.keys.append(key)
        self.payload["keys"] = np.array(self.keys, dtype=str)
        self.ck.save(self.payload)

    def discard(self) -> None:
        """Delete the checkpoint file."""
        self.ck.discard()


__all__ = ["ARRAYS", "KIND", "StudyCheckpoint", "study_fingerprint"]
