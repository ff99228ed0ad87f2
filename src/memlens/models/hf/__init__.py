"""Today's recurrent language models from Hugging Face transformers: Mamba, FalconMamba, Mamba-2,
RWKV and xLSTM, and the hybrids Bamba, Jamba, LFM2 and Qwen3-Next (recurrent, short-convolution or
gated DeltaNet blocks with attention).

Modules: :mod:`.registry` (the family registry, ``register_family``), :mod:`.common`
(:func:`load_hf`, :func:`from_hf`, the tokenizer's symbols), :mod:`.block` (the block layer
and head every family shares), :mod:`.corpus` (corpora in the model's own tokens), and one
module per family (:mod:`.mamba` with FalconMamba, :mod:`.mamba2`, :mod:`.rwkv`, :mod:`.xlstm`,
the hybrids :mod:`.bamba`, :mod:`.jamba`, :mod:`.lfm2`, :mod:`.qwen3_next` with their shared
attention block in
:mod:`.hybrid`) with its registry line below.

:func:`from_hf` turns a ``MambaForCausalLM``, ``RwkvForCausalLM`` or ``xLSTMForCausalLM`` (or a
directory / name that ``from_pretrained`` resolves) into a :class:`RecurrentEncoder`:

* **inputs**: token ids through the model's input embeddings (``get_input_embeddings()``); the
  analysed x_t is the embedding row (``inputs_embeds``).
* **layers**: one :class:`HFBlockLayer` per block, whose ``step`` is the block's own forward for
  one token, written out in plain PyTorch (no CUDA kernels; every dtype; differentiable by
  ``torch.func.jvp``, so state gradients take the generic tangent path). The state is a dict of
  tensors (batch first); ``step`` reproduces the model's forward (tests: <= 1e-5 in float32).
* **readouts** per block, each flattened to B x D: ``"hidden"`` = the block's output (the
  residual stream: what ``output_hidden_states`` returns for that block; the default readout)
  and every recurrent state component under its own name:

  ======  ==========================================================================
  Mamba   ``ssm`` (d_inner x d_state), ``conv`` (d_inner x (conv_kernel - 1): the last
          inputs of the causal convolution; HF's cache keeps one more, unused, column);
          FalconMamba the same
  Mamba2  ``ssm`` (heads x head_dim x d_state; unit sets ``head:H``, split ``heads``),
          ``conv`` (conv_dim x (conv_kernel - 1), conv_dim = d_inner + 2 n_groups d_state)
  RWKV    ``numerator``, ``denominator``, ``max`` (the stabilised WKV sums, attention size
          each), ``att_shift``, ``ffn_shift`` (the previous token's normalised input of the
          time-mix and channel-mix, hidden size each)
  xLSTM   ``C`` (heads x d_qk x d_v matrix memory), ``n`` (heads x d_qk normaliser),
          ``m`` (heads: the stabiliser)
  Bamba   Mamba-2 blocks as Mamba2; attention blocks ``hidden`` only
  Jamba   Mamba blocks as Mamba; attention blocks ``hidden`` only
  LFM2    short-convolution blocks ``conv`` (hidden x (conv_L_cache - 1)); attention
          blocks ``hidden`` only
  Qwen3N  gated DeltaNet blocks ``memory`` (value heads x d_k x d_v matrix state; units
          ``head:H``), ``conv``; gated attention blocks ``hidden`` only
  Qwen35  text models (``qwen3_5_text``, ``qwen3_5_moe_text``): as Qwen3N (:mod:`.qwen3_5`,
          :mod:`.qwen3_5_moe`)
  OLMoH   OLMo-Hybrid: gated DeltaNet blocks as Qwen3N; post-norm attention blocks
          ``hidden`` only (:mod:`.olmo_hybrid`)
  Kimi    Kimi Linear: Kimi Delta Attention blocks as Qwen3N (per-channel decay); MLA
          blocks ``hidden`` only (:mod:`.kimi_linear`)
  MiniM   MiniMax: lightning attention blocks ``memory`` (heads x d x d; units ``head:H``);
          attention blocks ``hidden`` only (:mod:`.minimax`)
  L2MoE   LFM2-MoE: as LFM2, the feed-forward a mixture of experts (:mod:`.lfm2_moe`)
  RGemma  RecurrentGemma: RG-LRU blocks ``lru`` (lru_width), ``conv``; local attention
          blocks ``hidden`` only (:mod:`.recurrent_gemma`)
  GrnH    Granite-4.0 hybrid: as Bamba, with its multipliers (:mod:`.granitemoehybrid`)
  NemH    Nemotron-H: Mamba-2 blocks as Mamba2; attention, MLP and expert blocks ``hidden``
          only (:mod:`.nemotron_h`)
  FalH1   Falcon-H1: Mamba-2 mixer and attention in every block, Mamba2's readouts, the
          key/value cache state; its multipliers (:mod:`.falcon_h1`)
  ======  ==========================================================================

  An attention block's state is the key/value cache of the positions since the last reset
  (not a readout): hybrids are analysed in ``window:N`` or ``sentence`` (:mod:`.hybrid`).

* **head** (context ablation only): the final norm and the LM head (and xLSTM's logit soft cap).
* **vocabulary**: the tokenizer's tokens, shown decoded (``tokenizer.decode([id])``; the raw
  token where two ids decode alike; ``<id:N>`` for embedding rows beyond the tokenizer).
  :func:`tokenize_corpus` tokenises a word corpus with the model's own tokenizer.

Numerics: the step computes in the dtype of its input; the models' forwards cast some
reductions to float32 (Mamba's RMSNorm and residual, RWKV's WKV keys, xLSTM's states), which
equals the step in float32. RWKV in eval mode divides some weights by 2 every
``rescale_every`` blocks (and the hidden state accordingly); :func:`from_hf` puts the model in
that inference form, as its own forward in eval mode does.
"""


