"""bench-cache's steps one at a time on the tiny model, without timing anything: the measuring points (depths
repeat the prompt's ids), the refusal of a depth past the context, a point's log of outputs and its complete
pairs, and the rule that stops a point's pairs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from llmscope.bench import benchmark
from llmscope.bench.benchmark import BenchPlan, Point, PointLog, run_timing
from llmscope.bench.results import CACHE, NO_CACHE
from llmscope.core.errors import UsageError


def test_the_points_are_the_lengths_or_the_depths(tiny: Any) -> None:
    plan = BenchPlan(prompt="Hello world", lengths=(2, 5))
    prompt_text, ids = benchmark._prompt(tiny, plan)
    assert ids == tiny.tokenizer("Hello world", add_special_tokens=False)["input_ids"] and prompt_text == "Hello world"
    assert benchmark._points(tiny, plan, ids) == [Point(tuple(ids), 2), Point(tuple(ids), 5)]
    deep = benchmark._points(tiny, BenchPlan(prompt="Hello world", lengths=(3,), depths=(4, 7)), [11, 12, 13])
    assert deep == [Point((11, 12, 13, 11), 3), Point((11, 12, 13, 11, 12, 13, 11), 3)]
    assert [point.prompt_tokens for point in deep] == [4, 7]


def test_a_depth_past_the_context_is_refused_with_the_depth(tiny: Any) -> None:
    context = tiny.model.config.max_position_embeddings  # 256 in the tiny llama
    plan = BenchPlan(prompt="Hello", lengths=(8,), depths=(16, context))
    with pytest.raises(UsageError) as refused:
        benchmark._points(tiny, plan, [11, 12])
    assert refused.value.message.startswith(f"--depth {context} does not fit")


def test_a_point_log_counts_complete_pairs_and_keys_its_outputs() -> None:
    log = PointLog(Point((5, 6, 7), 2))
    assert log.complete_pairs == 0 and log.stop_reason == "interrupted" and log.outputs_by_run() == {}
    first, second, third = (SimpleNamespace(ids=ids) for ids in ([1, 2], [1, 2], [1, 3]))
    log.outputs[CACHE] += [first, third]  # pair 2 stopped after its cached run
    log.outputs[NO_CACHE].append(second)
    assert log.complete_pairs == 1
    assert log.outputs_by_run() == {(CACHE, 3, 2, 1): first, (CACHE, 3, 2, 2): third, (NO_CACHE, 3, 2, 1): second}


def test_the_stop_rule_for_a_point() -> None:
    point = Point((1, 2, 3), 4)
    runs = []
    for run in range(1, 4):  # every no-cache run takes 3 s, every cached one 1 s: a speed-up of 3.0 exactly
        runs.append(run_timing(CACHE, 4, run, 1.0, [0.25, 0.5, 0.75, 1.0], None, prompt_tokens=3))
        runs.append(run_timing(NO_CACHE, 4, run, 3.0, [0.75, 1.5, 2.25, 3.0], None, prompt_tokens=3))
    assert benchmark._stop_reason(2, 2, runs, point, 0.05, 8.0, None) == "repeat"
    assert benchmark._stop_reason(1, 2, runs, point, 0.05, 4.0, None) is None
    assert benchmark._stop_reason(3, None, runs, point, 0.05, 12.0, 100.0) == "converged"
    assert benchmark._stop_reason(2, None, runs[:4], point, 0.05, 8.0, 11.0) == "time budget"  # 8 + 4 > 11
    assert benchmark._stop_reason(2, None, runs[:4], point, 0.05, 8.0, 12.0) is None
    other = Point((1, 2), 4)  # another point's runs: nothing measured there yet
    assert benchmark._stop_reason(benchmark.MAX_PAIRS, None, runs, other, 0.05, 1.0, None) == "pair limit"
