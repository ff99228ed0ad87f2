"""What the layers of a grapheme CTC recogniser remember: CTC forced alignment and per-frame
grapheme labels (:mod:`~memlens.analyses.speech.align`), per-layer grapheme-lag memory
signatures and state gradients w.r.t. the input frames
(:mod:`~memlens.analyses.speech.analysis`).
"""
