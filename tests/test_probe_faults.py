"""Faults a probe found (issue 21, items 11-26): --batch input, raw text into pipes, hung hub endpoints, caps on
what a template or an input may hold, signals, closed stdin. Each test failed before its fix."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

USAGE, RUNTIME = 2, 1


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------- --batch input (15, 19)


def test_batch_format_is_decided_by_the_first_line_and_bad_json_lines_are_errors() -> None:
    from llmscope.cli.batch import parse_items

    truncated = '{"id": 1, "prompt": "The capital of France is"}\n{"id": 2, "prompt": "The capital of It'
    items = parse_items(truncated)
    assert [(item.id, item.prompt, item.problem is None) for item in items] == [
        (1, "The capital of France is", True), (None, "", False)]
    assert "line 2" in items[1].problem and "not JSON" in items[1].problem
    mixed = parse_items('\n{"prompt": "a"}\n[1, 2]\n{"prompt": "b"\n')
    assert [item.prompt for item in mixed] == ["a", "", ""]
    assert "line 3" in mixed[1].problem and "line 4" in mixed[2].problem
    with_bom = parse_items('\ufeff{"id": "x", "prompt": "Hello"}\n')
    assert [(item.id, item.prompt, item.problem) for item in with_bom] == [("x", "Hello", None)]
    plain = parse_items('\ufeffHello\n{"prompt": "not json here"}\n')
    assert [item.prompt for item in plain] == ["Hello", '{"prompt": "not json here"}']


def test_records_whose_id_cannot_be_written_are_errors_not_aborts() -> None:
    from llmscope.cli.batch import parse_items

    nested = '{"prompt": "a", "id": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines = ['{"prompt": "a", "id": 1e400}', '{"prompt": "a", "id": ' + "7" * 5000 + "}", nested,
             '{"prompt": "a", "id": {"x": 1}}', '{"prompt": "ok", "id": 12345678901234567890}']
    items = parse_items("\n".join(lines) + "\n")
    assert [item.problem is None for item in items] == [False, False, False, False, True]
    assert all(f"line {i + 1}" in item.problem for i, item in enumerate(items[:4]))
    assert items[4].id == 12345678901234567890


def test_next_token_batch_with_a_truncated_last_line(cli, tiny_model_dir: Path) -> None:
    stdin = '{"id": 1, "prompt": "The capital of France is"}\n{"id": 2, "prompt": "The capital of It'
    result = cli("next-token", "-m", tiny_model_dir, "--batch", "-", "-k", "1", "-q", input=stdin)
    assert result.exit_code == RUNTIME, result.stderr
    lines = records(result.stdout)
    assert lines[0]["id"] == 1 and lines[0]["prompt"] == "The capital of France is"
    assert lines[1]["index"] == 1 and "not JSON" in lines[1]["error"] and lines[1]["exit_code"] == USAGE


def test_one_failing_record_does_not_abort_the_batch() -> None:
    from llmscope.cli.batch import BatchItem, run_batch

    items = [BatchItem(i, p) for i, p in enumerate(["a", "bad", "c", "d"])]

    def run_chunk(prompts: list[str]) -> list[str]:
        if "bad" in prompts:
            raise IndexError("index out of range in self")
        return [p.upper() for p in prompts]

    outcomes = list(run_batch(items, 4, prepare=lambda item: item.prompt, run_chunk=run_chunk))
    assert [o.result for o in outcomes] == ["A", None, "C", "D"]
    assert outcomes[1].error is not None and "IndexError" in outcomes[1].error and outcomes[1].exit_code == RUNTIME


# ------------------------------------------------------------------------------------- raw text into pipes (16)

LONG_PROMPT = "See https://example.com/" + "a" * 70 + " and\tthen   more words " * 3  # > 80 columns, a tab


def test_generated_text_goes_into_a_pipe_byte_for_byte(cli, tiny_model_dir: Path) -> None:
    plain = cli("generate", LONG_PROMPT, "-m", tiny_model_dir, "-n", "40", "--no-chat", "--full-text", "-q")
    document = cli("generate", LONG_PROMPT, "-m", tiny_model_dir, "-n", "40", "--no-chat", "--full-text",
                   "--json").json()
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout == document["full_text"] + "\n"
    streamed = cli("generate", LONG_PROMPT, "-m", tiny_model_dir, "-n", "40", "--no-chat", "--full-text", "-q",
                   "--stream")
    assert streamed.stdout == plain.stdout
    scored = cli("score", LONG_PROMPT, "-m", tiny_model_dir, "-q")
    first_line = scored.stdout.split("\n")[0]  # the text with each token's [p] marker, on one line
    assert re.sub(r"\[\d\.\d\d\]", "", first_line) == LONG_PROMPT


@pytest.mark.parametrize("command", [("generate", "Hello", "-n", "3", "--no-chat"), ("tokenize", "Hello"),
                                     ("architecture",)])
def test_columns_zero_still_prints(cli, tiny_model_dir: Path, command: tuple[str, ...]) -> None:
    result = cli(*command, "-m", tiny_model_dir, env={"COLUMNS": "0"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()


# ------------------------------------------------------------------------------------- caps on memory (18)


def _tokenizer_with_template(folder: Path, template: str):
    from conftest import build_tokenizer

    tokenizer = build_tokenizer(folder)
    tokenizer.chat_template = template
    return tokenizer


def test_a_chat_template_that_renders_without_end_is_stopped_at_the_cap(tmp_path: Path) -> None:
    from llmscope.core.errors import UsageError
    from llmscope.loading.tokenization import MAX_TEMPLATE_CHARS, apply_chat_template

    # 5,000 x 100,000 characters: 500 MB if rendered whole; the cap stops it after about 1 MB
    huge = "{% set s = 'x' * 100000 %}{% for i in range(5000) %}{{ s }}{% endfor %}"
    tokenizer = _tokenizer_with_template(tmp_path / "huge", huge)
    with pytest.raises(UsageError) as refused:
        apply_chat_template(tokenizer, "Hello")
    assert f"{MAX_TEMPLATE_CHARS:,}" in str(refused.value) and "--no-chat" in str(refused.value)
    tokenizer.chat_template = "{% for i in range(10**9) %}{{ i }}{% endfor %}"
    with pytest.raises(UsageError) as too_big:
        apply_chat_template(tokenizer, "Hello")
    assert "chat template" in str(too_big.value) and "--no-chat" in str(too_big.value)
    tokenizer.chat_template = "{{ messages[0]['content'] * 2 }}"  # an ordinary template still renders
    assert apply_chat_template(tokenizer, "ab") == "abab"


def test_an_endless_input_ends_with_one_line_naming_the_cap(cli, tiny_model_dir: Path) -> None:
    result = cli("score", "--file", "/dev/zero", "-m", tiny_model_dir)
    assert result.exit_code == USAGE
    assert "--file /dev/zero is larger than 32 MiB" in result.stderr and "Traceback" not in result.stderr
    with open("/dev/zero", "rb") as zeros:  # stdin that never ends, in a real process
        piped = subprocess.run([sys.executable, "-m", "llmscope", "score", "-", "-m", str(tiny_model_dir)],
                               stdin=zeros, capture_output=True, text=True, timeout=120)
    assert piped.returncode == USAGE and "stdin is larger than 32 MiB" in piped.stderr, piped.stderr


# ------------------------------------------------------------------------------------- odd inputs (24)


def run_llmscope(*args: object, stdin_text: str | None = None, close_stdin: bool = False,
                 env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """llmscope in a real process (stdin a pipe, or closed)."""
    return subprocess.run([sys.executable, "-m", "llmscope", *map(str, args)], input=stdin_text,
                          stdin=None if stdin_text is not None else subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          preexec_fn=(lambda: os.close(0)) if close_stdin else None)


def test_batch_reads_dev_stdin_and_a_closed_stdin_is_one_line(cli, tiny_model_dir: Path) -> None:
    result = run_llmscope("tokenize", "-m", tiny_model_dir, "--batch", "/dev/stdin", stdin_text="Hello\nworld\n")
    assert result.returncode == 0, result.stderr
    assert [line["text"] for line in records(result.stdout)] == ["Hello", "world"]
    empty = cli("tokenize", "-m", tiny_model_dir, "--batch", "/dev/null")
    assert empty.exit_code == USAGE and "holds no prompts" in empty.stderr
    for args in (("tokenize", "-"), ("tokenize", "--batch", "-")):
        closed = run_llmscope(*args, "-m", tiny_model_dir, close_stdin=True)
        assert closed.returncode == USAGE, closed.stderr
        assert "stdin is closed" in closed.stderr and "Traceback" not in closed.stderr


# ------------------------------------------------------------------------------------- signals (13, 23)


@pytest.fixture
def signal_handlers():
    """Signal handlers and flags as they were before the test (entry.main installs its own)."""
    import signal

    from llmscope.core import errors

    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    flags = dict(errors._signals)
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
    errors._signals.update(flags)


def test_sigterm_outside_a_command_is_one_line_and_143(monkeypatch: pytest.MonkeyPatch, capsys,
                                                       signal_handlers) -> None:
    import typer

    from llmscope.core import errors
    from llmscope.entry import main

    def stopped(*args: object, **kwargs: object) -> None:  # SIGTERM while Typer runs an option callback
        errors._signals["terminated"] = True
        raise KeyboardInterrupt

    monkeypatch.setattr(typer, "echo", stopped)
    with pytest.raises(SystemExit) as leaving:
        main(["--version"])
    assert leaving.value.code == 143
    assert capsys.readouterr().err == "error: terminated\n"


def test_a_swallowed_interrupt_still_stops_the_run(cli, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   signal_handlers) -> None:
    import signal

    import llmscope.bench.timed_run as benchrun
    from llmscope.core.errors import handle_sigterm

    handle_sigterm()
    real = benchrun.one_run
    calls = {"n": 0}

    def losing_the_interrupt(*args: object, **kwargs: object):  # as CPython does when it arrives in a finalizer
        calls["n"] += 1
        if calls["n"] == 3:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass
        return real(*args, **kwargs)

    monkeypatch.setattr("llmscope.bench.benchmark._one_run", losing_the_interrupt)
    result = cli("bench-cache", "-m", tiny_model_dir, "-n", "4", "--repeat", "20", "--warmup", "0", "--no-chat")
    assert result.exit_code == 130, result.stderr
    assert calls["n"] < 40 and "interrupted" in result.stderr


def test_an_interrupt_while_the_package_imports_is_one_line() -> None:
    # SIGINT is held back while llmscope.entry imports, then let through before main() runs
    code = ("import os, signal; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}); "
            "os.kill(os.getpid(), signal.SIGINT); import llmscope.entry; "
            "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); print('not stopped')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr, result.stdout) == (130, "error: interrupted\n", "")
    light = subprocess.run([sys.executable, "-c", "import sys, llmscope; print('typing' in sys.modules)"],
                           capture_output=True, text=True, timeout=60)
    assert light.stdout.strip() == "False"  # the package itself imports nothing that takes time


# ------------------------------------------------------------------------------------- a hub that never answers (17)


@pytest.fixture
def silent_listener():
    """A TCP port on 127.0.0.1 that accepts connections and never sends a byte."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def test_a_hub_that_never_answers_fails_in_seconds_with_the_cause(silent_listener: int, tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{silent_listener}", "HF_HOME": str(tmp_path),
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    result = run_llmscope("architecture", "-m", "someone/some-model", env=env, timeout=60)
    assert result.returncode == RUNTIME, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Retrying" not in result.stderr, result.stderr
    assert f"unreachable (127.0.0.1:{silent_listener}: no answer within" in errors[0]


