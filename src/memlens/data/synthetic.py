"""A synthetic corpus with a known answer: the number of a noun decides a verb ``distance``
steps later, with random distractor words between.

Each line is ``<noun> <filler> x (distance - 1) <verb> <eos>``: a singular noun (``cat3``)
is followed by ``is`` and a plural noun (``cats3``) by ``are``. To predict the verb the model
must keep the noun's number for exactly ``distance`` steps; the fillers are uniform and
carry no information. Deterministic under ``seed``. With ``eos=False`` the sentences follow each
other without ``<eos>`` (the next noun comes right after the verb), so that nothing but the
planted dependency separates one noun from the next.

Annotations (``Corpus.tags``): ``"number"`` is ``sg``/``pl`` on nouns and ``None`` elsewhere;
``"role"`` is ``noun``, ``filler``, ``verb`` or ``None`` (``<eos>``).
"""

from __future__ import annotations

import random

from memlens.core.errors import MemlensError
from memlens.data.corpus import Corpus
from memlens.data.vocab import EOS

VERBS = {"sg": "is", "pl": "are"}


def noun_words(n_nouns: int) -> dict[str, list[str]]:
    """The singular and plural cue words: {"sg": [cat0, ...], "pl": [cats0, ...]}."""
    return {"sg": [f"cat{i}" for i in range(n_nouns)], "pl": [f"cats{i}" for i in range(n_nouns)]}


def make_synthetic(n_sentences: int = 2000, distance: int = 5, n_nouns: int = 10,
                   n_fillers: int = 40, seed: int = 0, eos: bool = True) -> Corpus:
    """Generate the agreement corpus (see module docstring)."""
    if distance < 1:
        raise MemlensError(f"synthetic distance must be at least 1, got {distance}")
    if n_sentences < 1 or n_nouns < 1 or n_fillers < 1:
        raise MemlensError("synthetic corpus needs at least one sentence, noun and filler")
    rng = random.Random(seed)
    nouns = noun_words(n_nouns)
    fillers = [f"w{i}" for i in range(n_fillers)]
    tokens: list[str] = []
    number: list[str | None] = []
    role: list[str | None] = []
    for _ in range(n_sentences):
        feat = rng.choice(("sg", "pl"))
        tokens.append(rng.choice(nouns[feat]))
        number.append(feat)
        role.append("noun")
        for _ in range(distance - 1):
            tokens.append(rng.choice(fillers))
            number.append(None)
            role.append("filler")
        tokens.append(VERBS[feat])
        number.append(None)
        role.append("verb")
        if eos:
            tokens.append(EOS)
            number.append(None)
            role.append(None)
    return Corpus(tokens, {"number": number, "role": role}, f"synthetic(distance={distance})",
                  "word", "synthetic")