from memlens.models.hf.bamba import BambaAttentionLayer, BambaFamily, BambaMambaLayer
from memlens.models.hf.block import HFBlockLayer, HFHead, HFState
from memlens.models.hf.common import from_hf, hf_symbols, load_hf
from memlens.models.hf.corpus import SubwordCorpus, tokenize_corpus
from memlens.models.hf.falcon_h1 import FalconH1Family
from memlens.models.hf.granitemoehybrid import GraniteMoeHybridFamily
from memlens.models.hf.hybrid import AttentionLayer
from memlens.models.hf.jamba import JambaAttentionLayer, JambaFamily, JambaMambaLayer
from memlens.models.hf.kimi_linear import KimiLinearFamily
from memlens.models.hf.lfm2 import Lfm2AttentionLayer, Lfm2ConvLayer, Lfm2Family
from memlens.models.hf.lfm2_moe import Lfm2MoeFamily
from memlens.models.hf.mamba import (
    FalconMambaFamily,
    FalconMambaLayer,
    MambaFamily,
    MambaLayer,
)
from memlens.models.hf.mamba2 import Mamba2Family, Mamba2Layer
from memlens.models.hf.minimax import MiniMaxFamily
from memlens.models.hf.nemotron_h import NemotronHFamily
from memlens.models.hf.olmo_hybrid import OlmoHybridFamily
from memlens.models.hf.qwen3_5 import Qwen3_5Family
from memlens.models.hf.qwen3_5_moe import Qwen3_5MoeFamily
from memlens.models.hf.qwen3_next import (
    GatedDeltaNetLayer,
    Qwen3NextAttentionLayer,
    Qwen3NextFamily,
)
from memlens.models.hf.recurrent_gemma import RecurrentGemmaFamily
from memlens.models.hf.registry import (
    FAMILIES,
    HFFamily,
    family_of,
    register_family,
    supported_text,
    unregister_family,
)
from memlens.models.hf.rwkv import RwkvFamily, RwkvLayer
from memlens.models.hf.xlstm import XLSTMFamily, XLSTMLayer

# the families memlens reads: one line each (a new family: its module + one line here)
register_family("mamba", MambaFamily())
register_family("falcon_mamba", FalconMambaFamily())
register_family("mamba2", Mamba2Family())
register_family("rwkv", RwkvFamily())
register_family("xlstm", XLSTMFamily())
register_family("bamba", BambaFamily())  # hybrids: window:N or sentence only (.hybrid)
register_family("jamba", JambaFamily())
register_family("lfm2", Lfm2Family())
register_family("granitemoehybrid", GraniteMoeHybridFamily())  # Bamba-like, multipliers
register_family("falcon_h1", FalconH1Family())  # Mamba-2 + attention in parallel, muP
register_family("nemotron_h", NemotronHFamily())  # single-mixer blocks M / * / - / E
register_family("lfm2_moe", Lfm2MoeFamily())  # LFM2 with experts (.lfm2_moe)
register_family("recurrent_gemma", RecurrentGemmaFamily())  # RG-LRU + local attention
register_family("qwen3_next", Qwen3NextFamily())  # gated DeltaNet + gated attention
register_family("qwen3_5_text", Qwen3_5Family())  # Qwen3.5 text (Qwen3_5ForCausalLM)
register_family("qwen3_5_moe_text", Qwen3_5MoeFamily())  # Qwen3.5-MoE text
register_family("olmo_hybrid", OlmoHybridFamily())
register_family("kimi_linear", KimiLinearFamily())  # Kimi Delta Attention + MLA
register_family("minimax", MiniMaxFamily())  # lightning attention + attention

__all__ = ["AttentionLayer", "BambaAttentionLayer", "BambaFamily", "BambaMambaLayer", "FAMILIES",
           "FalconH1Family", "FalconMambaFamily", "FalconMambaLayer", "GatedDeltaNetLayer",
           "GraniteMoeHybridFamily",
           "HFBlockLayer", "HFFamily", "HFHead", "HFState", "JambaAttentionLayer", "JambaFamily",
           "JambaMambaLayer", "KimiLinearFamily",
           "Lfm2AttentionLayer", "Lfm2ConvLayer", "Lfm2Family", "Lfm2MoeFamily",
           "Mamba2Family", "Mamba2Layer", "MambaFamily", "MambaLayer", "MiniMaxFamily",
           "NemotronHFamily",
           "Qwen3NextAttentionLayer",
           "Qwen3NextFamily", "RecurrentGemmaFamily", "RwkvFamily", "RwkvLayer", "SubwordCorpus",
           "XLSTMFamily", "XLSTMLayer", "family_of", "from_hf", "hf_symbols", "load_hf",
           "register_family", "supported_text", "tokenize_corpus", "unregister_family"]
