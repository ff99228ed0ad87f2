"""Speech data: the grapheme set and transcript policy (:mod:`~memlens.data.speech.graphemes`),
corpus readers, audio decoding and log-mel features (:mod:`~memlens.data.speech.corpus`), and
synthetic corpora made with espeak-ng (:mod:`~memlens.data.speech.synth`,
``memlens speech-corpus``).
"""
