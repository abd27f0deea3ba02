"""Write a GGUF file shaped like Llama-3.1-8B (32 layers, hidden 4096, MLP 14336, 32 heads, 8 KV heads) with random
4-bit weights (Q4_0, and Q4_K for the MLP's down projections) and the embedded SmolLM2's tokenizer (vocabulary
49,152), streamed tensor by tensor so that writing it needs little memory. The weights are random: the file is
for measuring load time, memory and speed at the size people run, not for reading its text.

    python benchmarks/big_gguf.py /tmp/llama8b-shaped.Q4_0.gguf [--layers 32]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HIDDEN, MLP, HEADS, KV_HEADS, LAYERS = 4096, 14336, 32, 8, 32
BLOCK = {"Q4_0": (32, 18), "Q4_K": (256, 144)}  # values per block, bytes per block


def random_blocks(rows: int, columns: int, kind: str, generator: np.random.Generator) -> np.ndarray:
    """Valid random blocks: small f16 scales (so activations stay finite through the norms), random nibbles."""
    values, size = BLOCK[kind]
    blocks = generator.integers(0, 256, size=(rows, columns // values, size), dtype=np.uint8)
    scale = np.full((rows, columns // values, 1), 0.002, dtype=np.float16).view(np.uint8)
    blocks[..., 0:2] = scale
    if kind == "Q4_K":
        blocks[..., 2:4] = scale  # dmin
    return blocks.reshape(rows, -1)


def tensor_plan(layers: int, vocab: int) -> list[tuple[str, tuple[int, int] | tuple[int], str]]:
    """(name, shape as rows x columns, GGML type) for every tensor, in llama.cpp's names."""
    head_dim = HIDDEN // HEADS
    plan: list[tuple[str, tuple[int, int] | tuple[int], str]] = [("token_embd.weight", (vocab, HIDDEN), "Q4_0")]
    for layer in range(layers):
        prefix = f"blk.{layer}."
        plan += [(prefix + "attn_norm.weight", (HIDDEN,), "F32"), (prefix + "ffn_norm.weight", (HIDDEN,), "F32"),
                 (prefix + "attn_q.weight", (HIDDEN, HIDDEN), "Q4_0"),
                 (prefix + "attn_k.weight", (KV_HEADS * head_dim, HIDDEN), "Q4_0"),
                 (prefix + "attn_v.weight", (KV_HEADS * head_dim, HIDDEN), "Q4_0"),
                 (prefix + "attn_output.weight", (HIDDEN, HIDDEN), "Q4_0"),
                 (prefix + "ffn_gate.weight", (MLP, HIDDEN), "Q4_0"), (prefix + "ffn_up.weight", (MLP, HIDDEN), "Q4_0"),
                 (prefix + "ffn_down.weight", (HIDDEN, MLP), "Q4_K")]
    plan += [("output_norm.weight", (HIDDEN,), "F32"), ("output.weight", (vocab, HIDDEN), "Q4_0")]
    return plan


def copy_tokenizer(writer: object, source: Path) -> int:
    """Copy the tokenizer.* metadata of a GGUF file (the embedded SmolLM2's); returns its vocabulary size."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(source))
    vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            writer.add_array(key, value)  # type: ignore[attr-defined]
            if key == "tokenizer.ggml.tokens":
                vocab = len(value)
        elif kind == GGUFValueType.STRING:
            writer.add_string(key, value)  # type: ignore[attr-defined]
        else:
            writer.add_key_value(key, value, kind)  # type: ignore[attr-defined]
    return vocab


def write(path: Path, layers: int, tokenizer_source: Path) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("llama-3.1-8b-shaped random Q4_0")
    writer.add_context_length(8192)
    writer.add_block_count(layers)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(MLP)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(500000.0)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    vocab = copy_tokenizer(writer, tokenizer_source)
    plan = tensor_plan(layers, vocab)
    for name, shape, kind in plan:
        if kind == "F32":
            writer.add_tensor_info(name, shape, np.dtype(np.float32), shape[0] * 4)
        else:
            values, size = BLOCK[kind]
            rows, columns = shape
            writer.add_tensor_info(name, (rows, columns // values * size), np.dtype(np.uint8),
                                   rows * columns // values * size, raw_dtype=gguf.GGMLQuantizationType[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    generator = np.random.default_rng(0)
    for _name, shape, kind in plan:
        if kind == "F32":
            writer.write_tensor_data(np.ones(shape, dtype=np.float32))
        else:
            writer.write_tensor_data(random_blocks(shape[0], shape[1], kind, generator))
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--layers", type=int, default=LAYERS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from llmscope.loading.modelspec import embedded_gguf_path

    write(args.path, args.layers, embedded_gguf_path())
    print(f"{args.path} {args.path.stat().st_size / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
