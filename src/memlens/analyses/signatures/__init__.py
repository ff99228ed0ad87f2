"""Memory signatures: per-lag decodability of past input symbols from recurrent states.

Modules (each imports only those before it; no cycle):

* :mod:`.symbols`, :mod:`.decoders`: what is decoded, and the joint per-lag decoders;
* :mod:`.table`: the per-lag table rows and series (plain data);
* :mod:`.plots`: the PNGs, from per-lag arrays;
* :mod:`.signature`: :class:`Signature` and its computation from states;
* :mod:`.sites`: the sites a signature reads (default readout: the layer's output);
* :mod:`.api`: :func:`memory_signature`, the entry point (model -> states -> signature);
* :mod:`.config`, :mod:`.result`, :mod:`.progress`, :mod:`.study`: the study of
  ``memlens signatures`` (its options, its result, its checkpoint, its steps).

State extraction, the n-gram and the window LM live in :mod:`memlens.models` (``states``,
``ngram``, ``window_lm``).
"""

from memlens.analyses.signatures.api import memory_signature, random_init_copy
from memlens.analyses.signatures.decoders import (
    FastLinearDecoder,
    JointDecoder,
    lag_targets,
    make_decoder,
)
from memlens.analyses.signatures.signature import (
    Signature,
    group_divergence,
    js_divergence,
    signature_from_states,
    signature_from_targets,
)
from memlens.analyses.signatures.symbols import SymbolSet, build_symbols

__all__ = ["FastLinearDecoder", "JointDecoder", "Signature", "SymbolSet", "build_symbols",
           "group_divergence", "js_divergence", "lag_targets", "make_decoder",
           "memory_signature", "random_init_copy", "signature_from_states",
           "signature_from_targets"]