def test_a_refusing_proxy_is_named_as_the_cause(tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:  # a port nothing listens on: the proxy refuses
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path), "HTTPS_PROXY": f"http://127.0.0.1:{port}",
           "HTTP_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": "", "no_proxy": ""}
    result = run_llmscope("architecture", "-m", "someone/some-model", env=env, timeout=60)
    assert result.returncode == RUNTIME, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Retrying" not in result.stderr, result.stderr
    assert f"unreachable (proxy 127.0.0.1:{port}: Connection refused)" in errors[0]


# ------------------------------------------------------------------------------------- token ids (11, 22)


@pytest.mark.parametrize("ids", ["²", "1,²", "٣ ٤", "１２"])
def test_decode_takes_ascii_digits_only(ids: str) -> None:
    from llmscope.core.errors import UsageError
    from llmscope.loading.tokenization import parse_id_list

    with pytest.raises(UsageError, match="is not a token id"):
        parse_id_list(ids, 1000)


def test_decode_of_a_huge_id_is_outside_the_vocabulary(cli, tiny_model_dir: Path) -> None:
    from llmscope.loading.tokenization import parse_id_list

    assert parse_id_list(" 3, 4 ", 1000) == [3, 4]
    result = cli("tokenize", "-m", tiny_model_dir, "--decode", "9" * 5000)
    assert result.exit_code == USAGE and "outside the vocabulary" in result.stderr and "5000 digits" in result.stderr
    superscript = cli("tokenize", "-m", tiny_model_dir, "--decode", "1,²")
    assert superscript.exit_code == USAGE and "'²' is not a token id" in superscript.stderr


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


