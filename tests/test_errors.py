"""Bad input and faults: one readable line on stderr, the documented exit code, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmscope.core.errors import ModelLoadError
from llmscope.generation.generate import GenerationSettings, generate
from llmscope.loading import loader

USAGE, RUNTIME, INTERRUPTED = 2, 1, 130


def assert_one_line_error(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig

    folder = tmp_path_factory.mktemp("bert")
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.architectures = ["BertForMaskedLM"]
    config.save_pretrained(str(folder))
    return folder


# ------------------------------------------------------------------------------------- models


def test_model_path_that_does_not_exist(cli, tmp_path: Path) -> None:
    assert_one_line_error(cli("generate", "hi", "-m", str(tmp_path / "missing" / "model")), RUNTIME,
                          "no such model folder or file")
    assert_one_line_error(cli("tokenize", "hi", "-m", str(tmp_path / "x.gguf")), RUNTIME, "no such GGUF file")


def test_folder_that_is_not_a_model(cli, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(cli("generate", "hi", "-m", str(tmp_path)), RUNTIME, "is not a model", "config.json")


def test_hub_id_not_cached_while_offline(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli("generate", "hi", "-m", "someorg/not-cached-model")
    assert_one_line_error(result, RUNTIME, "not in the local Hugging Face cache", "HF_HUB_OFFLINE=1",
                          "hf download someorg/not-cached-model")


def test_offline_makes_no_network_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    attempts: list[object] = []
    real_connect = socket.socket.connect

    def recording_connect(self, address):
        attempts.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        loader.load_model("someorg/not-cached-model", device="cpu")
    with pytest.raises(ModelLoadError):
        loader.load_tokenizer("someorg/not-cached-model")
    assert attempts == []


def test_gated_and_private_models_are_explained() -> None:
    import httpx2
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    spec = loader.ModelSpec("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B", "hub", "meta-llama/Llama-3.1-8B")
    response = httpx2.Response(401, request=httpx2.Request("GET", "https://huggingface.co/meta-llama"))
    gated = loader._translate_load_error(GatedRepoError("Access to model is restricted", response=response),
                                         spec, "config")
    assert "gated model" in str(gated) and "HF_TOKEN" in str(gated)
    private = loader._translate_load_error(RepositoryNotFoundError("404", response=response), spec, "config")
    assert "private" in str(private) and "hf auth login" in str(private)


def test_model_that_is_not_a_causal_lm(cli, bert_folder: Path) -> None:
    assert_one_line_error(cli("generate", "hi", "-m", str(bert_folder)), RUNTIME,
                          "not a causal language model", "BertForMaskedLM")


def test_model_that_needs_remote_code(cli, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llmscope-test-custom", "architectures": ["CustomForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                     "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}}))
    assert_one_line_error(cli("generate", "hi", "-m", str(tmp_path)), RUNTIME, "needs --trust-remote-code")


def test_trust_remote_code_warns_with_the_repo_name(cli, tiny_model_dir: Path) -> None:
    result = cli("generate", "Hello", "-m", tiny_model_dir, "-n", "2", "--no-chat", "--trust-remote-code")
    assert result.exit_code == 0, result.stderr
    assert f"--trust-remote-code: running Python code shipped with {tiny_model_dir}" in result.stderr


def test_pickle_weights_fallback_is_announced(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    result = cli("generate", "Hello", "-m", folder, "-n", "2", "--no-chat")
    assert result.exit_code == 0, result.stderr
    assert "falling back to pickle-based .bin files" in result.stderr


# ------------------------------------------------------------------------------------- devices


def test_cuda_asked_for_without_cuda(cli, tiny_model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_line_error(cli("generate", "hi", "-m", tiny_model_dir, "--device", "cuda"), RUNTIME,
                          "CUDA is not available", "--device cpu")


def test_dtype_the_device_cannot_run(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    real_ones = torch.ones

    def ones_without_bf16(*args, dtype=None, **kwargs):
        if dtype == torch.bfloat16:
            raise RuntimeError('"addmm_impl_cpu_" not implemented for \'BFloat16\'')
        return real_ones(*args, dtype=dtype, **kwargs)

    monkeypatch.setattr(torch, "ones", ones_without_bf16)
    assert_one_line_error(cli("generate", "hi", "-m", tiny_model_dir, "--dtype", "bfloat16"), RUNTIME,
                          "--dtype bfloat16 cannot run on cpu", "--dtype float32")
    assert_one_line_error(cli("generate", "hi", "-m", tiny_model_dir, "--dtype", "float8"), USAGE, "unknown dtype")


def test_out_of_memory_names_model_size_and_free_memory(cli, tiny_model_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import LlamaForCausalLM

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(LlamaForCausalLM, "forward", out_of_memory)
    result = cli("generate", "Hello", "-m", tiny_model_dir, "--no-chat")
    assert_one_line_error(result, RUNTIME, "out of memory on cpu", "parameters", "GiB of weights", "free of")


# ------------------------------------------------------------------------------------- inputs


def test_empty_prompt(cli, tiny_model_dir: Path) -> None:
    assert_one_line_error(cli("generate", "", "-m", tiny_model_dir), USAGE, "the prompt is empty")
    assert_one_line_error(cli("generate", "-", "-m", tiny_model_dir, input=""), USAGE, "the prompt is empty")


def test_prompt_longer_than_the_context(cli, tiny_model_dir: Path) -> None:
    result = cli("generate", "capital " * 300, "-m", tiny_model_dir, "--no-chat")
    assert_one_line_error(result, USAGE, "tokens but the model's context is 256")


@pytest.mark.parametrize(("value", "fragment"), [("0", "at least 1"), ("-3", "at least 1"),
                                                 ("1000", "exceed the model's context of 256")])
def test_bad_max_new_tokens(cli, tiny_model_dir: Path, value: str, fragment: str) -> None:
    assert_one_line_error(cli("generate", "Hello", "-m", tiny_model_dir, "--no-chat", "-n", value), USAGE, fragment)


def test_bad_sampling_values(cli, tiny_model_dir: Path) -> None:
    assert_one_line_error(cli("generate", "Hello", "-m", tiny_model_dir, "--temperature", "-1"), USAGE,
                          "--temperature must be in [0,")
    assert_one_line_error(cli("generate", "Hello", "-m", tiny_model_dir, "--top-k", "0"), USAGE, "--top-k")
    assert_one_line_error(cli("generate", "Hello", "-m", tiny_model_dir, "--top-k", "999999"), USAGE,
                          "larger than the vocabulary")
    assert_one_line_error(cli("generate", "Hello", "-m", tiny_model_dir, "--top-p", "1.5"), USAGE, "--top-p")


def test_malformed_decode_lists(cli, tiny_model_dir: Path) -> None:
    assert_one_line_error(cli("tokenize", "-m", tiny_model_dir, "--decode", "12 abc"), USAGE, "'abc' is not a token id")
    assert_one_line_error(cli("tokenize", "-m", tiny_model_dir, "--decode", "12 99999"), USAGE,
                          "outside the vocabulary")


def test_stdin_that_is_not_utf8(cli, tiny_model_dir: Path) -> None:
    assert_one_line_error(cli("tokenize", "-", "-m", tiny_model_dir, input=b"ok \xff\xfe bad"), USAGE,
                          "stdin is not valid UTF-8")
    assert_one_line_error(cli("generate", "-", "-m", tiny_model_dir, input=b"\xc3\x28"), USAGE, "not valid UTF-8")


def test_usage_errors_from_the_parser_exit_2(cli) -> None:
    result = cli("generate", "hi", "--max-new-tokens", "many")
    assert result.exit_code == USAGE and "Traceback" not in result.stderr
    assert cli("no-such-command").exit_code == USAGE


def test_debug_variable_shows_the_traceback(cli, tmp_path: Path) -> None:
    result = cli("generate", "hi", "-m", str(tmp_path / "missing" / "m"), env={"LLMSCOPE_DEBUG": "1"})
    assert result.exit_code != 0 and isinstance(result.exception, ModelLoadError)


# ------------------------------------------------------------------------------------- interrupts


def test_interrupted_generation_keeps_what_was_generated(tiny_model_dir: Path) -> None:
    loaded = loader.load_model(str(tiny_model_dir), device="cpu")
    seen: list[int] = []

    def stop_after_three(token) -> None:
        seen.append(token.token_id)
        if len(seen) == 3:
            raise KeyboardInterrupt

    result = generate(loaded, "Hello", GenerationSettings(max_new_tokens=30), on_token=stop_after_three)
    assert result.finish_reason == "interrupted" and list(result.token_ids) == seen


def test_ctrl_c_during_generate_exits_130_with_partial_output(cli, tiny_model_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import llmscope.render.generation as show

    real_printer = show.stream_printer

    def interrupting_printer(display, show_probs):
        printer = real_printer(display, show_probs)
        count = {"n": 0}

        def on_token(token) -> None:
            count["n"] += 1
            printer(token)
            if count["n"] == 4:
                raise KeyboardInterrupt

        return on_token

    monkeypatch.setattr(show, "stream_printer", interrupting_printer)
    result = cli("generate", "Hello", "-m", tiny_model_dir, "--no-chat", "-n", "40", "--stream")
    assert result.exit_code == INTERRUPTED
    assert result.stdout.strip() != "" and "4 new tokens" in result.stderr and "interrupted" in result.stderr


def test_sigint_to_a_real_process_exits_130(tiny_model_dir: Path, tmp_path: Path) -> None:
    import signal

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "llmscope", "bench-cache", "-m", str(tiny_model_dir), "-n",
                                "150", "--repeat", "50", "--warmup", "0", "--no-chat"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # wait until a timed run has finished (one line per run): runs are in progress
        if " run 1: " in line:
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == INTERRUPTED, stderr
    assert "Traceback" not in stderr


# ------------------------------------------------------------------------------------- GGUF and the cache


@pytest.mark.slow
def test_truncated_gguf_is_reported(cli, tmp_path: Path) -> None:
    source = loader.embedded_gguf_path()
    broken = tmp_path / "broken.gguf"
    with open(source, "rb") as handle:
        broken.write_bytes(handle.read(1 << 20))
    result = cli("generate", "hi", "-m", broken)
    assert_one_line_error(result, RUNTIME, "could not read the GGUF file", "corrupt or truncated")


@pytest.mark.slow
def test_concurrent_conversions_and_a_broken_cache_entry(tmp_path: Path) -> None:
    """Two processes convert the same GGUF at once: both succeed and the entry is whole; a truncated entry
    is detected and rebuilt from the GGUF file."""
    copy = tmp_path / "smol.gguf"
    shutil.copyfile(loader.embedded_gguf_path(), copy)
    cache = tmp_path / "cache"
    env = dict(os.environ, HF_HUB_OFFLINE="1", LLMSCOPE_CACHE=str(cache))
    command = [sys.executable, "-m", "llmscope", "tokenize", "--ids", "-m", str(copy), "The capital of France is"]
    generate_command = [sys.executable, "-m", "llmscope", "generate", "-m", str(copy), "--no-chat", "-n", "1",
                        "--json", "-q", "The capital of France is"]
    first = subprocess.Popen(generate_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    second = subprocess.Popen(generate_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    outputs = [first.communicate(timeout=600), second.communicate(timeout=600)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert all(json.loads(out)["token_ids"] == [7042] for out, _ in outputs)
    entries = [p for p in (cache / "gguf").iterdir() if not p.name.endswith(".tokenizer")]
    assert len(entries) == 1 and not entries[0].name.startswith(".tmp")
    assert loader.cache_entry_is_whole(entries[0])
    assert not [p for p in (cache / "gguf").iterdir() if p.name.startswith(".tmp")]

    weights = max(entries[0].glob("*.safetensors"), key=lambda path: path.stat().st_size)  # packed or float32
    with open(weights, "r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)
    not_quiet = [arg for arg in generate_command if arg != "-q"]
    rebuilt = subprocess.run(not_quiet, capture_output=True, text=True, env=env, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "is broken" in rebuilt.stderr and "rebuilding it from the GGUF file" in rebuilt.stderr
    assert json.loads(rebuilt.stdout)["token_ids"] == [7042]
    assert loader.cache_entry_is_whole(entries[0])
    tokens = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert tokens.stdout == "504 3575 282 4649 314\n"
