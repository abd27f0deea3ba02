"""Configs of real model families, small: Phi-3-mini's own config.json (no weights), today's families (mixture of
experts, latent attention, sliding windows; FAMILIES) and the hybrid and state-space ones (HYBRIDS), as transformers
names their fields."""

from __future__ import annotations

from typing import Any

PHI3_MINI_4K = {
    "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
    "max_position_embeddings": 4096, "original_max_position_embeddings": 4096, "sliding_window": 2047,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False,
    "pad_token_id": 32000, "bos_token_id": 1, "eos_token_id": 32000, "hidden_act": "silu", "attention_dropout": 0.0,
    "embd_pdrop": 0.0, "resid_pdrop": 0.0, "initializer_range": 0.02, "torch_dtype": "bfloat16", "use_cache": True,
}

_MODERN = dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
              max_position_embeddings=128)
FAMILIES: dict[str, dict[str, Any]] = {
    "mixtral": dict(_MODERN, intermediate_size=48, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(_MODERN, intermediate_size=48, moe_intermediate_size=16, num_key_value_heads=2, num_experts=4,
                      num_experts_per_tok=2, head_dim=8),
    "deepseek_v3": dict(_MODERN, intermediate_size=48, moe_intermediate_size=16, num_key_value_heads=4,
                        n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                        kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=8,
                        n_group=1, topk_group=1),
    "gemma2": dict(_MODERN, intermediate_size=48, num_key_value_heads=2, head_dim=8, sliding_window=8),
    "gpt_oss": dict(_MODERN, intermediate_size=16, num_key_value_heads=2, head_dim=8, sliding_window=8,
                    num_local_experts=4, num_experts_per_tok=2),
    "qwen3_next": dict(_MODERN, num_hidden_layers=8, intermediate_size=48, moe_intermediate_size=16,
                       shared_expert_intermediate_size=16, num_key_value_heads=2, head_dim=8, num_experts=4,
                       num_experts_per_tok=2, linear_num_value_heads=4, linear_num_key_heads=2,
                       linear_key_head_dim=8, linear_value_head_dim=8, linear_conv_kernel_dim=4),
    "falcon": dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, multi_query=True,
                   new_decoder_architecture=False, max_position_embeddings=128),
}

_HYBRID = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=48, max_position_embeddings=128)
_MAMBA2 = dict(mamba_n_heads=4, mamba_d_state=16, mamba_n_groups=1, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16)
HYBRIDS: dict[str, dict[str, Any]] = {
    "jamba": dict(_HYBRID, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1,
                  num_experts=4, num_experts_per_tok=2, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2),
    "bamba": dict(_HYBRID, attn_layer_indices=[1], **_MAMBA2),
    "granitemoehybrid": dict(_HYBRID, layer_types=["mamba", "attention"], num_local_experts=4, num_experts_per_tok=2,
                             shared_intermediate_size=24, **_MAMBA2),
    "falcon_h1": dict(_HYBRID, head_dim=8, mamba_d_ssm=64, **_MAMBA2),
    "zamba2": dict(_HYBRID, num_key_value_heads=4, layers_block_type=["mamba", "hybrid"], mamba_d_state=16,
                   mamba_d_conv=4, mamba_expand=2, mamba_ngroups=1, n_mamba_heads=4, chunk_size=16, num_mem_blocks=1),
    "minimax": dict(_HYBRID, head_dim=8, num_local_experts=4, num_experts_per_tok=2, block_size=16,
                    layer_types=["linear_attention", "full_attention"]),
    "lfm2": dict(_HYBRID, full_attn_idxs=[1], conv_L_cache=3),
    "mamba": dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, state_size=8, conv_kernel=4, expand=2),
    "mamba2": dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, state_size=16, conv_kernel=4, expand=2,
                   num_heads=4, head_dim=16, n_groups=1, chunk_size=16),
    "llama4_text": dict(_HYBRID, intermediate_size_mlp=64, head_dim=8, num_local_experts=4, num_experts_per_tok=1,
                        attention_chunk_size=16, no_rope_layer_interval=2, interleave_moe_layer_step=1),
    "smollm3": dict(_HYBRID, no_rope_layer_interval=2, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "ernie4_5_moe": dict(_HYBRID, moe_intermediate_size=16, moe_num_experts=4, moe_k=2, moe_num_shared_experts=1,
                         moe_layer_start_index=0, moe_layer_interval=1),
    "hunyuan_v1_moe": dict(_HYBRID, moe_intermediate_size=16, head_dim=8, num_experts=4, moe_topk=2),
}
