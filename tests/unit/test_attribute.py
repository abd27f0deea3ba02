"""attribute: each method against an independent computation on a tiny llama (float64 for the gradient methods),
contrastive = difference of two runs, occlusion = score's log-probabilities, the JSON schema, the usage guards;
one slow test on the embedded model ("The capital of France is" -> " Paris", completeness under 1%)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from llmscope.attribution.attribute import attribute
from llmscope.attribution.settings import AttributionSettings
from llmscope.core.errors import UsageError

PROMPT = "The capital of France is"


@pytest.fixture(autouse=True)
def outside_inference_mode() -> Any:
    """Every test here runs with inference mode off, even when an earlier test left it on."""
    import torch

    with torch.inference_mode(False):
        yield


@pytest.fixture(scope="module")
def tiny64(tiny_model_dir: Path) -> Any:
    """The tiny llama in float64: finite differences and quadrature sums agree with autograd to ~1e-10."""
    import torch

    from llmscope.loading.loader import load_model

    with torch.inference_mode(False):  # another test may have left it on (see gradient_ready)
        loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantize="none")
        loaded.model.double()
    return loaded


@pytest.fixture(scope="module")
def tiny32(tiny_model_dir: Path) -> Any:
    import torch

    from llmscope.loading.loader import load_model

    with torch.inference_mode(False):
        return load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantize="none")


def gradient_ready(loaded: Any) -> Any:
    """The shared fixture's model, or a fresh load when it was loaded while a test had left inference mode on (a
    partly consumed generator holding `with torch.inference_mode()` leaks it): such weights cannot take gradients."""
    import torch

    from llmscope.loading.loader import load_model

    if not any(p.is_inference() for p in loaded.model.parameters()):
        return loaded
    with torch.inference_mode(False):
        return load_model(None, device="cpu", dtype="float32", quantize="none")


def function_of(loaded: Any, target_id: int, contrast_id: int | None = None) -> Any:
    """log p(target | embeddings), written here from scratch (not the library's function)."""
    import torch

    def f(embeddings: Any) -> Any:
        logits = loaded.model(inputs_embeds=embeddings, use_cache=False).logits[:, -1]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        value = logprobs[:, target_id]
        return value - logprobs[:, contrast_id] if contrast_id is not None else value

    return f


def embeddings_of(loaded: Any, ids: tuple[int, ...]) -> Any:
    import torch

    with torch.no_grad():
        return loaded.model.get_input_embeddings()(torch.tensor([ids])).detach()


def method(result: Any, name: str) -> Any:
    return next(m for m in result.methods if m.method == name)


def test_input_x_gradient_equals_finite_differences(tiny64: Any) -> None:
    import torch

    result = attribute(tiny64, PROMPT, AttributionSettings(methods=("input-x-gradient",)))
    target = result.targets[0]
    x = embeddings_of(tiny64, result.ids)
    f = function_of(tiny64, target.token_id)
    h = 1e-2  # the five-point stencil's error is O(h^4); transformers' RMSNorm runs in float32 even here

    def scaled(i: int, by: float) -> float:
        point = x.clone()
        point[:, i] *= 1 + by
        return float(f(point)[0])

    expected = []
    with torch.no_grad():
        for i in range(len(result.ids)):  # d/de f(x with x_i scaled by 1 + e) at 0 = grad_i . x_i
            expected.append((-scaled(i, 2 * h) + 8 * scaled(i, h) - 8 * scaled(i, -h) + scaled(i, -2 * h)) / (12 * h))
    assert method(result, "input-x-gradient").matrix[0] == pytest.approx(expected, abs=1e-4)


def gradient_at(f: Any, points: Any) -> Any:
    import torch

    points = points.clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(points).sum(), points)
    return grad


def test_integrated_gradients_equals_a_hand_written_riemann_sum(tiny64: Any) -> None:
    import torch

    settings = AttributionSettings(methods=("integrated-gradients",), steps=64, baseline="eos")
    result = attribute(tiny64, PROMPT, settings)
    target = result.targets[0]
    x = embeddings_of(tiny64, result.ids)
    eos = tiny64.tokenizer.eos_token_id
    baseline = tiny64.model.get_input_embeddings().weight[eos].detach().expand_as(x).clone()
    baseline[:, 0] = x[:, 0]  # the first position is held
    f = function_of(tiny64, target.token_id)
    steps = 2000  # midpoint rule: error O(1/steps²), far below 1e-4 on this smooth path
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    grads = gradient_at(f, baseline + alphas[:, None, None] * (x - baseline))
    riemann = ((x - baseline) * grads.mean(dim=0, keepdim=True)).sum(dim=-1)[0].tolist()
    row = method(result, "integrated-gradients").matrix[0]
    assert row[0] is None  # held, not attributed
    assert row[1:] == pytest.approx(riemann[1:], abs=1e-4)
    check = method(result, "integrated-gradients").completeness[0]
    with torch.no_grad():
        difference = float(f(x)[0] - f(baseline)[0])
    assert check.expected == pytest.approx(difference, abs=1e-9)
    assert check.attribution_sum == pytest.approx(sum(riemann), abs=1e-4)
    assert check.converged and check.steps == 64


