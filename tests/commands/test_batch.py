"""--batch through the commands in process: records equal to single runs (next-token, generate, sampled rows,
tokenize), JSON lines, error records that let the rest go on, an interrupt that keeps the finished records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.cli import INTERRUPTED, RUNTIME, USAGE, records
from helpers.texts import BATCH_PROMPTS

from llmscope.cli.batch import parse_items
from llmscope.core.command_settings import OutputMode, output_mode
from llmscope.core.errors import UsageError


def test_batch_with_json_writes_json_lines(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The capital of France is\nHello world\n")
    result = cli("next-token", "--batch", prompts, "-m", tiny_model_dir, "-k", "1", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1] and all(r["command"] == "next-token" for r in records)
    assert output_mode(json=True, batch=True) is OutputMode.JSONL
    assert output_mode(jsonl=True, batch=True) is OutputMode.JSONL
    with pytest.raises(UsageError, match="--batch writes JSON Lines: --ids"):
        output_mode(ids=True, batch=True)


def test_a_blank_line_in_a_plain_text_batch_names_its_line(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    items = parse_items("first\n\nthird\n\n\n")
    assert [item.prompt for item in items] == ["first", "", "third"]
    assert items[1].problem == "line 2 is blank: a plain-text batch reads one prompt per line"
    assert items[0].problem is None and items[2].problem is None
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\n   \nworld\n")
    result = cli("tokenize", "--batch", prompts, "-m", tiny_model_dir, "-q")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[1]["error"].startswith("line 2 is blank") and "stdin" not in records[1]["error"]
    assert "error" not in records[0] and "error" not in records[2] and result.exit_code == 1


def test_next_token_batch_with_a_truncated_last_line(cli, tiny_model_dir: Path) -> None:
    stdin = '{"id": 1, "prompt": "The capital of France is"}\n{"id": 2, "prompt": "The capital of It'
    result = cli("next-token", "-m", tiny_model_dir, "--batch", "-", "-k", "1", "-q", input=stdin)
    assert result.exit_code == RUNTIME, result.stderr
    lines = records(result.stdout)
    assert lines[0]["id"] == 1 and lines[0]["prompt"] == "The capital of France is"
    assert lines[1]["index"] == 1 and "not JSON" in lines[1]["error"] and lines[1]["exit_code"] == USAGE


def test_next_token_batch_records_equal_single_runs(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    batch_file = tmp_path / "prompts.txt"
    batch_file.write_text("\n".join(BATCH_PROMPTS) + "\n")
    together = cli("next-token", "-m", tiny_model_dir, "--batch", batch_file, "--batch-size", "3", "--top-k", "5",
                   "--steps", "3")
    assert together.exit_code == 0, together.stderr
    lines = records(together.stdout)
    assert [line["index"] for line in lines] == list(range(len(BATCH_PROMPTS)))
    for prompt, line in zip(BATCH_PROMPTS, lines):
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
    batch_file.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(BATCH_PROMPTS)))
    together = cli("generate", "-m", tiny_model_dir, "--batch", batch_file, "-n", "8", "--no-chat",
                   "--logprobs", "2")
    assert together.exit_code == 0, together.stderr
    lines = records(together.stdout)
    assert [(line["index"], line["id"]) for line in lines] == [(i, f"p{i}") for i in range(len(BATCH_PROMPTS))]
    for prompt, line in zip(BATCH_PROMPTS, lines):
        alone = cli("generate", prompt, "-m", tiny_model_dir, "-n", "8", "--no-chat", "--json",
                    "--logprobs", "2").json()
        assert line["token_ids"] == alone["token_ids"] and line["prompt_token_ids"] == alone["prompt_token_ids"]
        for mine, theirs in zip(line["logprobs"]["content"], alone["logprobs"]["content"], strict=True):
            assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-4)
            assert [a["id"] for a in mine["top_logprobs"]] == [a["id"] for a in theirs["top_logprobs"]]


def test_sampled_batch_rows_sample_what_they_would_alone(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    batch_file = tmp_path / "prompts.txt"
    batch_file.write_text("\n".join(BATCH_PROMPTS[:3]) + "\n")
    together = records(cli("generate", "-m", tiny_model_dir, "--batch", batch_file, "-n", "6", "--no-chat",
                           "--sample", "--seed", "7").stdout)
    for prompt, line in zip(BATCH_PROMPTS, together):
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
    batch_file.write_text("\n".join(BATCH_PROMPTS) + "\n")
    result = cli("next-token", "-m", tiny_model_dir, "--batch", batch_file, "--batch-size", "2")
    assert result.exit_code == INTERRUPTED
    assert [line["index"] for line in records(result.stdout)] == [0, 1]
    assert "the finished records were written" in " ".join(result.stderr.split())
