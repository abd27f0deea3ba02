"""Quantized weights: GGUF 4-bit blocks decoded exactly, packed products against dequantized ones, a row's bits
whatever the rows in the call, tiny GGUFs loaded packed, --quantize on folders, gradients through packed weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.tinygguf import encode_q4_k

from llmscope.loading.loader import load_model
from llmscope.loading.quant.ggufweights import int4_blocks
from llmscope.loading.quant.modules import PackedEmbedding, PackedLinear, packed_summary
from llmscope.loading.quant.packing import _cpu_block_rows as cpu_int4_block_rows
from llmscope.loading.quant.packing import (
    _cpu_int4_rows,
    int8_shape_ok,
    pack_int4_values,
    packed_form,
    packed_linear,
    quantize,
    quantize_int4,
    quantize_int8,
    to_bfloat16,
    unpack_int4,
)

# The tiny llama's tensors: q in Q4_1, the MLP's down projection in Q8_0 (int8 per row), the embedding (tied to
# the head) in Q8_0 (dequantized exactly under auto), everything else 2-D in Q4_0; norms stay float32.


PROMPT = "The capital of France is"


def _blocks(kind: str, values: np.ndarray) -> np.ndarray:
    import gguf

    return encode_q4_k(values) if kind == "Q4_K" else gguf.quants.quantize(values, gguf.GGMLQuantizationType[kind])


def _dequantized(kind: str, blocks: np.ndarray) -> np.ndarray:
    import gguf

    return gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[kind])


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    generator = np.random.default_rng(0)
    return (generator.standard_normal((64, 512)) * 0.05 + 0.01).astype(np.float32)


def _next_token_probabilities(loaded: Any, text: str = PROMPT) -> torch.Tensor:
    ids = loaded.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return torch.softmax(loaded.model(ids).logits[0, -1].float(), dim=-1)


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p.log() - q.log())).sum())


WIDE = 100  # hidden size: not a multiple of 8, the shape that crashed _weight_int8pack_mm with 2+ rows


@pytest.mark.parametrize("kind", ["int4", "int8"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(96, 128), (576, 192), (192, 1536)])
def test_packed_linear_gives_a_row_the_same_bits_whatever_the_rows_in_the_call(kind: str, threads: int,
                                                                                 shape: tuple[int, int]) -> None:
    """M=1 decode and M=n prefill run one kernel: each row of a many-row call equals that row computed alone."""
    rows, columns = shape
    generator = torch.Generator().manual_seed(rows + columns)
    dense = torch.randn(rows, columns, generator=generator)
    layer = PackedLinear(quantize_int4(dense) if kind == "int4" else quantize_int8(dense))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for count in (2, 3, 7, 8, 64, 135):
            inputs = torch.randn(count, columns, generator=generator)
            together = layer(inputs)
            alone = torch.cat([layer(inputs[row:row + 1]) for row in range(count)])
            assert together.dtype == torch.float32
            assert torch.equal(together, alone), f"{kind} {shape}: {count} rows differ from one at a time"
            batched = layer(inputs.reshape(1, count, columns))[0]  # [batch, positions, features] as models call it
            assert torch.equal(batched, together)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q4_K"])
def test_four_bit_blocks_decode_to_ggufs_own_dequantization(kind: str, weights: np.ndarray) -> None:
    blocks = _blocks(kind, weights)
    values, scale, zero = int4_blocks(blocks, kind, weights.shape[1])
    assert values.min() >= 0 and values.max() <= 15
    ours = (values.astype(np.float32) - 8) * np.repeat(scale, 32, axis=1) + np.repeat(zero, 32, axis=1)
    np.testing.assert_allclose(ours, _dequantized(kind, blocks), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q4_K"])
def test_packed_product_equals_the_dequantized_product(kind: str, weights: np.ndarray) -> None:
    """Tolerances: scales and zeros are held in bfloat16 (8 significant bits), so the weights the packed form
    defines differ from the file's by at most 2^-8 of a group's zero (relative error of the weights under 0.5%);
    products take bfloat16 activations and give bfloat16 outputs: relative error under 1.5%, for a decode step's
    few rows and a prefill's many."""
    blocks = _blocks(kind, weights)
    values, scale, zero = int4_blocks(blocks, kind, weights.shape[1])
    scale_zero = torch.from_numpy(np.stack([scale.T, zero.T], axis=-1))
    packed = pack_int4_values(torch.from_numpy(values), scale_zero, kind)
    exact = torch.from_numpy(_dequantized(kind, blocks))
    assert torch.equal(unpack_int4(packed), torch.from_numpy(values))
    generator = torch.Generator().manual_seed(1)
    few = torch.randn(3, weights.shape[1], generator=generator)
    many = torch.randn(40, weights.shape[1], generator=generator)
    assert _relative(packed.matmul(few), few @ exact.T) < 0.015
    assert _relative(packed.matmul(many), many @ exact.T) < 0.015
    assert _relative(packed.dequantize(), exact) < 0.005


