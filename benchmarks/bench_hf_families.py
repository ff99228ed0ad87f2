"""Benchmark: every registered Hugging Face family on a tiny random config (hidden 32, vocabulary
128, 2-4 blocks; the configs of the tests' size), one run: tokens/s of memlens' state
extraction (every readout of the top block, one stream of ``--tokens`` positions, batch 1) and of
state gradients at K = 20 (top block output, ``--grad-tokens`` positions), the tangent path
used, and the model's own forward (whole stream, no cache) for reference. Families with
attention blocks run in ``window:64`` (the state extraction window by window).

Run:  python benchmarks/bench_hf_families.py [--tokens 512] [--grad-tokens 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import transformers

import memlens
from memlens.models.hf import FAMILIES, from_hf
from memlens.models.states import extract_states
from memlens.protocol import Site
from memlens.runtime.options import as_options

V, H, WINDOW, K = 128, 32, 64, 20


def configs() -> dict:
    """model_type -> (causal-LM class name, config) of the tiny random models."""
    t = transformers
    out = {
        "mamba": ("MambaForCausalLM", lambda: t.MambaConfig(
            vocab_size=V, hidden_size=H, state_size=8, num_hidden_layers=2, expand=2)),
        "falcon_mamba": ("FalconMambaForCausalLM", lambda: t.FalconMambaConfig(
            vocab_size=V, hidden_size=H, state_size=8, num_hidden_layers=2, expand=2)),
        "mamba2": ("Mamba2ForCausalLM", lambda: t.Mamba2Config(
            vocab_size=V, hidden_size=H, state_size=8, num_hidden_layers=2, expand=2,
            num_heads=8, head_dim=8, n_groups=2, chunk_size=16)),
        "rwkv": ("RwkvForCausalLM", lambda: t.RwkvConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=2, context_length=1024)),
        "xlstm": ("xLSTMForCausalLM", lambda: t.xLSTMConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=2, num_heads=2,
            ffn_round_up_to_multiple_of=8)),
        "bamba": ("BambaForCausalLM", lambda: t.BambaConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, mamba_n_heads=8, mamba_d_head=8,
            mamba_n_groups=2, mamba_d_state=4, mamba_d_conv=3, mamba_expand=2,
            mamba_chunk_size=16, attn_layer_indices=[1])),
        "jamba": ("JambaForCausalLM", lambda: t.JambaConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, num_experts=4, num_experts_per_tok=2,
            expert_layer_period=2, expert_layer_offset=0, attn_layer_period=2,
            attn_layer_offset=1, mamba_d_state=4, mamba_d_conv=3, mamba_expand=2,
            mamba_dt_rank=4)),
        "lfm2": ("Lfm2ForCausalLM", lambda: t.Lfm2Config(
            vocab_size=V, hidden_size=H, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, conv_L_cache=3,
            layer_types=["conv", "full_attention", "conv"])),
        "lfm2_moe": ("Lfm2MoeForCausalLM", lambda: t.Lfm2MoeConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, moe_intermediate_size=16,
            num_experts=4, num_experts_per_tok=2, num_dense_layers=1, conv_L_cache=3,
            layer_types=["conv", "full_attention", "conv", "full_attention"])),
        "recurrent_gemma": ("RecurrentGemmaForCausalLM", lambda: t.RecurrentGemmaConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=3, intermediate_size=96,
            num_attention_heads=4, num_key_value_heads=2, attention_window_size=16,
            conv1d_width=3, block_types=["recurrent", "attention"])),
        "qwen3_next": ("Qwen3NextForCausalLM", lambda: t.Qwen3NextConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=4,
            layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, intermediate_size=48, linear_num_key_heads=2,
            linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
            shared_expert_intermediate_size=16, decoder_sparse_step=2, mlp_only_layers=[])),
        "kimi_linear": ("KimiLinearForCausalLM", lambda: t.KimiLinearConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=4,
            layer_types=["linear_attention"] * 2 + ["full_attention", "linear_attention"],
            mlp_layer_types=["dense", "sparse", "dense", "sparse"], num_attention_heads=4,
            num_key_value_heads=4, intermediate_size=48, moe_intermediate_size=16,
            num_experts=4, num_experts_per_token=2, num_shared_experts=1, kv_lora_rank=16,
            qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=8, linear_head_dim=8,
            linear_num_heads=4, linear_conv_kernel_dim=4, pad_token_id=0, bos_token_id=1,
            eos_token_id=2)),
        "granitemoehybrid": ("GraniteMoeHybridForCausalLM", lambda: t.GraniteMoeHybridConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=3,
            layer_types=["mamba", "attention", "mamba"], num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=16, shared_intermediate_size=24,
            num_local_experts=4, num_experts_per_tok=2, mamba_n_heads=8, mamba_d_head=8,
            mamba_n_groups=2, mamba_d_state=4, mamba_d_conv=3, mamba_expand=2,
            mamba_chunk_size=16, position_embedding_type="rope", embedding_multiplier=3.0,
            logits_scaling=2.5, residual_multiplier=0.6, attention_multiplier=0.3)),
        "falcon_h1": ("FalconH1ForCausalLM", lambda: t.FalconH1Config(
            vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, mamba_d_ssm=64, mamba_n_heads=8,
            mamba_d_head=8, mamba_n_groups=2, mamba_d_state=4, mamba_d_conv=3,
            mamba_chunk_size=16, mamba_rms_norm=True, embedding_multiplier=2.0,
            lm_head_multiplier=0.7, key_multiplier=0.6, attention_in_multiplier=1.3,
            attention_out_multiplier=0.8, ssm_in_multiplier=1.2, ssm_out_multiplier=0.7,
            ssm_multipliers=[0.9, 1.1, 0.8, 1.25, 0.6], mlp_multipliers=[1.3, 0.7])),
        "nemotron_h": ("NemotronHForCausalLM", lambda: t.NemotronHConfig(
            vocab_size=V, hidden_size=H, layers_block_type=["mamba", "attention", "mlp", "moe"],
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=48,
            mamba_num_heads=8, mamba_head_dim=8, n_groups=2, ssm_state_size=4, conv_kernel=3,
            chunk_size=16, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
            moe_shared_expert_intermediate_size=16, n_group=1, topk_group=1)),
        "qwen3_5_text": ("Qwen3_5ForCausalLM", lambda: t.Qwen3_5TextConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=4,
            layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, intermediate_size=48, linear_num_key_heads=2,
            linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8)),
        "qwen3_5_moe_text": ("Qwen3_5MoeForCausalLM", lambda: t.Qwen3_5MoeTextConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=4,
            layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, linear_num_key_heads=2,
            linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
            shared_expert_intermediate_size=16)),
        "olmo_hybrid": ("OlmoHybridForCausalLM", lambda: t.OlmoHybridConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=4,
            layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, linear_num_key_heads=2,
            linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
            pad_token_id=None, eos_token_id=None)),
        "minimax": ("MiniMaxForCausalLM", lambda: t.MiniMaxConfig(
            vocab_size=V, hidden_size=H, num_hidden_layers=4,
            layer_types=["linear_attention", "full_attention"] + ["linear_attention"] * 2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=16,
            num_local_experts=4, num_experts_per_tok=2, block_size=16)),
    }
    return {k: v for k, v in out.items() if hasattr(t, v[0])}


def rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--grad-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="these model types only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    print(f"tiny configs (hidden {H}, vocabulary {V}), {args.threads} thread(s); states over "
          f"{args.tokens} tokens, gradients K={K} over {args.grad_tokens} tokens")
    print("family        params  forward tok/s  states tok/s  gradients tok/s  tangents  regime")
    for name, (cls, cfg) in configs().items():
        if name in FAMILIES and (not args.only or name in args.only):
            measure(name, cls, cfg, args)


def measure(name: str, cls: str, cfg, args) -> None:
    """One family's line of the table."""
    torch.manual_seed(0)
    model = getattr(transformers, cls)(cfg()).eval()
    for mod in model.modules():  # experts by their plain forward, as memlens runs them
        c = getattr(mod, "config", None)
        if c is not None and hasattr(c, "_experts_implementation"):
            c._experts_implementation = "eager"
    enc = from_hf(model, log=lambda *_: None)
    hybrid = any(getattr(lay, "context_grows", False) for lay in enc.layers)
    ids = torch.randint(0, V, (args.tokens,), generator=torch.Generator().manual_seed(1))
    top = len(enc.layers) - 1
    views = [Site(top, r).resolve(enc) for r in enc.layers[top].readouts]
    step = WINDOW if hybrid else args.tokens
    starts = range(0, args.tokens, step)
    with torch.no_grad():
        fwd = rate(lambda: [model(ids[None, a:a + step], use_cache=False) for a in starts],
                   args.tokens)
        st = rate(lambda: [extract_states(enc, ids[a:a + step], views) for a in starts],
                  args.tokens)
    g_ids = ids[:args.grad_tokens]
    res = {}

    def grads():
        res["r"] = memlens.state_gradients(
            enc, g_ids, K, options=as_options(device="cpu", bootstrap=0),
            context=f"window:{WINDOW}" if hybrid else None)

    gr = rate(grads, len(g_ids))
    n = sum(p.numel() for p in model.parameters())
    print(f"{name:12s}  {n:6d}  {fwd:13.0f}  {st:12.0f}  {gr:15.1f}  "
          f"{res['r'].settings['method']:8s}  {'window:64' if hybrid else 'stream'}",
          flush=True)

if __name__ == "__main__":
    main()
