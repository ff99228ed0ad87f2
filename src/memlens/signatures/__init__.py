"""Memory signatures: per-lag decodability of past input symbols from recurrent states."""

from memlens.signatures.decoders import (
    FastLinearDecoder,
    IndexStates,
    JointDecoder,
    lag_targets,
    make_decoder,
)
from memlens.signatures.signature import (
    Signature,
    group_divergence,
    js_divergence,
    memory_signature,
    random_init_copy,
    signature_from_states,
)
from memlens.signatures.states import View, extract_states
from memlens.signatures.symbols import SymbolSet, build_symbols

__all__ = ["FastLinearDecoder", "IndexStates", "JointDecoder", "Signature", "SymbolSet", "View",
           "build_symbols", "extract_states", "group_divergence", "js_divergence",
           "lag_targets", "make_decoder", "memory_signature", "random_init_copy",
           "signature_from_states"]
