"""Write a tiny llama GGUF file (float32 tensors, a byte-level BPE tokenizer) from a tiny model folder.
Used by the conversion-cache tests so that a conversion takes a fraction of a second instead of 15 s."""

from __future__ import annotations

import json
from pathlib import Path

LAYER_PARTS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
TOP_LEVEL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def write_tiny_gguf(model_folder: Path, path: Path) -> Path:
    """GGUF of a tiny llama folder built by conftest.build_tiny_model (names as llama.cpp writes them)."""
    import gguf
    from safetensors.torch import load_file

    config = json.loads((model_folder / "config.json").read_text())
    tokenizer = json.loads((model_folder / "tokenizer.json").read_text())
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    added = {token["content"]: token["id"] for token in tokenizer["added_tokens"]}
    vocab = {**tokenizer["model"]["vocab"], **added}
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in added else 1 for token in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]])
    writer.add_bos_token_id(added["<|endoftext|>"])
    writer.add_eos_token_id(added["<|im_end|>"])
    for name, tensor in load_file(str(model_folder / "model.safetensors")).items():
        if name in TOP_LEVEL:
            target = TOP_LEVEL[name]
        else:
            _, _, layer, *rest = name.split(".")
            target = f"blk.{layer}.{LAYER_PARTS['.'.join(rest[:-1])]}.weight"
        writer.add_tensor(target, tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
