"""The serve routes called as plain functions, without HTTP: each OpenAI handler gets a Starlette Request built
from a scope and the ServeState over the tiny model's engine, and its answer is compared with the library's own
run. The state's checks refuse oversize requests before any job reaches the engine."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")


def request_of(body: Any = None, path: str = "/v1/completions", headers: dict[str, str] | None = None,
               disconnect: bool = False) -> Any:
    """A Starlette Request as the server would hand it over: the JSON body, then a client that stays connected
    (or, with disconnect, one that goes away as soon as its body is read)."""
    from starlette.requests import Request

    data = json.dumps(body).encode() if body is not None else b""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}
        if disconnect:
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # the client stays until the handler is done with it
        raise AssertionError("unreachable")

    raw = {"content-type": "application/json", "content-length": str(len(data)), **(headers or {})}
    scope = {"type": "http", "method": "POST" if body is not None else "GET", "path": path, "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in raw.items()]}
    return Request(scope, receive)


def answer_of(response: Any) -> Any:
    return json.loads(response.body)


@pytest.fixture(scope="module")
def local(tiny_model_dir: Path) -> Any:
    from llmscope.loading.loader import load_model

    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


class RecordingEngine:
    """An engine that only queues: what a handler submitted, and never a result."""

    def __init__(self, loaded: Any) -> None:
        from llmscope.server.engine import EngineStats

        self.loaded, self.stats, self.jobs = loaded, EngineStats(), []
        self.speed = None  # not measured: no request is refused for its time

    @property
    def queued(self) -> int:
        return len(self.jobs)

    def submit(self, job: Any) -> None:
        self.jobs.append(job)
        self.stats.requests += 1


def state_of(engine: Any, **settings: Any) -> Any:
    from llmscope.server.config import ServeSettings
    from llmscope.server.state import ServeState

    logged: list[str] = []
    return ServeState(engine, ServeSettings(port=0, **settings), logged.append)


@pytest.fixture
def running(local: Any) -> Iterator[Any]:
    """The state over a started engine on the tiny model, closed after the test."""
    from llmscope.server.engine import Engine

    engine = Engine(local, max_batch=4)
    engine.start()
    yield state_of(engine)
    engine.close(5)


def test_models_and_health_name_the_served_model(local: Any, tiny_model_dir: Path) -> None:
    from llmscope.server.openai_routes import health, models

    state = state_of(RecordingEngine(local))
    listed = answer_of(asyncio.run(models(request_of(), state)))
    assert [entry["id"] for entry in listed["data"]] == [str(tiny_model_dir)]
    assert listed["data"][0]["created"] == state.created
    status = answer_of(asyncio.run(health(request_of(), state)))
    assert status["model"] == str(tiny_model_dir) and status["queued"] == 0 and status["requests"] == 0


def test_a_greedy_completion_is_the_library_generation(running: Any, local: Any) -> None:
    from llmscope import generate
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.server.openai_routes import completions

    body = {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0, "logprobs": 2}
    answer = answer_of(asyncio.run(completions(request_of(body), running)))
    expected = generate(local, "The capital of France is", GenerationSettings(max_new_tokens=6, logprobs=2))
    choice = answer["choices"][0]
    assert choice["text"] == expected.text and choice["finish_reason"] == "length"
    assert choice["logprobs"]["token_logprobs"] == pytest.approx([t.logprob for t in expected.tokens], abs=1e-5)
    assert list(choice["logprobs"]["top_logprobs"][0].values()) == pytest.approx(
        [a.logprob for a in expected.tokens[0].top], abs=1e-5)
    assert answer["usage"]["completion_tokens"] == 6
    assert answer["usage"]["prompt_tokens"] == len(expected.prompt_token_ids)
    assert running.engine.stats.requests == 1


def test_a_chat_completion_is_the_library_chat_generation(running: Any, local: Any) -> None:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate_encoded
    from llmscope.server.compute import encode_messages
    from llmscope.server.openai_routes import chat

    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0,
            "logprobs": True, "top_logprobs": 2}
    answer = answer_of(asyncio.run(chat(request_of(body, "/v1/chat/completions"), running)))
    encoded = encode_messages(local, (("user", "Hello"),), 4)
    (expected,) = generate_encoded(local, [encoded], GenerationSettings(max_new_tokens=4, logprobs=2))
    assert answer["choices"][0]["message"]["content"] == expected.text
    content = answer["choices"][0]["logprobs"]["content"]
    assert [entry["logprob"] for entry in content] == pytest.approx([t.logprob for t in expected.tokens], abs=1e-5)
    assert all(len(entry["top_logprobs"]) == 2 for entry in content)
    assert answer["usage"] == {"prompt_tokens": len(encoded.ids), "completion_tokens": 4,
                               "total_tokens": len(encoded.ids) + 4}


def test_text_past_max_tokens_is_refused_before_any_job(local: Any) -> None:
    from llmscope.server.openai_routes import completions
    from llmscope.server.openai_shapes import ApiError

    engine = RecordingEngine(local)
    state = state_of(engine, max_tokens=16)
    longest = state.longest
    assert longest == max(len(piece) for piece in local.tokenizer.get_vocab())
    prompt = "x" * (longest * 15 + 1)  # at least 16 tokens whatever the tokenizer does with it, and one more asked
    with pytest.raises(ApiError) as refused:
        asyncio.run(completions(request_of({"prompt": prompt, "max_tokens": 1}), state))
    assert refused.value.status == 400 and refused.value.code == "too_many_tokens"
    assert "at least 16 tokens" in refused.value.message
    state.check_characters(longest * 15, 1)  # 15 + 1 tokens fit
    assert engine.jobs == []


def test_another_model_is_404_and_a_big_answer_is_refused(local: Any) -> None:
    from llmscope.server.openai_routes import completions
    from llmscope.server.openai_shapes import ApiError

    engine = RecordingEngine(local)
    state = state_of(engine, max_answer_bytes=4096)
    with pytest.raises(ApiError) as unknown:
        asyncio.run(completions(request_of({"model": "gpt-4", "prompt": "Hi"}), state))
    assert unknown.value.status == 404 and unknown.value.param == "model"
    with pytest.raises(ApiError) as big:  # 20 tokens x (256 + 5 x 128) bytes = 17,920 > 4,096
        asyncio.run(completions(request_of({"prompt": "Hi", "max_tokens": 20, "logprobs": 5}), state))
    assert big.value.code == "answer_too_large" and "17,920 bytes" in big.value.message
    assert engine.jobs == []


def test_a_client_that_leaves_gets_499_and_its_job_is_cancelled(local: Any) -> None:
    from llmscope.server.app import guarded
    from llmscope.server.openai_routes import completions

    engine = RecordingEngine(local)  # never answers: the client's departure is the only way out
    state = state_of(engine)
    handler = guarded(state, functools.partial(completions, state=state))
    response = asyncio.run(handler(request_of({"prompt": "Hello", "max_tokens": 3}, disconnect=True)))
    assert response.status_code == 499
    (job,) = engine.jobs
    assert job.cancelled.is_set() and job.payload.settings.max_new_tokens == 3


def test_the_key_check_and_error_shape(local: Any) -> None:
    from llmscope.server.app import guarded
    from llmscope.server.openai_routes import health, models

    state = state_of(RecordingEngine(local), api_key="secret")
    listed = guarded(state, functools.partial(models, state=state))
    refused = asyncio.run(listed(request_of(headers={"authorization": "Bearer wrong"})))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert answer_of(refused)["error"]["code"] == "invalid_api_key"
    allowed = asyncio.run(listed(request_of(headers={"authorization": "Bearer secret"})))
    assert allowed.status_code == 200
    open_health = guarded(state, functools.partial(health, state=state), open_route=True)
    assert asyncio.run(open_health(request_of())).status_code == 200


def test_bodies_that_are_not_json_objects_are_400() -> None:
    from llmscope.server.openai_shapes import ApiError
    from llmscope.server.state import parse_body

    assert parse_body(b'{"prompt": "Hi"}') == {"prompt": "Hi"}
    for data, words in [(b"[1, 2]", "JSON object"), (b"{", "not valid JSON"), (b'{"a": "\\ud800"}', "Unicode"),
                        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply")]:
        with pytest.raises(ApiError) as refused:
            parse_body(data)
        assert refused.value.status == 400 and words in refused.value.message
