"""--endpoint against a real `llmscope serve` subprocess: next-token, score and generate give the local run's
--json document (probabilities within 1e-5, perplexity within 1e-4), the OpenAI-compatible path rebuilds next-token
from log-probabilities alone, and a call with --endpoint imports neither torch nor transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from test_serve import Server, start_server, stop_server

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Server]:
    running = start_server(tiny_model_dir)
    yield running
    assert stop_server(running) == 0, "".join(running.log)


def _without_timings(document: dict[str, Any]) -> dict[str, Any]:
    document["model_info"].pop("load_seconds")
    return document


def test_next_token_over_the_server_is_the_local_document(cli, server: Server, tiny_model_dir: Path) -> None:
    args = ["next-token", PROMPT, "-k", "8", "--steps", "3", "--temperature", "0.7", "--json"]
    remote = cli(*args, "--endpoint", server.url)
    local = cli(*args, "-m", tiny_model_dir)
    assert remote.exit_code == 0 and local.exit_code == 0, remote.stderr + local.stderr
    a, b = _without_timings(remote.json()), _without_timings(local.json())
    # the source is named: which server, and that it is llmscope's (its model, dtype and weights follow)
    assert (a["model_info"].pop("endpoint"), a["model_info"].pop("server")) == (server.url, "llmscope serve")
    assert (b["model_info"].pop("endpoint"), b["model_info"].pop("server")) == (None, None)
    assert f"answered by `llmscope serve` at {server.url}: {tiny_model_dir}, float32" in remote.stderr
    for step_a, step_b in zip(a["steps"], b["steps"], strict=True):
        assert [r["token_id"] for r in step_a["top"]] == [r["token_id"] for r in step_b["top"]]
        assert [r["probability"] for r in step_a["top"]] == pytest.approx(
            [r["probability"] for r in step_b["top"]], abs=1e-5)
        assert step_a["entropy"] == pytest.approx(step_b["entropy"], abs=1e-5)
    assert {k: v for k, v in a.items() if k != "steps"} == {k: v for k, v in b.items() if k != "steps"}


def test_next_token_from_openai_logprobs_alone(server: Server, tiny_model_dir: Path) -> None:
    from llmscope.client.endpoint import Client, EndpointSettings, next_token_openai
    from llmscope.core.command_settings import NextTokenSettings
    from llmscope.inspection.next_token import next_token_distribution
    from llmscope.loading.loader import load_model

    client = Client(EndpointSettings(url=server.url + "/v1"))
    info, result, limits = next_token_openai(client, PROMPT, NextTokenSettings(top_k=5, steps=2), False, None)
    local = next_token_distribution(load_model(str(tiny_model_dir), device="cpu"), PROMPT, top_k=5, steps=2)
    assert info.model == str(tiny_model_dir) and "entropy over the full vocabulary" in limits
    for remote_step, local_step in zip(result.steps, local.steps, strict=True):
        # the legacy completions format keys alternatives by text: compare the probabilities
        assert sorted(r.probability for r in remote_step.top) == pytest.approx(
            sorted({r.text: r.probability for r in local_step.top}.values()), abs=1e-5)
        assert remote_step.chosen.text == local_step.chosen.text


def test_score_over_the_server_has_the_local_perplexity(cli, server: Server, tiny_model_dir: Path) -> None:
    text = "Attention heads share keys and values in grouped-query attention."
    remote = cli("score", text, "--endpoint", server.url, "--top-k", "2", "--json")
    local = cli("score", text, "-m", tiny_model_dir, "--top-k", "2", "--json")
    assert remote.exit_code == 0, remote.stderr
    a, b = remote.json(), local.json()
    assert a["summary"]["perplexity"] == pytest.approx(b["summary"]["perplexity"], abs=1e-4)
    assert a["token_ids"] == b["token_ids"]
    for token_a, token_b in zip(a["prompt_logprobs"]["content"], b["prompt_logprobs"]["content"], strict=True):
        assert [t["id"] for t in token_a["top_logprobs"]] == [t["id"] for t in token_b["top_logprobs"]]
        assert token_a["logprob"] == pytest.approx(token_b["logprob"], abs=1e-5)


def test_generate_over_the_server_gives_the_local_tokens(cli, server: Server, tiny_model_dir: Path) -> None:
    args = ["generate", "Hello", "-n", "5", "--logprobs", "2", "--json"]
    remote = cli(*args, "--endpoint", server.url)
    local = cli(*args, "-m", tiny_model_dir)
    assert remote.exit_code == 0, remote.stderr
    a, b = remote.json(), local.json()
    assert a["text"] == b["text"] and a["token_ids"] == b["token_ids"]
    assert a.keys() == b.keys()


def test_an_endpoint_call_imports_neither_torch_nor_transformers(server: Server) -> None:
    code = ("import sys\nfrom llmscope.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nheavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "print(json.dumps({'exit': code, 'heavy': heavy}), file=sys.stderr)\n").replace(
        "import sys", "import json, sys", 1)
    for args in (["next-token", PROMPT, "--json"], ["score", "Hello world", "--json"], ["generate", "Hi", "-n", "2"]):
        run = subprocess.run([sys.executable, "-c", code, *args, "--endpoint", server.url],
                             capture_output=True, text=True, timeout=120)
        verdict = json.loads(run.stderr.strip().splitlines()[-1])
        assert verdict == {"exit": 0, "heavy": []}, run.stderr


def test_endpoint_usage_errors(cli, server: Server, tmp_path: Path) -> None:
    lens = cli("next-token", PROMPT, "--lens", "--endpoint", server.url)
    assert lens.exit_code == 2 and "--lens needs a local model" in lens.stderr
    batch_file = tmp_path / "prompts.txt"
    batch_file.write_text("a\nb\n")
    assert cli("generate", "--batch", batch_file, "--endpoint", server.url).exit_code == 2
    assert cli("next-token", PROMPT, "--api-key", "k").exit_code == 2  # a key without an endpoint
    assert cli("next-token", PROMPT, "--endpoint", "localhost:1").exit_code == 2
    gone = cli("next-token", PROMPT, "--endpoint", "http://127.0.0.1:9")
    assert gone.exit_code == 1 and "cannot reach the endpoint" in gone.stderr
    other_model = cli("next-token", PROMPT, "--endpoint", server.url, "-m", "another-model")
    assert other_model.exit_code == 1 and "does not serve that model" in other_model.stderr
    too_long = cli("next-token", "Hi " * 400, "--endpoint", server.url)
    assert too_long.exit_code == 2 and "context" in too_long.stderr


def test_llmscope_endpoint_variable(cli, server: Server) -> None:
    result = cli("next-token", PROMPT, "-k", "2", "--json", env={"LLMSCOPE_ENDPOINT": server.url})
    assert result.exit_code == 0, result.stderr
    assert len(result.json()["steps"][0]["top"]) == 2


def test_compare_against_the_server_is_the_local_compare(cli, server: Server, tiny_model_dir: Path) -> None:
    text = "The capital of France is Paris. The capital of Italy is Rome."
    args = ["compare", text, "-m", tiny_model_dir, "--window", "8", "--stride", "4", "--next-token", "-k", "3",
            "--json"]
    remote = cli(*args, "--against-endpoint", server.url)
    local = cli(*args, "--against", tiny_model_dir)
    assert remote.exit_code == 0, remote.stderr
    a, b = remote.json(), local.json()
    assert a["window"]["forward_passes"] > 1 and a["model_b"] == b["model_b"]  # several windows: chunks pair up
    assert (a["endpoint_b"], a["weights_b"], b["endpoint_b"], b["weights_b"]) == (server.url, "float32", None,
                                                                                   "float32")
    assert a["summary"]["kl_max"] < 1e-4 and a["summary"]["tokens_compared"] == b["summary"]["tokens_compared"]
    assert a["summary"]["perplexity_b"] == pytest.approx(b["summary"]["perplexity_b"], abs=1e-4)
    assert [r["b_id"] for r in a["next_token"]["rows"]] == [r["b_id"] for r in b["next_token"]["rows"]]
    other = cli("compare", text, "-m", tiny_model_dir, "--against-endpoint", server.url, "--against-dtype", "bfloat16")
    assert other.exit_code == 2


def test_score_from_openai_prompt_logprobs(server: Server, tiny_model_dir: Path) -> None:
    from llmscope.client.answers import read_entries, score_from_openai
    from llmscope.client.endpoint import Client, EndpointSettings, score_openai
    from llmscope.inspection.scoring import ScoreSettings, score_text
    from llmscope.loading.loader import load_model

    text = "Attention heads share keys and values."
    local = score_text(load_model(str(tiny_model_dir), device="cpu"), text, ScoreSettings(top_k=3))
    # vLLM's prompt_logprobs (llmscope serve answers them too): ids and every rank
    info, result, limits = score_openai(Client(EndpointSettings(url=server.url)), text, ScoreSettings(top_k=3))
    assert info.source == "endpoint" and limits == ("entropy over the full vocabulary",)
    assert result.perplexity == pytest.approx(local.perplexity, abs=1e-4)
    assert [t.token_id for t in result.tokens] == [t.token_id for t in local.tokens]
    assert [t.rank for t in result.tokens] == [t.rank for t in local.tokens]
    assert [[a.token_id for a in t.top] for t in result.tokens] == [[a.token_id for a in t.top] for t in local.tokens]
    # echo + logprobs alone (what other servers send): no ids, ranks only within the top 3
    status, answer = server.request("/v1/completions", {"prompt": text, "max_tokens": 1, "temperature": 0,
                                                        "echo": True, "logprobs": 3}, key=None)
    assert status == 200
    entries = read_entries(answer["choices"][0]["logprobs"])[: answer["usage"]["prompt_tokens"]]
    echoed = score_from_openai(str(tiny_model_dir), text, entries, ScoreSettings(top_k=3))
    assert echoed.perplexity == pytest.approx(local.perplexity, abs=1e-4)
    assert [t.text for t in echoed.tokens] == [t.text for t in local.tokens]
    assert all(t.rank in (0, r.rank) for t, r in zip(echoed.tokens, local.tokens, strict=True))

def test_batch_through_the_server_writes_the_local_records(cli, server: Server, tiny_model_dir: Path,
                                                           tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "The capital of France is"}\n{"id": "b", "prompt": ""}\n'
                       '{"id": "c", "prompt": "Hello world"}\n')
    remote = cli("next-token", "--batch", prompts, "-k", "3", "--endpoint", server.url)
    local = cli("next-token", "--batch", prompts, "-k", "3", "-m", tiny_model_dir)
    assert remote.exit_code == local.exit_code == 1  # the empty prompt is an error record in both
    a, b = ([json.loads(line) for line in run.stdout.splitlines()] for run in (remote, local))
    assert [(r["id"], r.get("error") is None) for r in a] == [(r["id"], r.get("error") is None) for r in b]
    for record_a, record_b in zip(a, b):
        if record_a.get("error") is None:
            assert [t["probability"] for t in record_a["steps"][0]["top"]] == pytest.approx(
                [t["probability"] for t in record_b["steps"][0]["top"]], abs=1e-5)
    scored = cli("score", "--batch", prompts, "--endpoint", server.url)
    assert scored.exit_code == 1 and len(scored.stdout.splitlines()) == 3
