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

import numbers
import random

from memlens.core.errors import MemlensError
from memlens.core.limits import MAX_POSITIONS, MAX_VOCAB, check_int, check_memory
from memlens.data.corpus import Corpus
from memlens.data.vocab import EOS

VERBS = {"sg": "is", "pl": "are"}


def noun_words(n_nouns: int) -> dict[str, list[str]]:
    """The singular and plural cue words: {"sg": [cat0, ...], "pl": [cats0, ...]}."""
    return {"sg": [f"cat{i}" for i in range(n_nouns)], "pl": [f"cats{i}" for i in range(n_nouns)]}


BYTES_PER_TOKEN = 3 * 8 + 8   # one reference in each of tokens, number, role; slack
BYTES_PER_WORD = 64           # a cue or filler word (a short str)


def _check_sizes(n_sentences: int, distance: int, n_nouns: int, n_fillers: int, seed: int,
                 eos: bool) -> None:
    """Refuse sizes that are not positive integers, a seed that is not an integer, and a
    corpus that would not fit the memory budget (before anything is allocated)."""
    check_int(n_sentences, "n_sentences", 1, MAX_POSITIONS)
    check_int(distance, "distance", 1, MAX_POSITIONS)
    check_int(n_nouns, "n_nouns", 1, MAX_VOCAB)
    check_int(n_fillers, "n_fillers", 1, MAX_VOCAB)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise MemlensError(f"seed must be an integer, got {type(seed).__name__}")
    tokens = n_sentences * (distance + 1 + bool(eos))
    check_memory(tokens * BYTES_PER_TOKEN + (2 * n_nouns + n_fillers) * BYTES_PER_WORD,
                 f"a synthetic corpus of {tokens} tokens")


def make_synthetic(n_sentences: int = 2000, distance: int = 5, n_nouns: int = 10,
                   n_fillers: int = 40, seed: int = 0, eos: bool = True) -> Corpus:
    """Generate the agreement corpus: a noun's number decides a verb ``distance`` steps later.

    Each sentence is ``<noun> <filler> x (distance - 1) <verb>`` (then ``<eos>`` when
    ``eos``): a singular noun (``cat3``) is followed by ``is``, a plural one (``cats3``) by
    ``are``; nouns, numbers and fillers are drawn uniformly. To predict the verb a model
    must keep the noun's number for exactly ``distance`` steps. Deterministic under ``seed``.

    Parameters
    ----------
    n_sentences : int, optional
        Sentences, >= 1 (default 2000).
    distance : int, optional
        Steps from the noun to its verb, >= 1 (default 5).
    n_nouns : int, optional
        Distinct nouns of each number, >= 1 (default 10).
    n_fillers : int, optional
        Distinct filler words ``w0``, ``w1``, ..., >= 1 (default 40).
    seed : int, optional
        Seed of the random generator (default 0).
    eos : bool, optional
        End each sentence with ``<eos>`` (default True); False lets the next noun follow the
        verb directly.

    Returns
    -------
    Corpus
        ``n_sentences * (distance + 1 + eos)`` tokens, format "synthetic", with tags
        ``"number"`` (``sg``/``pl`` on nouns, None elsewhere) and ``"role"`` (``noun``,
        ``filler``, ``verb``, None for ``<eos>``).

    Raises
    ------
    MemlensError
        When a size is not a positive integer, ``seed`` is not an integer, or the corpus
        would not fit the memory budget.
    """
    _check_sizes(n_sentences, distance, n_nouns, n_fillers, seed, eos)
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
