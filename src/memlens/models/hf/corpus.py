"""Corpora in a Hugging Face model's own tokens: a word corpus tokenised with its tokenizer,
word-level tags and classes on each word's first sub-token."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from memlens.core.errors import MemlensError
from memlens.data.corpus import Corpus
from memlens.data.vocab import EOS, Vocab

#: a word classifier: (spec, tokens, tags, vocab, log=) -> (class names, classes per token)
Classifier = Callable[..., tuple[list[str], list[list[str]]]]


@dataclass
class SubwordCorpus(Corpus):
    """A word corpus tokenised with a model's own tokenizer.

    ``tokens``: the sub-token symbols (the model's vocabulary); ``tags``: each word's tags on
    its *first* sub-token (None on the others); ``words``: the word corpus; ``first``: for
    every word, the index of its first sub-token.
    """

    words: Corpus | None = None
    first: list[int] = field(default_factory=list)

    def word_labels(self, per_word: Sequence) -> list:
        """Word-level labels (one per word) -> one per sub-token: each word's label on its
        first sub-token, None on the rest."""
        out: list = [None] * len(self.tokens)
        for i, lab in zip(self.first, per_word):
            out[i] = lab
        return out

    def classes(self, classify: Classifier, spec: str, n: int | None = None, log=None
                ) -> tuple[list[str], list[list[str]]]:
        """Word-level classes on the first sub-token of each word, for the first ``n``
        sub-tokens: (class names, [classes of each sub-token]).

        ``classify(spec, tokens, tags, vocab, log=log) -> (names, classes per token)`` is the
        analysis' classifier (the state gradients' ``token_classes``: ``upos``, ``words:``,
        ``freq:`` ...); it runs on the words, with frequency bins from the words' counts in
        this corpus."""
        words = self.words
        names, per_word = classify(spec, words.tokens, words.tags, Vocab.build(words.tokens),
                                   log=log)
        per_sub = [x if x is not None else [] for x in self.word_labels(per_word)]
        return names, per_sub[:n] if n is not None else per_sub


def tokenize_corpus(corpus: Corpus, tokenizer, vocab: Vocab) -> SubwordCorpus:
    """Tokenise a word corpus with a model's tokenizer: each word on its own, with a leading
    space unless it starts a line (so sub-tokens never straddle words), ``<eos>`` as the
    tokenizer's end-of-sequence token (a newline if it has none). Symbols are ``vocab``'s
    (:func:`hf_symbols`). Returns a :class:`SubwordCorpus`."""
    if corpus.unit != "word":
        raise MemlensError("a Hugging Face model reads text through its own tokenizer: use "
                           "--unit word")
    eos_id = getattr(tokenizer, "eos_token_id", None)
    texts: list[str] = []
    start = True
    for w in corpus.tokens:
        texts.append(w if start or w == EOS else " " + w)
        start = w == EOS
    uniq = sorted(set(t for t in texts if t != EOS))
    ids_of: dict[str, list[int]] = {}
    if uniq:
        enc = tokenizer(uniq, add_special_tokens=False)["input_ids"]
        ids_of = dict(zip(uniq, enc))
    eos_ids = [eos_id] if eos_id is not None else tokenizer("\n", add_special_tokens=False
                                                            )["input_ids"]
    ids: list[int] = []
    first: list[int] = []
    for t in texts:
        piece = eos_ids if t == EOS else ids_of[t]
        if not piece:
            piece = [tokenizer.unk_token_id] if tokenizer.unk_token_id is not None else []
        if not piece:
            raise MemlensError(f"the tokenizer gives no token for {t.strip()!r}")
        first.append(len(ids))
        ids.extend(piece)
    if ids and max(ids) >= len(vocab):
        raise MemlensError(f"the tokenizer gives token id {max(ids)} but the model has only "
                           f"{len(vocab)} embedding rows: tokenizer and model do not match")
    tokens = vocab.decode(ids)
    tags = {k: [None] * len(ids) for k in corpus.tags}
    for k, col in corpus.tags.items():
        for i, tag in zip(first, col):
            tags[k][i] = tag
    return SubwordCorpus(tokens, tags, corpus.path, "word", corpus.format, words=corpus,
                         first=first)
