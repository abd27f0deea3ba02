"""Bad input and faults through the commands: one readable line on stderr, the documented exit code, never a
traceback; settings refused before any load; models, devices, prompts, token ids and tokenizers that do not fit."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from helpers.cli import RUNTIME, USAGE, assert_one_line_error, one_error_line, records
from helpers.paths import TESTS

from llmscope.core.errors import ModelLoadError, UsageError
from llmscope.loading import loader


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig

    folder = tmp_path_factory.mktemp("bert")
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.architectures = ["BertForMaskedLM"]
    config.save_pretrained(str(folder))
    return folder


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this-should-never-run",))


@pytest.fixture(scope="module")
def overgrown_tokenizer_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a tokenizer that has one token more than the embedding has rows."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("overgrown")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.add_tokens(["zqzqzq"])
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load a model or tokenizer fails the test."""
    import llmscope.loading.loader as loader

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was loaded before the settings were checked")

    for name in ("load_model", "load_tokenizer", "load_config", "resolve_model_spec"):
        monkeypatch.setattr(loader, name, refuse)


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


@pytest.mark.parametrize("command", ["generate", "next-token", "tokenize", "bench-cache"])
def test_folder_with_only_a_config_says_what_is_missing(cli, tiny_model_dir: Path, tmp_path: Path,
                                                        command: str) -> None:
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copyfile(tiny_model_dir / "config.json", folder / "config.json")
    result = cli(command, "hi", "-m", folder)
    assert result.exit_code == RUNTIME
    line = one_error_line(result)
    assert "has no tokenizer" in line and "tokenizer.json" in line and "`architecture` works" in line
    assert not line.rstrip().endswith(":")
    assert cli("architecture", "-m", folder, "--json").exit_code == 0


