"""The shared pipeline: the decode-step core, settings refused before any load, errors mapped by type, and --batch
(records equal to single runs, error records, order, interrupts), on tiny models and the embedded model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

USAGE, RUNTIME, INTERRUPTED, TERMINATED = 2, 1, 130, 143
PROMPTS = ["The capital of France is", "Hello", "Write an email to Sarah about the tokens and ids", "def main():"]


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load a model or tokenizer fails the test."""
    import llmscope.loading.loader as loader

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was loaded before the settings were checked")

    for name in ("load_model", "load_tokenizer", "load_config", "resolve_model_spec"):
        monkeypatch.setattr(loader, name, refuse)


# ------------------------------------------------------------------------------------- the decode-step core


def test_decode_steps_pads_left_and_gives_each_row_its_own_tokens(tiny_model_dir: Path) -> None:
    from llmscope.generation.decoding import decode_steps, pad_token_id, prompt_batch
    from llmscope.loading.loader import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu")
    rows = [loaded.tokenizer(p)["input_ids"] for p in PROMPTS]
    batch = prompt_batch(rows, pad_token_id(loaded.tokenizer), "cpu")
    assert batch.lengths == tuple(len(r) for r in rows) and batch.padded
    assert batch.attention_mask.sum(-1).tolist() == [len(r) for r in rows]
    assert batch.position_ids[0, -len(rows[0]):].tolist() == list(range(len(rows[0])))
    together = [step.token_ids for step in decode_steps(loaded.model, batch, 6)]
    for index, row in enumerate(rows):
        alone = [step.token_ids[0] for step in decode_steps(
            loaded.model, prompt_batch([row], 0, "cpu"), 6)]
        assert [ids[index] for ids in together] == alone
    # greedy picks are the argmax, and their log-probabilities are the log-softmax's
    import torch

    with torch.inference_mode():
        logits = loaded.model(torch.tensor([rows[1]])).logits[0, -1].float()
    first = next(decode_steps(loaded.model, prompt_batch([rows[1]], 0, "cpu"), 1))
    assert first.token_ids[0] == int(torch.argmax(logits))
    assert first.logprobs[0] == pytest.approx(float(torch.log_softmax(logits, -1).max()), abs=1e-5)


def test_the_token_loop_exists_once() -> None:
    """generate and next-token both run on decoding.decode_steps; neither calls the model itself."""
    root = Path(__file__).resolve().parent.parent / "llmscope"
    for module in ("generation/generate.py", "inspection/next_token.py"):
        source = (root / module).read_text()
        assert "decode_steps(" in source and "model(input_ids" not in source, module