def test_occlusion_equals_score_log_probabilities(tiny32: Any) -> None:
    from llmscope.inspection.scoring import logprob_chunks

    result = attribute(tiny32, PROMPT, AttributionSettings(methods=("occlusion",)))
    target = result.targets[0]
    ids = list(result.ids)

    def scored(context: list[int]) -> float:  # what `score` computes for target after this context
        chunk = list(logprob_chunks(tiny32, tuple(context), [(0, len(context), len(context))], next_token=True))[-1]
        return float(chunk.logprobs[-1, target.token_id])

    full = scored(ids)
    assert target.logprob == pytest.approx(full, abs=1e-6)
    expected = [full - scored(ids[:i] + ids[i + 1:]) for i in range(len(ids))]
    assert list(method(result, "occlusion").matrix[0]) == expected  # exactly: the same float32 arithmetic
    occluder = tiny32.tokenizer.decode([ids[-1]])  # one token of this tokenizer
    replaced = attribute(tiny32, PROMPT, AttributionSettings(methods=("occlusion",), occlude_with=occluder))
    expected = [full - scored([*ids[:i], ids[-1], *ids[i + 1:]]) for i in range(len(ids))]
    assert list(method(replaced, "occlusion").matrix[0]) == expected
    assert method(replaced, "occlusion").parameters["mode"] == "replace"


def test_contrastive_is_the_difference_of_two_single_target_runs(tiny64: Any) -> None:
    methods = ("occlusion", "input-x-gradient", "integrated-gradients")
    ids = tiny64.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    one_token, other_token = (tiny64.tokenizer.decode([i]) for i in ids[1:3])  # single tokens of this tokenizer
    both = attribute(tiny64, PROMPT, AttributionSettings(methods=methods, target=one_token, contrast=other_token,
                                                         steps=16))
    paris = attribute(tiny64, PROMPT, AttributionSettings(methods=methods, target=one_token, steps=16))
    rome = attribute(tiny64, PROMPT, AttributionSettings(methods=methods, target=other_token, steps=16))
    assert len(both.targets) == len(paris.targets) == len(rome.targets) == 1
    assert both.target_function == "log p(target) - log p(contrast)"
    for name in methods:
        for k in range(len(both.targets)):
            row, one, two = (method(r, name).matrix[k] for r in (both, paris, rome))
            difference = [None if a is None else a - b for a, b in zip(one, two)]
            assert [v is None for v in row] == [v is None for v in difference]
            assert [v for v in row if v is not None] == pytest.approx([v for v in difference if v is not None],
                                                                      abs=1e-6), name


def test_generated_targets_make_a_triangular_matrix(tiny32: Any) -> None:
    result = attribute(tiny32, "Hello world", AttributionSettings(methods=("occlusion", "attention-rollout"),
                                                                  new_tokens=3))
    assert result.target_source == "generated" and 1 <= len(result.targets) <= 3
    prompt_tokens = result.prompt_tokens
    for k, target in enumerate(result.targets):
        assert target.position == prompt_tokens + k
        for m in result.methods:
            row = m.matrix[k]
            assert len(row) == len(result.ids)
            assert all(v is not None for v in row[: target.position])
            assert all(v is None for v in row[target.position:])
    rollout = method(result, "attention-rollout")
    assert all(math.isclose(sum(v for v in row if v is not None), 1.0, rel_tol=1e-9) for row in rollout.matrix)


def test_gradients_run_when_a_caller_left_inference_mode_on(tiny32: Any) -> None:
    import torch

    with torch.inference_mode():  # a partly consumed generator elsewhere can leave it on
        result = attribute(tiny32, PROMPT, AttributionSettings(methods=("input-x-gradient",)))
    assert all(v is not None for v in result.methods[0].matrix[0])


def test_usage_guards(tiny32: Any) -> None:
    with pytest.raises(UsageError, match="not both"):
        AttributionSettings(target=" Paris", new_tokens=2)
    with pytest.raises(UsageError, match="exceed --max-tokens 4"):
        attribute(tiny32, PROMPT, AttributionSettings(max_tokens=4))
    with pytest.raises(UsageError, match="--contrast"):
        attribute(tiny32, PROMPT, AttributionSettings(contrast=" Paris is a city"))
    from llmscope.attribution.settings import method_list

    assert method_list(["ig,occlusion", "rollout"]) == ("integrated-gradients", "occlusion", "attention-rollout")
    with pytest.raises(UsageError, match="unknown method"):
        method_list(["saliency"])


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


@pytest.mark.slow
def test_capital_of_france_on_the_embedded_model(embedded_model: Any) -> None:
    result = attribute(gradient_ready(embedded_model), PROMPT, AttributionSettings())
    assert [t.text for t in result.targets] == [" Paris"]
    assert result.targets[0].logprob == pytest.approx(math.log(0.7725), abs=2e-3)
    check = method(result, "integrated-gradients").completeness[0]
    assert check.relative_error < 0.01 and check.converged
    # 32 steps sum to within 1%, but some tokens still move by more than 5% against 16: the steps double once
    assert check.steps == 64 and check.compared_steps == 32 and check.unsettled == () and check.largest_move < 0.05
    occlusion = method(result, "occlusion")
    assert len(occlusion.matrix[0]) == 5 and result.tokens == ("The", " capital", " of", " France", " is")
