"""Speech: grapheme CTC recognisers over log-mel frames, and what their layers remember.

:mod:`~memlens.speech.graphemes` (the grapheme set and transcript policy),
:mod:`~memlens.speech.data` (corpus readers, audio, features), :mod:`~memlens.speech.synth`
(``memlens speech-corpus``), :mod:`~memlens.speech.model` (the CTC model, training, decoding,
error rates), :mod:`~memlens.speech.align` (CTC forced alignment, per-frame grapheme labels),
:mod:`~memlens.speech.analysis` (per-layer signatures and state gradients).

Transitional: the modules have moved by layer and the names here are aliases of
:mod:`memlens.data.speech` (graphemes, data -> corpus, synth), :mod:`memlens.models.asr`
(model: the recogniser, decoding, error rates, checkpoint), :mod:`memlens.training.asr`
(ASRConfig, train_asr) and :mod:`memlens.analyses.speech` (align, analysis).
"""
