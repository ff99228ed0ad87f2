"""The grapheme set of the CTC recogniser and the transcript policy.

Graphemes (output classes, in id order): ``<blank>`` (the CTC blank, id 0), space, apostrophe,
``a``..``z`` (29 classes).

Transcript policy (one place, used by every reader):

* case is folded (``A`` -> ``a``); runs of whitespace become one space; leading and trailing
  whitespace is removed;
* every other character (digits, punctuation, letters outside a-z such as ``é``) is an
  error naming the character and where it is: memlens never silently drops or rewrites what
  a transcript says (spell digits out, strip punctuation before);
* an empty transcript (after folding) is an error.

:func:`speakable` is the separate, lenient policy of ``memlens speech-corpus``, which chooses
which *text sentences* to synthesise: punctuation that is not spoken is dropped, hyphens
become spaces, and sentences with digits, ``<unk>`` or other characters are skipped.
"""

from __future__ import annotations

import re

from memlens.core.errors import MemlensError

BLANK = "<blank>"
GRAPHEMES: tuple[str, ...] = (BLANK, " ", "'", *"abcdefghijklmnopqrstuvwxyz")
INDEX = {g: i for i, g in enumerate(GRAPHEMES)}
VOWELS = frozenset("aeiou")


def grapheme_type(g: str) -> str:
    """'vowel' (a e i o u), 'space', or 'consonant' (other letters and the apostrophe)."""
    if g == " ":
        return "space"
    return "vowel" if g in VOWELS else "consonant"


def normalize_transcript(text: str, where: str = "transcript") -> str:
    """The transcript under the policy of the module docstring, or a one-line error."""
    t = " ".join(str(text).lower().split())
    if not t:
        raise MemlensError(f"{where}: empty transcript")
    for ch in t:
        if ch not in INDEX or ch == BLANK:
            raise MemlensError(f"{where}: character {ch!r} is outside the grapheme set "
                               "(letters a-z, space, apostrophe; case is folded): spell it "
                               "out or remove it")
    return t


def encode(text: str) -> list[int]:
    """Grapheme ids (1..28) of a normalised transcript."""
    return [INDEX[c] for c in text]


def decode(ids) -> str:
    """Text of grapheme ids (blanks dropped)."""
    return "".join(GRAPHEMES[int(i)] for i in ids if int(i) != 0)


_DROP = re.compile(r"[.,;:!?\"()\[\]]")


def speakable(sentence: str, min_words: int = 3, max_words: int = 30) -> str | None:
    """A sentence of running text (WikiText / EWT tokenisation) as a transcript to
    synthesise, or None when it should be skipped (see module docstring)."""
    s = sentence.replace("@-@", "-").replace("@,@", "").replace("@.@", ".")
    if "<unk>" in s or any(c.isdigit() for c in s):
        return None
    s = s.replace(" n't", "n't").replace(" 's", "'s").replace(" '", "'")
    s = _DROP.sub(" ", s).replace("-", " ").replace("`", "'")
    s = " ".join(s.lower().split()).strip("' ")
    if not s or any(c not in INDEX for c in s):
        return None
    n = len(s.split())
    return s if min_words <= n <= max_words else None