def test_int4_and_int8_quantizers_round_trip(weights: np.ndarray) -> None:
    dense = torch.from_numpy(weights)
    int4 = quantize_int4(dense)
    groups = dense.reshape(64, 16, 32)
    step = (groups.amax(-1) - groups.amin(-1)) / 15  # min-max: the error is at most half a step per group
    error = (int4.dequantize() - dense).abs().reshape(64, 16, 32).amax(-1)
    assert bool((error <= step * 0.5 + 2e-3).all())
    int8 = quantize_int8(dense)
    assert int8.data.dtype == torch.int8 and int8.scales.shape == (64,)
    assert float((int8.dequantize() - dense).abs().max()) <= float(dense.abs().max()) / 127
    half = to_bfloat16(dense)
    assert torch.equal(half.rows_dense(torch.tensor([3, 5]), torch.float32), dense[[3, 5]].bfloat16().float())
    assert torch.equal(int4.rows_dense(torch.tensor([[0, 40]]), torch.float32)[0], int4.dequantize()[[0, 40]])


@pytest.mark.parametrize("rows", [32, 64, 96, 160, 576])
def test_int4_values_read_back_in_this_cpus_layout(rows: int) -> None:
    """The CPU packer's layout depends on the CPU (32-row blocks on AVX2, 64 on AVX-512, with a 32-row rest):
    every row reads back, one at a time and all together, whatever the row count."""
    generator = torch.Generator().manual_seed(rows)
    values = torch.randint(0, 16, (rows, 128), generator=generator, dtype=torch.uint8)
    packed = pack_int4_values(values, torch.zeros(4, rows, 2))
    assert torch.equal(unpack_int4(packed), values)
    picked = torch.tensor([rows - 1, 0, rows // 2 + 1])
    assert torch.equal(_cpu_int4_rows(packed.data, rows, 128, picked), values[picked])
    assert cpu_int4_block_rows() in (32, 64)


def test_gradients_flow_through_packed_weights(weights: np.ndarray) -> None:
    packed = quantize_int4(torch.from_numpy(weights))
    x = torch.randn(2, 512, requires_grad=True)
    packed_linear(x, packed).square().sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    (reference @ packed.dequantize().T).square().sum().backward()
    assert _relative(x.grad, reference.grad) < 0.02


def test_auto_keeps_the_files_blocks_packed(quantized_gguf: Path) -> None:
    packed = load_model(str(quantized_gguf), device="cpu", dtype="float32", quantize="auto")
    exact = load_model(str(quantized_gguf), device="cpu", dtype="float32", quantize="none")
    assert packed.quantize == "auto" and exact.quantize == "none" and exact.weights is None
    assert packed_summary(packed.model) == {"int4 from Q4_0": 10,
                                            "int4 from Q4_1": 2, "int8 from Q8_0 requantized": 2}
    layer = packed.model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, PackedLinear) and layer.self_attn.q_proj.packed.source == "Q4_1"
    table = packed.model.model.embed_tokens  # a Q8_0 table is dequantized exactly: its errors reach the logits
    assert isinstance(table, torch.nn.Embedding) and packed.model.lm_head.weight is table.weight
    assert packed.parameters == exact.parameters == 94_528
    assert packed.info.activations == "bfloat16"
    p, q = _next_token_probabilities(packed), _next_token_probabilities(exact)
    assert _kl(q, p) < 1e-3  # the q/k rows are in transformers' order: a wrong order would be far off
    assert int(p.argmax()) == int(q.argmax())
    long_text = " ".join([PROMPT] * 6)
    assert _kl(_next_token_probabilities(exact, long_text), _next_token_probabilities(packed, long_text)) < 1e-3


def test_the_packed_cache_entry_loads_the_same_model(quantized_gguf: Path) -> None:
    first = load_model(str(quantized_gguf), device="cpu", quantize="int4")
    again = load_model(str(quantized_gguf), device="cpu", quantize="int4")
    assert again.from_cache is True
    assert torch.equal(_next_token_probabilities(first), _next_token_probabilities(again))
    assert set(packed_summary(again.model)) == {"int4 from Q4_0", "int4 from Q4_1", "int4 from Q8_0 requantized"}
    assert isinstance(again.model.model.embed_tokens, PackedEmbedding)
    assert again.model.lm_head.packed is again.model.model.embed_tokens.packed  # tied, held once


def test_the_packed_cache_file_is_read_into_aligned_memory_of_its_own(quantized_gguf: Path, tmp_path: Path) -> None:
    """Each tensor of the packed file in its own 64-byte-aligned allocation (the int8 kernel needs the alignment), read
    without mapping the file (a mapping stays resident beside the copies), and equal to what safetensors reads."""
    from safetensors.torch import load_file

    from llmscope.loading.quant.packedmodel import WEIGHTS, read_safetensors, save_packed

    loaded = load_model(str(quantized_gguf), device="cpu", quantize="auto")
    save_packed(loaded.model, tmp_path)
    read = read_safetensors(tmp_path / WEIGHTS)
    expected = load_file(str(tmp_path / WEIGHTS))
    assert read.keys() == expected.keys() and any(t.dtype == torch.int8 for t in read.values())
    for name, tensor in read.items():
        assert tensor.dtype == expected[name].dtype and torch.equal(tensor, expected[name]), name
        assert tensor.data_ptr() % 64 == 0 and tensor.untyped_storage().nbytes() == tensor.nbytes, name
    (tmp_path / WEIGHTS).write_bytes((tmp_path / WEIGHTS).read_bytes()[:-10])
    with pytest.raises(ValueError, match="ends inside tensor"):
        read_safetensors(tmp_path / WEIGHTS)


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_quantize_a_folder_at_load(tiny_model_dir: Path, kind: str) -> None:
    dense = load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantize="none")
    packed = load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantize=kind)
    assert not any(isinstance(m, torch.nn.Linear) for m in packed.model.modules())
    assert packed.parameters == dense.parameters
    assert list(packed_summary(packed.model)) == [f"{kind} from float32 quantized"]
    p, q = _next_token_probabilities(packed), _next_token_probabilities(dense)
    assert _kl(q, p) < (1e-3 if kind == "int8" else 2e-2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q4_K"])
def test_packed_int4_on_cuda_equals_the_dequantized_product(kind: str, weights: np.ndarray) -> None:
    blocks = _blocks(kind, weights)
    values, scale, zero = int4_blocks(blocks, kind, weights.shape[1])
    scale_zero = torch.from_numpy(np.stack([scale.T, zero.T], axis=-1))
    on_cpu = pack_int4_values(torch.from_numpy(values), scale_zero, kind)
    on_gpu = on_cpu.to("cuda")  # repacked for tinygemm's tiles
    assert torch.equal(unpack_int4(on_gpu).cpu(), torch.from_numpy(values))
    exact = torch.from_numpy(_dequantized(kind, blocks)).cuda()
    x = torch.randn(3, weights.shape[1], device="cuda")
    assert _relative(on_gpu.matmul(x), x @ exact.T) < 0.015
    assert torch.equal(on_gpu.to("cpu").data, on_cpu.data)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_packed_gguf_on_cuda_agrees_with_the_cpu(quantized_gguf: Path) -> None:
    cpu = load_model(str(quantized_gguf), device="cpu", dtype="bfloat16", quantize="auto")
    gpu = load_model(str(quantized_gguf), device="cuda", dtype="bfloat16", quantize="auto")
    p = _next_token_probabilities(cpu)
    q = _next_token_probabilities(gpu).cpu()
    assert _kl(p, q) < 1e-3 and int(p.argmax()) == int(q.argmax())


def test_the_kernel_shape_rule() -> None:
    assert packed_form("int8", 64, 100) is None and packed_form("int4", 64, 100) is None
    assert packed_form("int8", 64, 104) is None  # a multiple of 8 but not 16: garbage from the kernel, measured
    assert packed_form("int4", 64, 160) == "int8" and packed_form("int4", 64, 128) == "int4"
    assert packed_form("int8", 37, 96) == "int8" and packed_form("bfloat16", 3, 100) == "bfloat16"
    assert not int8_shape_ok(64, 100) and int8_shape_ok(64, 160)
    assert quantize(torch.ones(64, WIDE), "int8") is None
    with pytest.raises(ValueError, match="divisible by 32"):
        quantize_int8(torch.ones(64, WIDE))  # never handed to the kernel


def test_int8_product_on_an_accepted_width_with_several_rows() -> None:
    generator = torch.Generator().manual_seed(1)
    weight, x = torch.randn(37, 96, generator=generator), torch.randn(5, 96, generator=generator)
    packed = quantize_int8(weight)
    exact = x @ packed.dequantize().T
    assert float((packed.matmul(x) - exact).abs().max() / exact.abs().max()) < 0.02