def test_the_steps_hint_is_the_largest_value_that_works(cli, tiny_model_dir: Path) -> None:
    refused = cli("next-token", "Hello", "-m", tiny_model_dir, "--steps", "300", "-k", "1")
    assert refused.exit_code == USAGE
    hint = re.search(r"use --steps (\d+) or less", refused.stderr)
    assert hint and "--steps 300 exceed" in refused.stderr
    largest = int(hint.group(1))
    assert cli("next-token", "Hello", "-m", tiny_model_dir, "--steps", str(largest), "-k", "1", "--json"
               ).exit_code == 0
    assert cli("next-token", "Hello", "-m", tiny_model_dir, "--steps", str(largest + 1), "-k", "1").exit_code == USAGE


def test_an_empty_prompt_option_is_named(cli, tiny_model_dir: Path) -> None:
    result = cli("score", "Hello", "--prompt", "", "-m", tiny_model_dir)
    assert result.exit_code == USAGE and "--prompt is empty" in result.stderr


# ------------------------------------------------------------------------------------- env (14)


def test_env_shows_the_hub_cache_huggingface_hub_uses(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    result = subprocess.run([sys.executable, "-m", "llmscope", "env", "--json"], capture_output=True, text=True,
                            timeout=120, env={**clean, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hf_cache"] == str(tmp_path / "xdg" / "huggingface" / "hub")


# ------------------------------------------------------------------------------------- the conversion cache (12)


def test_a_dead_process_staging_folder_goes_on_the_next_load(tiny_gguf: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from llmscope.loading import loader

    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path / "cache"))
    loaded = loader.load_model(str(tiny_gguf), device="cpu")  # converts: the entry is whole from here on
    entry = loader.gguf_cache_dir(loaded.spec)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = int(finished.stdout)  # a process id whose process has ended
    leftover = entry.parent / f".tmp-{entry.name}-{dead}-0123abcd"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"\0" * 4096)
    loader.load_model(str(tiny_gguf), device="cpu")  # a plain load of the valid entry
    assert not leftover.exists()


# ------------------------------------------------------------------------------------- cache --clear (20)


@pytest.fixture
def fake_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A conversion cache with two entries, one of them a symlink to a folder outside the cache."""
    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "gguf"
    (folder / "aaaa1111").mkdir(parents=True)
    (folder / "aaaa1111" / "model.safetensors").write_bytes(b"\0" * 100)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("not the cache's")
    (folder / "bbbb2222").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    return folder


def test_clear_with_an_empty_name_clears_nothing(cli, fake_cache: Path) -> None:
    result = cli("cache", "--clear", "")
    assert result.exit_code == USAGE and "empty entry name" in result.stderr
    assert sorted(p.name for p in fake_cache.iterdir()) == ["aaaa1111", "bbbb2222"]


def test_clear_removes_a_symlink_entry_but_not_its_target(cli, fake_cache: Path) -> None:
    result = cli("cache", "--clear", "bbbb2222")
    assert result.exit_code == 0, result.stderr
    assert "removed 1 entry" in result.stderr
    assert [p.name for p in fake_cache.iterdir()] == ["aaaa1111"]
    assert (fake_cache.parent.parent / "elsewhere" / "keep.txt").exists()


def test_clear_that_cannot_remove_says_so(cli, fake_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    def read_only(path: object, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(shutil, "rmtree", read_only)
    result = cli("cache", "--clear", "aaaa1111")
    assert result.exit_code == RUNTIME
    assert "could not remove aaaa1111 (Permission denied)" in result.stderr
    empty = cli("cache", "--clear", env={"LLMSCOPE_CACHE": str(fake_cache.parent.parent / "none")})
    assert empty.exit_code == 0 and "nothing to remove" in empty.stderr


# ------------------------------------------------------------------------------------- nonsense configs (21)


def test_a_negative_layer_count_is_refused(cli, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": -3, "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 4, "vocab_size": 100}))
    result = cli("architecture", "-m", tmp_path)
    assert result.exit_code == RUNTIME, result.stdout
    assert "num_hidden_layers to -3" in result.stderr and "Traceback" not in result.stderr


def test_a_config_of_defaults_only_says_so(cli, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    result = cli("architecture", "-m", tmp_path, "--json")
    assert result.exit_code == 0, result.stderr
    assert "sets no size" in result.stderr and "default for llama" in result.stderr
    sized = tmp_path / "sized"
    sized.mkdir()
    (sized / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                                   "num_hidden_layers": 2, "intermediate_size": 128}))
    assert "sets no size" not in cli("architecture", "-m", sized, "--json").stderr


# ------------------------------------------------------------------------------- messages name what was typed (25)


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


# ------------------------------------------------------------------------------------- odd outputs (24)


def test_a_full_disk_leaves_no_empty_plot(cli, tiny_model_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    def full_disk(self: Figure, target: object, *args: object, **kwargs: object) -> None:
        with open(target, "wb") as handle:  # type: ignore[arg-type]
            handle.write(b"\x89PNG")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    path = tmp_path / "grid.png"
    result = cli("attention", "Hello world", "-m", tiny_model_dir, "--layer", "0", "--plot", path, "-q")
    assert result.exit_code == RUNTIME
    assert "could not write" in result.stderr and "No space left on device" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_ascii_locale_escapes_instead_of_failing(tiny_model_dir: Path) -> None:
    shown = run_llmscope("tokenize", "café ☕", "-m", tiny_model_dir, env={"PYTHONIOENCODING": "ascii"})
    assert shown.returncode == 0 and "\\u2423" in shown.stdout, shown.stderr  # the ␣ marker, escaped


def test_tokenize_spans_never_overlap_with_a_byte_fallback_tokenizer(tmp_path: Path) -> None:
    from conftest import CORPUS
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from llmscope.loading.tokenization import tokenize_text

    backend = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))  # as Llama's converts
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>",
                                                                  *(f"<0x{i:02X}>" for i in range(256))],
                                  show_progress=False, initial_alphabet=["▁"])
    backend.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    text = "Hi 🙂 中文 x\u0301y 𝔘"
    result = tokenize_text(tokenizer, text, add_special_tokens=False)
    spans = [(t.start, t.end) for t in result.tokens]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    assert "".join(text[start:end] for start, end in spans) == text  # every character in exactly one token
    assert result.tokens[0].piece == "▁" and spans[0] == (0, 0) and spans[1] == (0, 1)  # the added word marker


def test_an_entry_cleared_while_in_use_is_rebuilt_without_library_text(tiny_gguf: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import logging
    import shutil

    from llmscope.loading import loader

    monkeypatch.setenv("LLMSCOPE_CACHE", str(tmp_path / "cache"))
    loader.load_tokenizer(str(tiny_gguf))  # the tokenizer entry now exists
    real = loader._cached_tokenizer

    def cleared_meanwhile(entry: Path, light: bool) -> object:  # `cache --clear` from another shell, mid-load
        shutil.rmtree(entry)
        return real(entry, light)

    said: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    logger = logging.getLogger("llmscope")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    monkeypatch.setattr(loader, "_cached_tokenizer", cleared_meanwhile)
    try:
        tokenizer = loader.load_tokenizer(str(tiny_gguf))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert tokenizer("Hello")["input_ids"]
    assert any("was removed while in use" in line for line in said), said
    assert not any("Couldn't instantiate" in line or "first use" in line for line in said), said


def test_every_hub_request_is_bounded_in_time(silent_listener: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    import huggingface_hub.constants

    from llmscope.loading import load_errors

    monkeypatch.setattr(load_errors, "HUB_READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # this request only: a local port
    load_errors._bound_hub_requests()
    with pytest.raises(Exception) as waited:  # model_info and others pass timeout=None: no limit at all before
        huggingface_hub.get_session().get(f"http://127.0.0.1:{silent_listener}/api/models/x", timeout=None)
    assert "Timeout" in type(waited.value).__name__
