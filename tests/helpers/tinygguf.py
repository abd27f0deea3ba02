"""Write a tiny llama GGUF file (float32 tensors, a byte-level BPE tokenizer) from a tiny model folder.
Used by the conversion-cache tests so that a conversion takes a fraction of a second instead of 15 s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

LAYER_PARTS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
TOP_LEVEL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}


def write_tiny_gguf(model_folder: Path, path: Path, types: dict[str, str] | None = None) -> Path:
    """GGUF of a tiny llama folder built by conftest.build_tiny_model (names as llama.cpp writes them).

    types: GGUF tensor-name suffix -> GGML type for 2-D tensors (e.g. {"attn_q.weight": "Q4_1", "": "Q4_0"});
    the longest matching suffix wins, "" matches every 2-D tensor; unmatched tensors stay float32.
    """
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
        _add_tensor(writer, target, tensor.float().numpy(), types or {})
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tensor(writer: Any, name: str, values: np.ndarray, types: dict[str, str]) -> None:
    import gguf

    matches = [suffix for suffix in types if name.endswith(suffix)]
    if values.ndim != 2 or not matches:
        writer.add_tensor(name, values)
        return
    kind = gguf.GGMLQuantizationType[types[max(matches, key=len)]]
    blocks = encode_q4_k(values) if kind.name == "Q4_K" else gguf.quants.quantize(values, kind)
    writer.add_tensor(name, blocks, raw_dtype=kind)


def encode_q4_k(values: np.ndarray) -> np.ndarray:
    """Q4_K blocks for a float32 [rows, columns] array (columns a multiple of 256), written as llama.cpp lays them
    out: f16 d and dmin, twelve bytes of 6-bit sub-block scales and mins, then 128 bytes of 4-bit values (each 32
    bytes hold two 32-value sub-blocks, low nibbles first). A plain min-max encoder: the tests check the decoder
    against gguf's own dequantization of these blocks, not the encoder's accuracy."""
    rows, columns = values.shape
    groups = values.astype(np.float32).reshape(rows, columns // 256, 8, 32)
    low = np.minimum(groups.min(axis=-1), 0)  # [rows, S, 8], a non-negative "min" to subtract
    step = np.maximum((groups.max(axis=-1) - low) / 15, 1e-8)
    d = (step.max(axis=-1) / 63).astype(np.float16)  # [rows, S]
    dmin = ((-low).max(axis=-1) / 63).astype(np.float16)
    scale = np.clip(np.round(step / np.maximum(d.astype(np.float32), 1e-12)[..., None]), 1, 63).astype(np.uint8)
    mins = np.clip(np.round(-low / np.maximum(dmin.astype(np.float32), 1e-12)[..., None]), 0, 63).astype(np.uint8)
    real_scale = d.astype(np.float32)[..., None] * scale
    real_min = dmin.astype(np.float32)[..., None] * mins
    quants = np.clip(np.round((groups + real_min[..., None]) / real_scale[..., None]), 0, 15).astype(np.uint8)
    packed_scales = np.zeros((rows, columns // 256, 12), dtype=np.uint8)
    packed_scales[..., 0:4] = (scale[..., 0:4] & 63) | ((scale[..., 4:8] >> 4) << 6)
    packed_scales[..., 4:8] = (mins[..., 0:4] & 63) | ((mins[..., 4:8] >> 4) << 6)
    packed_scales[..., 8:12] = (scale[..., 4:8] & 15) | ((mins[..., 4:8] & 15) << 4)
    pairs = quants.reshape(rows, columns // 256, 4, 2, 32)
    nibbles = pairs[:, :, :, 0, :] | (pairs[:, :, :, 1, :] << 4)  # [rows, S, 4, 32]
    block = np.concatenate([d[..., None].view(np.uint8), dmin[..., None].view(np.uint8), packed_scales,
                            nibbles.reshape(rows, columns // 256, 128)], axis=-1)
    return block.reshape(rows, columns // 256 * 144)


# The quantized tiny llama's tensors: q in Q4_1, the MLP's down projection in Q8_0 (int8 per row), the embedding (tied
# to the head) in Q8_0 (dequantized exactly under auto), everything else 2-D in Q4_0; norms stay float32.
TINY_TYPES = {"": "Q4_0", "attn_q.weight": "Q4_1", "ffn_down.weight": "Q8_0", "token_embd.weight": "Q8_0"}


def load_converted(gguf: Path) -> tuple[Any, Path]:
    """Load `gguf` (converting it into the conversion cache on first use) and return it with its cache entry."""
    from llmscope.loading import loader

    loaded = loader.load_model(str(gguf), device="cpu")
    return loaded, loader.gguf_cache_dir(loaded.spec)
