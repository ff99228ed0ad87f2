"""Corpora, vocabularies and batching."""

from memlens.data.batching import batchify, bptt_windows
from memlens.data.conllu_reader import read_conllu
from memlens.data.corpus import Corpus, load_corpus
from memlens.data.lexicon import read_groups, read_lexicon, read_word_list
from memlens.data.synthetic import make_synthetic
from memlens.data.text import read_text_corpus, tokenize_lines
from memlens.data.vocab import EOS, UNK, Vocab

__all__ = ["Corpus", "EOS", "UNK", "Vocab", "batchify", "bptt_windows", "load_corpus",
           "make_synthetic", "read_conllu", "read_groups", "read_lexicon", "read_text_corpus",
           "read_word_list", "tokenize_lines"]
