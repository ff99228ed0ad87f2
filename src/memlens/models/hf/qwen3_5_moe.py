"""Qwen3.5-MoE, text model (``Qwen3_5MoeForCausalLM`` / ``Qwen3_5MoeTextModel``, model_type
"qwen3_5_moe_text"): Qwen3.5's blocks (:mod:`.qwen3_5`: gated DeltaNet with separate projections,
gated attention) with a mixture of experts (a routed top-k and a gated shared expert) after every
block, which the step calls as the model does, by the experts' eager forward. Readouts as
Qwen3.5; analysed in ``window:N`` or ``sentence`` only. The router takes its softmax in float32
whatever the model's dtype, as the model does.
"""

from __future__ import annotations

from memlens.models.hf.qwen3_5 import Qwen3_5Family


class Qwen3_5MoeFamily(Qwen3_5Family):
    """``Qwen3_5MoeForCausalLM`` / ``Qwen3_5MoeTextModel``: :class:`Qwen3_5Family`'s blocks and
    head (the multimodal ``Qwen3_5MoeForConditionalGeneration`` is not read)."""

    causal_lm = "Qwen3_5MoeForCausalLM"
    prefix = "Qwen3_5Moe"