def test_malicious_pickle_names_the_blocked_global_and_never_suggests_unsafe_loading(
        cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    folder = tmp_path / "evil"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": _RunsCode()}, folder / "pytorch_model.bin", pickle_module=pickle)
    result = cli("next-token", "hi", "-m", folder)
    assert result.exit_code == RUNTIME
    line = one_error_line(result)
    assert "refused" in line and "system" in line  # the unsupported global: posix.system / os.system
    assert "weights_only` set to `False" not in result.stderr and "will likely succeed" not in result.stderr
    assert "this-should-never-run" not in result.stdout + result.stderr


def test_empty_specs_name_what_was_empty(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli("tokenize", "hi", "-m", "")
    assert result.exit_code == USAGE and "--model is empty" in one_error_line(result)
    monkeypatch.setenv("LLMSCOPE_MODEL", "   ")
    with pytest.raises(UsageError, match="LLMSCOPE_MODEL is set but empty"):
        loader.resolve_model_spec(None)


@pytest.mark.parametrize("command", [("score", "Hello zqzqzq world"), ("attention", "Hello zqzqzq world"),
                                     ("compare", "Hello zqzqzq world", "--against-dtype", "bfloat16"),
                                     ("bench-cache", "Hello zqzqzq", "-n", "2", "--repeat", "1", "--warmup", "0")])
def test_ids_beyond_the_embedding_are_a_usage_error(cli, overgrown_tokenizer_model: Path,
                                                    command: tuple[str, ...]) -> None:
    result = cli(*command, "-m", overgrown_tokenizer_model)
    assert result.exit_code == USAGE, result.stderr
    assert "but the model's embedding has only" in result.stderr and "IndexError" not in result.stderr


def test_score_batch_goes_on_past_a_record_beyond_the_embedding(cli, overgrown_tokenizer_model: Path) -> None:
    result = cli("score", "-m", overgrown_tokenizer_model, "--batch", "-", input="Hello world\nzqzqzq x\nThe capital\n")
    lines = records(result.stdout)
    assert [("error" in line) for line in lines] == [False, True, False]
    assert "embedding has only" in lines[1]["error"]


def test_messages_name_only_the_options_given(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    alone = cli("next-token", "Hello", "-m", tiny_model_dir, "--batch-size", "4")
    assert alone.exit_code == USAGE and "--batch-size needs --batch FILE" in alone.stderr
    assert "--batch-format" not in alone.stderr
    against = cli("compare", "Hello world", "-m", tiny_model_dir, "--against", "")
    assert against.exit_code == USAGE and "--against is empty" in against.stderr and "--model" not in against.stderr
    batch = tmp_path / "prompts.txt"
    batch.write_text("Hello\nThe capital\n\n\n")  # blank lines at the end start no record
    shown = cli("generate", "-m", tiny_model_dir, "--batch", batch, "-n", "2", "--show-probs")
    assert shown.exit_code == 0, shown.stderr
    assert "--show-probs is ignored with --batch" in shown.stderr and "--json" not in shown.stderr
    assert len(records(shown.stdout)) == 2


@pytest.mark.parametrize("args, fragment", [
    (["generate", "hi", "-n", "0"], "--max-new-tokens must be at least 1"),
    (["generate", "hi", "--temperature", "nan"], "--temperature must be a finite number"),
    (["generate", "hi", "--temperature", "-1"], "--temperature must be in"),
    (["generate", "hi", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["generate", "hi", "--top-p", "inf"], "--top-p must be a finite number"),
    (["generate", "hi", "--top-k", "0"], "--top-k must be at least 1"),
    (["generate", "hi", "--seed", "99999999999999999999999"], "--seed must be at most"),
    (["generate", "hi", "--threads", "99999999999"], "--threads must be at most"),
    (["generate", "hi", "--logprobs", "-1"], "--logprobs must be at least 0"),
    (["generate", "hi", "--compile", "--no-cache"], "need the KV cache"),
    (["generate", "hi", "--show-probs=loud"], "--show-probs takes"),
    (["generate", "hi", "--json", "--jsonl"], "not several"),
    (["generate", "hi", "--batch", "conftest.py"], "give either PROMPT or --batch"),
    (["generate", "--batch", "/nonexistent/prompts.txt"], "no such file"),
    (["generate", "--batch", "-", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["generate", "hi", "--batch-size", "4"], "--batch-size needs --batch FILE"),
    (["generate", "hi", "-m", ""], "--model is empty"),
    (["generate", "hi", "-m", "x", "--device-map", "balanced"], "--device-map takes 'auto'"),
    (["generate", "\ud800"], "not valid Unicode"),
    (["generate", "   "], "the prompt is empty"),
    (["next-token", "hi", "--top-k", "0"], "--top-k must be at least 1"),
    (["next-token", "hi", "--steps", "0"], "--steps must be at least 1"),
    (["next-token", "hi", "--temperature", "nan"], "--temperature must be a finite number"),
    (["next-token", "hi", "--temperature", "0"], "--temperature must be in (0,"),
    (["next-token", "hi", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["next-token"], "missing PROMPT"),
    (["tokenize", "hi", "--ids", "--json"], "not several"),
    (["tokenize", "hi", "--decode", "1 2"], "either TEXT or --decode"),
    (["tokenize", "--decode", "1", "-m", "a", "-m", "b"], "--decode takes one --model"),
])
def test_bad_values_exit_2_before_any_load(cli, no_loading: None, args: list[str], fragment: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(TESTS)
    result = cli(*args)
    assert result.exit_code == USAGE, (result.stdout, result.stderr)
    assert fragment in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_tokenizer_larger_than_its_model_is_a_usage_error(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "grown-tokenizer"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.add_tokens(["<brand-new-token>"])
    tokenizer.save_pretrained(str(folder))
    result = cli("generate", "Hello <brand-new-token>", "-m", folder, "--no-chat", "-n", "2")
    assert result.exit_code == USAGE, result.stderr
    assert "embedding has only" in result.stderr and "Traceback" not in result.stderr