# ------------------------------------------------------------------------------------- settings before loading


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
    monkeypatch.chdir(Path(__file__).parent)
    result = cli(*args)
    assert result.exit_code == USAGE, (result.stdout, result.stderr)
    assert fragment in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_bad_value_costs_no_torch_import() -> None:
    code = ("import sys\nfrom llmscope.entry import main\n"
            "try:\n    main(['generate', 'hi', '--temperature', 'nan'])\nexcept SystemExit as e:\n"
            "    print(e.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert time.perf_counter() - started < 30  # a loose bound: the point is that no model or torch was loaded


def test_ignored_options_are_named_in_a_warning(cli, tiny_model_dir: Path) -> None:
    result = cli("generate", "Hello", "-m", tiny_model_dir, "-n", "2", "--no-chat", "--system", "be brief",
                 "--logprobs", "2", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    stderr = " ".join(result.stderr.split())
    assert "--system is ignored with --no-chat" in stderr
    assert "--logprobs is ignored without --json" in stderr
    assert "--seed is ignored without sampling" in stderr
    tokenized = cli("tokenize", "Hello", "-m", tiny_model_dir, "--system", "x", "--json")
    assert tokenized.json()["chat_template_applied"] is True  # --system asks for the template, as in every command


def test_steps_past_the_context_name_the_steps_option(cli, tiny_model_dir: Path) -> None:
    result = cli("next-token", "Hello", "-m", tiny_model_dir, "--steps", "100000")
    assert result.exit_code == USAGE
    assert "--steps" in result.stderr and "--max-new-tokens" not in result.stderr


def test_model_rules_run_after_loading(cli, tiny_model_dir: Path) -> None:
    result = cli("generate", "Hello", "-m", tiny_model_dir, "--top-k", "100000")
    assert result.exit_code == USAGE and "larger than the vocabulary" in result.stderr


# ------------------------------------------------------------------------------------- errors by type


def test_errors_are_recognised_by_type() -> None:
    import jinja2.exceptions
    import safetensors

    from llmscope.core.errors import DeviceError, ModelLoadError, UsageError, translate

    template = translate(jinja2.exceptions.SecurityError("access to attribute 'x' is unsafe"))
    assert isinstance(template, UsageError) and "chat template" in str(template) and "--no-chat" in str(template)
    assert template.exit_code == USAGE
    broken = translate(safetensors.SafetensorError("header too large"))
    assert isinstance(broken, ModelLoadError) and "safetensors" in str(broken)
    import torch

    memory = translate(torch.OutOfMemoryError("CUDA out of memory"))
    assert isinstance(memory, DeviceError) and "out of memory" in str(memory)
    assert translate(ValueError("something else")) is None


def test_a_failing_chat_template_is_one_line_naming_no_chat(cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    folder = tmp_path / "bad-template"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ messages.__class__.__mro__ }}{% for x in range(10 %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for chat_template in (folder / "chat_template.jinja",):
        if chat_template.exists():
            chat_template.write_text(config["chat_template"])
    result = cli("generate", "Hello", "-m", folder, "-n", "2", "--chat")
    assert result.exit_code == USAGE, result.stderr
    assert "chat template" in result.stderr and "--no-chat" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------- --batch


def test_next_token_batch_records_equal_single_runs(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    batch_file = tmp_path / "prompts.txt"
    batch_file.write_text("\n".join(PROMPTS) + "\n")
    together = cli("next-token", "-m", tiny_model_dir, "--batch", batch_file, "--batch-size", "3", "--top-k", "5",
                   "--steps", "3")
    assert together.exit_code == 0, together.stderr
    lines = records(together.stdout)
    assert [line["index"] for line in lines] == list(range(len(PROMPTS)))
    for prompt, line in zip(PROMPTS, lines):
        alone = cli("next-token", prompt, "-m", tiny_model_dir, "--top-k", "5", "--steps", "3", "--json").json()
        assert line["prompt"] == prompt and line["command"] == "next-token"
        assert [t["token_id"] for t in line["prompt_tokens"]] == [t["token_id"] for t in alone["prompt_tokens"]]
        assert line["hidden_shape"] == alone["hidden_shape"] and line["logits_shape"] == alone["logits_shape"]
        for step, single in zip(line["steps"], alone["steps"], strict=True):
            assert [c["token_id"] for c in step["top"]] == [c["token_id"] for c in single["top"]]
            for mine, theirs in zip(step["top"], single["top"]):
                assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-4)


def test_generate_batch_records_equal_single_runs(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    batch_file = tmp_path / "prompts.jsonl"
    batch_file.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    together = cli("generate", "-m", tiny_model_dir, "--batch", batch_file, "-n", "8", "--no-chat",
                   "--logprobs", "2")
    assert together.exit_code == 0, together.stderr
    lines = records(together.stdout)
    assert [(line["index"], line["id"]) for line in lines] == [(i, f"p{i}") for i in range(len(PROMPTS))]
    for prompt, line in zip(PROMPTS, lines):
        alone = cli("generate", prompt, "-m", tiny_model_dir, "-n", "8", "--no-chat", "--json",
                    "--logprobs", "2").json()
        assert line["token_ids"] == alone["token_ids"] and line["prompt_token_ids"] == alone["prompt_token_ids"]
        for mine, theirs in zip(line["logprobs"]["content"], alone["logprobs"]["content"], strict=True):
            assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-4)
            assert [a["id"] for a in mine["top_logprobs"]] == [a["id"] for a in theirs["top_logprobs"]]


def test_sampled_batch_rows_sample_what_they_would_alone(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    batch_file = tmp_path / "prompts.txt"
    batch_file.write_text("\n".join(PROMPTS[:3]) + "\n")
    together = records(cli("generate", "-m", tiny_model_dir, "--batch", batch_file, "-n", "6", "--no-chat",
                           "--sample", "--seed", "7").stdout)
    for prompt, line in zip(PROMPTS, together):
        alone = cli("generate", prompt, "-m", tiny_model_dir, "-n", "6", "--no-chat", "--sample", "--seed", "7",
                    "--json").json()
        assert line["token_ids"] == alone["token_ids"]


def test_tokenize_batch_from_stdin(cli, tiny_model_dir: Path) -> None:
    result = cli("tokenize", "-m", tiny_model_dir, "--batch", "-", input="Hello world\nThe capital\n")
    assert result.exit_code == 0, result.stderr
    lines = records(result.stdout)
    single = cli("tokenize", "Hello world", "-m", tiny_model_dir, "--json").json()
    assert lines[0]["ids"] == single["ids"] and lines[0]["index"] == 0 and lines[1]["text"] == "The capital"


def test_bad_records_become_error_records_and_the_rest_go_on(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    batch_file = tmp_path / "prompts.jsonl"
    too_long = "word " * 400  # past the tiny model's 256-token context
    batch_file.write_text("\n".join([json.dumps({"prompt": "Hello", "id": 1}), json.dumps({"prompt": ""}),
                                     json.dumps({"prompt": too_long}), "{not json}", json.dumps({"text": "x"}),
                                     json.dumps({"prompt": "The capital"})]) + "\n")
    result = cli("next-token", "-m", tiny_model_dir, "--batch", batch_file, "--batch-format", "jsonl")
    assert result.exit_code == RUNTIME
    lines = records(result.stdout)
    assert [line["index"] for line in lines] == [0, 1, 2, 3, 4, 5]
    assert lines[0]["id"] == 1 and "steps" in lines[0] and "steps" in lines[5]
    assert lines[1] == {"index": 1, "error": "the prompt is empty (pass some text, or - to read it from stdin)",
                        "exit_code": 2}
    assert "context" in lines[2]["error"] and lines[2]["exit_code"] == 2
    assert "not JSON" in lines[3]["error"] and 'no "prompt"' in lines[4]["error"]
    assert "4 of 6 prompts failed" in " ".join(result.stderr.split())


def test_an_interrupt_keeps_the_finished_records(cli, tiny_model_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import llmscope.inspection.next_token as inspection

    real = inspection.next_token_encoded
    calls = {"n": 0}

    def interrupting(*args: object, **kwargs: object):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(inspection, "next_token_encoded", interrupting)
    batch_file = tmp_path / "prompts.txt"
    batch_file.write_text("\n".join(PROMPTS) + "\n")
    result = cli("next-token", "-m", tiny_model_dir, "--batch", batch_file, "--batch-size", "2")
    assert result.exit_code == INTERRUPTED
    assert [line["index"] for line in records(result.stdout)] == [0, 1]
    assert "the finished records were written" in " ".join(result.stderr.split())


@pytest.mark.slow
def test_batch_on_the_embedded_model_equals_single_runs(cli, embedded_model, tmp_path: Path) -> None:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate, generate_many
    from llmscope.inspection.next_token import next_token_distribution

    prompts = ["The capital of France is", "What is the capital of France?", "1, 2, 3,"]
    settings = GenerationSettings(max_new_tokens=8)
    together = list(generate_many(embedded_model, prompts, settings, chat=True, batch_size=3))
    for prompt, result in zip(prompts, together):
        alone = generate(embedded_model, prompt, settings, chat=True)
        assert result.token_ids == alone.token_ids
        for mine, theirs in zip(result.tokens, alone.tokens):
            assert mine.probability == pytest.approx(theirs.probability, abs=1e-4)
    assert together[1].text == "The capital of France is Paris."
    batch_file = tmp_path / "prompts.txt"
    batch_file.write_text("\n".join(prompts) + "\n")
    lines = records(cli("next-token", "--batch", batch_file, "--top-k", "3", "--quantize", "none").stdout)
    first = next_token_distribution(embedded_model, prompts[0], top_k=3).first
    assert lines[0]["steps"][0]["top"][0]["text"] == " Paris"
    assert lines[0]["steps"][0]["top"][0]["probability"] == pytest.approx(first.top[0].probability, abs=1e-4)
    assert first.top[0].probability == pytest.approx(0.7725, abs=2e-3)


# ------------------------------------------------------------------------------------- pipes and signals


def _llmscope(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmscope", *args]


@pytest.mark.parametrize("command", ["architecture", "tokenize", "next-token"])
def test_a_closed_pipe_is_not_a_failure(tiny_model_dir: Path, command: str) -> None:
    args = {"architecture": ["architecture", "-m", str(tiny_model_dir)],
            "tokenize": ["tokenize", "Hello world " * 50, "-m", str(tiny_model_dir)],
            "next-token": ["next-token", "Hello", "-m", str(tiny_model_dir), "--top-k", "200"]}[command]
    env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="80")
    process = subprocess.Popen(_llmscope(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None
    process.stdout.read(10)
    process.stdout.close()  # what `| head -c 10` does
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert b"Traceback" not in stderr and b"error" not in stderr


def test_sigterm_stops_like_ctrl_c_with_143(tiny_model_dir: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(_llmscope("bench-cache", "-m", str(tiny_model_dir), "-n", "150", "--repeat", "50",
                                         "--warmup", "0", "--no-chat"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("loaded "):
            break
    time.sleep(2.0)  # the timed runs have started: 50 pairs of 150 tokens take far longer than this
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == TERMINATED, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr


# ------------------------------------------------------------------------------------- figures written right


def test_an_interrupt_while_importing_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import types

    from llmscope import entry

    class Importing(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "llmscope.cli.main", Importing("llmscope.cli.main"))
    with pytest.raises(SystemExit) as stopped:
        entry.main(["--help"])
    assert stopped.value.code == INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted\n"


def test_token_bytes_are_each_tokens_own_bytes(tiny_model_dir: Path) -> None:
    from llmscope.loading.loader import load_tokenizer
    from llmscope.loading.tokenization import token_bytes

    tokenizer = load_tokenizer(str(tiny_model_dir))
    for text in ("héllo wörld 👋 東京", "emoji 🙂 and tabs\t", "plain"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = [bytes(token_bytes(tokenizer, i)) for i in ids]
        assert b"".join(pieces) == text.encode("utf-8")
    wave = tokenizer("👋", add_special_tokens=False)["input_ids"]
    assert len(wave) > 1 and all(len(token_bytes(tokenizer, i)) < 4 for i in wave)  # split inside the character


def test_logprobs_json_lists_no_impossible_alternatives(cli, tiny_model_dir: Path) -> None:
    document = cli("generate", "Hello", "-m", tiny_model_dir, "--no-chat", "-n", "3", "--top-k", "2", "--seed", "1",
                   "--logprobs", "5", "--json").json()
    for token in document["logprobs"]["content"]:
        assert len(token["top_logprobs"]) == 2 and document["logprobs"]["distribution"] == "sampler"
        assert all(alt["logprob"] is not None and alt["probability"] > 0 for alt in token["top_logprobs"])
    content = document["logprobs"]["content"]
    if document["finish_reason"] == "length":  # no end-of-sequence token: the bytes spell the text exactly
        assert b"".join(bytes(token["bytes"]) for token in content) == document["text"].encode("utf-8")


def test_non_finite_figures_are_null_in_json() -> None:
    from llmscope.core.model_info import to_plain

    assert to_plain({"logprob": float("-inf"), "x": float("nan"), "ok": -1.5}) == {"logprob": None, "x": None,
                                                                                  "ok": -1.5}


def test_show_probs_without_colour_explains_the_figures_and_ends_newline_tokens() -> None:
    from llmscope.generation.generate import GeneratedToken
    from llmscope.render.generation import confidence_legend, token_markup

    newline = GeneratedToken(index=0, token_id=1, probability=0.36, logprob=-1.02, seconds=0.0, text="\n", delta="\n")
    word = GeneratedToken(index=1, token_id=2, probability=0.77, logprob=-0.26, seconds=0.0, text=" Paris",
                          delta=" Paris")
    assert token_markup(newline, "probability", colour=False).plain == "↵[0.36]\n"
    assert token_markup(word, "probability", colour=False).plain == " Paris[0.77]"
    plain = confidence_legend("probability", colour=False)
    assert plain.plain == "each token is followed by [its probability]" and not plain.spans
    assert confidence_legend("probability", colour=True).spans


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


# ------------------------------------------------------------------------------------- threads


def test_threads_fit_the_cores_other_processes_leave() -> None:
    from llmscope.loading.cputhreads import choose_threads

    assert choose_threads(3, 90.0, cores=2).threads == 3  # asked for: kept
    assert choose_threads(None, 60.0, cores=2).threads == 1  # one of two cores busy elsewhere
    assert choose_threads(None, 40.0, cores=8).threads == 5  # three of eight busy
    assert choose_threads(None, 100.0, cores=2).threads == 1  # never below one
    assert choose_threads(None, 10.0, cores=2).threads is None  # a quiet machine: torch's default
    assert choose_threads(None, None, cores=2).threads is None  # nothing measured: no change


def test_a_busy_machine_gets_fewer_threads_and_a_warning(cli, tiny_model_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import llmscope.loading.cputhreads as cputhreads

    before = torch.get_num_threads()
    monkeypatch.setattr(cputhreads, "others_busy_percent", lambda interval=0.1: 75.0)
    monkeypatch.setattr(cputhreads.os, "cpu_count", lambda: 4)
    try:
        result = cli("next-token", "Hello", "-m", tiny_model_dir, "--top-k", "2")
        assert result.exit_code == 0, result.stderr
        assert torch.get_num_threads() == 1
        assert "75% busy: using 1 torch thread of 4 cores" in result.stderr
        asked = cli("next-token", "Hello", "-m", tiny_model_dir, "--top-k", "2", "--threads", "2")
        assert torch.get_num_threads() == 2 and "busy" not in asked.stderr  # asked for: not second-guessed
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("mode", [{"use_cache": False}, {"static_cache": True}])
def test_padded_batches_match_single_runs_without_a_dynamic_cache(tiny_model_dir: Path, mode: dict) -> None:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate_many
    from llmscope.loading.loader import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu")
    settings = GenerationSettings(max_new_tokens=5, **mode)
    together = list(generate_many(loaded, PROMPTS, settings, batch_size=4))
    for prompt, result in zip(PROMPTS, together):
        alone = next(generate_many(loaded, [prompt], settings, batch_size=1))
        assert result.token_ids == alone.token_ids
        assert [t.logprob for t in result.tokens] == pytest.approx([t.logprob for t in alone.tokens], abs=1e-4)
