"""The serve engine without HTTP: queued requests run as one batch with single-run answers, a full queue and
cancelled jobs, request shapes checked, the stop-string matcher, a finished row that stops consuming positions."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from helpers.servers import SERVE_PROMPTS, generate_jobs

from llmscope.loading.loader import load_model

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")


def test_the_serve_engine_batch_of_8_gives_each_request_its_lone_logprobs(tiny_model_dir: Path) -> None:
    import asyncio

    from helpers.servers import generate_jobs

    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate
    from llmscope.server.engine import Engine

    loaded = load_model(str(tiny_model_dir), device="cpu")

    async def run() -> tuple[list, Engine]:
        engine = Engine(loaded, max_batch=8)
        jobs = generate_jobs(loaded, asyncio.get_running_loop(), SERVE_PROMPTS, 6)
        for job in jobs:  # queued before the worker starts: one batch of 8
            engine.submit(job)
        engine.start()
        results = await asyncio.gather(*(job.future for job in jobs))
        engine.close(5)
        return results, engine

    results, engine = asyncio.run(run())
    assert engine.stats.batches == 1 and engine.stats.largest_batch == 8
    for prompt, result in zip(SERVE_PROMPTS, results):
        lone = generate(loaded, prompt, GenerationSettings(max_new_tokens=6))
        assert [t.logprob for t in result.tokens] == [t.logprob for t in lone.tokens]  # bit for bit


def test_queued_requests_run_as_one_batch_with_single_run_answers(tiny: Any) -> None:
    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate
    from llmscope.server.engine import Engine

    prompts = ["Hello", "The capital of Italy is", "Write an email to Sarah."]

    async def run() -> tuple[list[Any], Engine]:
        engine = Engine(tiny, max_batch=8)
        jobs = generate_jobs(tiny, asyncio.get_running_loop(), prompts, 5)
        for job in jobs:  # queued before the worker starts: they arrive "while a batch runs"
            engine.submit(job)
        engine.start()
        results = await asyncio.gather(*(job.future for job in jobs))
        engine.close(5)
        return results, engine

    results, engine = asyncio.run(run())
    assert engine.stats.batches == 1 and engine.stats.largest_batch == 3
    for prompt, result in zip(prompts, results):
        assert result.token_ids == generate(tiny, prompt, GenerationSettings(max_new_tokens=5)).token_ids


def test_a_full_queue_is_503_and_a_cancelled_job_stops(tiny: Any) -> None:
    from llmscope.server.engine import Engine
    from llmscope.server.openai_shapes import ApiError

    async def run() -> Any:
        engine = Engine(tiny, max_batch=8, max_queue=1)
        loop = asyncio.get_running_loop()
        first, second = generate_jobs(tiny, loop, ["Hello", "Hello"], 200)
        engine.submit(first)
        with pytest.raises(ApiError) as refused:
            engine.submit(second)
        assert refused.value.status == 503
        emitted = first.emit

        def emit_and_leave(item: Any) -> None:  # the client goes away after its first token
            first.cancelled.set()
            emitted(item)

        first.emit = emit_and_leave  # type: ignore[method-assign]
        engine.start()
        result = await first.future
        engine.close(5)
        return result

    result = asyncio.run(run())
    assert result.finish_reason == "cancelled" and result.new_tokens == 1


@pytest.mark.parametrize("body, param", [
    ({"prompt": "Hi", "n": 2}, "n"),
    ({"prompt": "Hi", "logprobs": 21}, "logprobs"),
    ({"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "Hi", "max_tokens": 0}, "max_tokens"),  # 0 only with echo
    ({"prompt": "Hi", "top_p": 0}, "top_p"),
    ({"prompt": "Hi", "seed": -1}, "seed"),
    ({"prompt": "Hi", "stream": "yes"}, "stream"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": "Hi", "frequency_penalty": 0.5}, "frequency_penalty"),  # refused, not silently ignored
    ({"prompt": "Hi", "logit_bias": {"50": 10}}, "logit_bias"),
])
def test_completion_requests_are_checked(body: dict[str, Any], param: str) -> None:
    from llmscope.server.openai_shapes import ApiError, parse_completion

    with pytest.raises(ApiError) as refused:
        parse_completion(body)
    assert refused.value.status == 400 and refused.value.param == param


def test_request_shapes_read_openai_fields() -> None:
    from llmscope.server.openai_shapes import ApiError, parse_chat, parse_completion

    echo = parse_completion({"prompt": ["a", "b"], "max_tokens": 0, "echo": True, "logprobs": 2, "stop": "x"})
    assert echo.prompts == ("a", "b") and echo.sampling.max_tokens == 0 and echo.sampling.stop == ("x",)
    chat = parse_chat({"messages": [{"role": "developer", "content": "Be brief."},
                                    {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                       "max_completion_tokens": 5, "temperature": 0, "logprobs": True, "top_logprobs": 3})
    assert chat.messages == (("system", "Be brief."), ("user", "Hi")) and chat.sampling.max_tokens == 5
    assert chat.sampling.greedy and chat.top_logprobs == 3
    with pytest.raises(ApiError):
        parse_chat({"messages": [{"role": "tool", "content": "x"}]})
    with pytest.raises(ApiError):
        parse_chat({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})  # needs logprobs


def test_stop_matcher_finds_what_a_plain_search_finds() -> None:

    from llmscope.server.engine import StopMatcher

    draw = random.Random(5)
    for _ in range(400):
        stops = tuple("".join(draw.choice("ab") for _ in range(draw.randint(1, 5))) for _ in range(draw.randint(1, 4)))
        matcher, text, found = StopMatcher(stops), "", None
        while found is None and len(text) < 40:
            delta = "".join(draw.choice("abc") for _ in range(draw.randint(0, 3)))
            found = matcher.feed(delta, len(text))
            text += delta
            plain = [text.find(stop) for stop in stops if stop in text]
            assert found == (min(plain) if plain else None), (stops, text)
            if found is None:  # what a stream holds back: the longest tail that starts a stop string
                assert matcher.held == max((size for stop in stops for size in range(1, len(stop))
                                            if text.endswith(stop[:size])), default=0)


def test_a_finished_row_stops_consuming_positions(tmp_path_factory: pytest.TempPathFactory) -> None:
    """GPT-2 with 40 learned positions: a 34-token prompt with 6 new tokens batched with a short prompt with 38
    used to feed the finished row past position 39 (IndexError for both); each row now gets its own run."""
    from helpers.models import build_tiny_model

    from llmscope.core.command_settings import GenerationSettings
    from llmscope.generation.generate import generate_encoded
    from llmscope.generation.prompts import EncodedPrompt, encode_prompt
    from llmscope.loading.loader import load_model
    from llmscope.server.engine import Engine, GenerateWork, Job

    folder = build_tiny_model(tmp_path_factory.mktemp("gpt2-40"), "gpt2", n_positions=40)
    gpt2 = load_model(str(folder), device="cpu", dtype="float32")
    ids = tuple(gpt2.tokenizer("Hello world, the capital of France is Paris. " * 6)["input_ids"][:34])
    long = EncodedPrompt(prompt="long", text=gpt2.tokenizer.decode(ids), ids=ids, chat=False)
    short = encode_prompt(gpt2, "Hi", new_tokens=38)
    assert len(long.ids) == 34 and len(short.ids) + 38 <= 40

    async def run() -> list[Any]:
        engine = Engine(gpt2, max_batch=8)
        loop = asyncio.get_running_loop()
        jobs = [Job(kind="generate", key=("generate", False), loop=loop, future=loop.create_future(),
                    payload=GenerateWork(prompt, GenerationSettings(max_new_tokens=budget)))
                for prompt, budget in ((long, 6), (short, 38))]
        for job in jobs:  # queued before the worker starts: one batch
            engine.submit(job)
        engine.start()
        results = await asyncio.gather(*(job.future for job in jobs))
        engine.close(5)
        assert engine.stats.batches == 1
        return results

    first, second = asyncio.run(run())
    assert first.new_tokens == 6 and second.new_tokens > 6  # the long row finished while the short one ran on
    for prompt, budget, result in ((long, 6, first), (short, 38, second)):
        alone = generate_encoded(gpt2, [prompt], GenerationSettings(max_new_tokens=budget))[0]
        assert result.token_ids == alone.token_ids
        assert result.finish_reason in ("length", "eos")
