"""`llmscope attribute` in process: the JSON schema, batch and people views, packed weights, --contrast / --target
mismatches found with the tokenizer alone, and a method that cannot fit refused before it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

# Every test here needs gradients: inference mode off, even when an earlier test left it on.
pytestmark = pytest.mark.usefixtures("outside_inference_mode")

PROMPT = "The capital of France is"


JSON_KEYS = {"prompt", "text", "chat", "tokens", "ids", "prompt_tokens", "target_source", "target_function",
             "targets", "methods", "top_agree", "seconds"}


METHOD_KEYS = {"method", "question", "parameters", "matrix", "completeness", "top", "seconds"}


COMPLETENESS_KEYS = {"attribution_sum", "expected", "error", "relative_error", "steps", "converged", "suggested_steps",
                     "compared_steps", "largest_move", "unsettled"}


def test_json_schema_is_stable(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    plot = tmp_path / "attribution.png"
    result = cli("attribute", PROMPT, "-m", tiny_model_dir, "--steps", "8", "--json", "--plot", plot)
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert JSON_KEYS <= set(document) and document["command"] == "attribute"
    assert [m["method"] for m in document["methods"]] == ["occlusion", "input-x-gradient", "integrated-gradients",
                                                          "attention-rollout"]
    for entry in document["methods"]:
        assert set(entry) == METHOD_KEYS
        assert len(entry["matrix"]) == len(document["targets"]) and len(entry["matrix"][0]) == len(document["ids"])
    (check,) = document["methods"][2]["completeness"]
    assert set(check) == COMPLETENESS_KEYS
    assert set(document["targets"][0]) == {"position", "token", "id", "logprob", "contrast", "value"}
    assert document["tokens"][0] == "The" and plot.stat().st_size > 1000


def test_batch_and_people_view(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello world\nThe capital of France is\n")
    result = cli("attribute", "--batch", prompts, "-m", tiny_model_dir, "--method", "occlusion")
    assert result.exit_code == 0, result.stderr
    records = [__import__("json").loads(line) for line in result.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["Hello world", "The capital of France is"]
    people = cli("attribute", PROMPT, "-m", tiny_model_dir, "-n", "3", "--steps", "4", env={"COLUMNS": "60"})
    assert people.exit_code == 0, people.stderr
    assert "targets x inputs" in people.stdout
    bad = cli("attribute", PROMPT, "-m", tiny_model_dir, "--steps", "2", "--method", "ig")
    assert bad.exit_code == 0
    assert "integrated gradients" in bad.stdout and "steps" in bad.stdout


def test_gradients_run_through_packed_int8_weights(cli, tiny_model_dir: Path) -> None:
    result = cli("attribute", PROMPT, "-m", tiny_model_dir, "--quantize", "int8", "--method", "ig,ixg", "--steps",
                 "8", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["model_info"]["quantize"] == "int8"
    (check,) = document["methods"][0]["completeness"]
    assert check["attribution_sum"] == pytest.approx(check["expected"], rel=0.05)


def test_a_method_that_cannot_fit_is_refused_in_one_line_before_it_runs(cli, tiny_model_dir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from llmscope.attribution import methods

    ran: list[str] = []
    monkeypatch.setattr(methods, "integrate", lambda *args, **kwargs: ran.append("ig"))
    result = cli("attribute", PROMPT, "-m", tiny_model_dir, "--method", "ig,occlusion", "--max-memory", "1MB")
    assert result.exit_code == 1 and not ran and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: integrated-gradients on ") and "left under --max-memory 1 MiB" in line
    for option in ("--method", "--steps", "--max-memory"):
        assert option in line
    assert cli("attribute", PROMPT, "-m", tiny_model_dir, "--max-memory", "lots").exit_code == 2


def test_contrast_mismatch_is_refused_before_the_model_loads(cli, tiny_model_dir: Path) -> None:
    given = cli("attribute", "Hello world", "-m", tiny_model_dir, "--target", " a", "--contrast", " a b c d e f")
    assert given.exit_code == 2 and "error: --contrast ' a b c d e f' is" in given.stderr
    assert "loaded" not in given.stderr  # the tokenizer alone found it
    greedy = cli("attribute", "Hello world", "-m", tiny_model_dir, "-n", "2", "--contrast", " a b c d e f",
                 "--method", "occlusion")
    assert greedy.exit_code == 2 and "but the target is 2" in greedy.stderr and "loaded" not in greedy.stderr
