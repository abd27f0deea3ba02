"""score on tiny models: perplexity is exp of transformers' own loss, each token against an independent forward
pass, the strided sliding window equal to the perplexity guide's method, chat scoring, fuzzed texts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers.forward import model_loss
from helpers.texts import FUZZ_TEXT, PARAGRAPH
from hypothesis import HealthCheck, given, settings

from llmscope.core.errors import UsageError
from llmscope.inspection.scoring import ScoreSettings, score_text, window_plan
from llmscope.loading.loader import load_model

TEXT = "The capital of France is Paris. The capital of Italy is Rome."


@pytest.fixture(scope="module")
def short_context(tmp_path_factory: pytest.TempPathFactory):
    """A tiny llama whose context is only 24 tokens, for the sliding window."""
    import torch
    from helpers.models import TINY_CONFIGS, build_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tiny-short-context")
    tokenizer = build_tokenizer(folder)
    fields = dict(TINY_CONFIGS["llama"], max_position_embeddings=24, vocab_size=len(tokenizer),
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **fields)).save_pretrained(str(folder))
    return load_model(str(folder), device="cpu")


def test_perplexity_is_exp_of_the_models_own_loss(tiny) -> None:
    result = score_text(tiny, TEXT)
    ids = tiny.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert list(result.token_ids) == ids and tiny.tokenizer(TEXT)["input_ids"][0] != tiny.tokenizer.bos_token_id
    loss = model_loss(tiny, ids)
    assert result.mean_nll == pytest.approx(loss, abs=1e-5)
    assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-5)
    # No BOS from this tokenizer: the first token has no prediction and is skipped.
    assert result.first_token_skipped and not result.bos_prepended and result.context_text == "The"
    assert result.tokens_scored == len(ids) - 1 and [t.position for t in result.tokens] == list(range(1, len(ids)))
    scored_bytes = len(TEXT.encode()) - len(b"The")
    assert result.scored_bytes == scored_bytes
    assert result.bits_per_byte == pytest.approx(loss * (len(ids) - 1) / math.log(2) / scored_bytes, rel=1e-5)
    assert "".join(t.delta for t in result.tokens) == TEXT[3:]


def test_each_token_matches_an_independent_forward_pass(tiny) -> None:
    import torch

    result = score_text(tiny, TEXT, ScoreSettings(top_k=3, worst=4))
    ids = list(result.token_ids)
    with torch.inference_mode():
        probabilities = torch.softmax(tiny.model(torch.tensor([ids])).logits[0].float(), dim=-1)
    for token in result.tokens:
        row = probabilities[token.position - 1]
        p = float(row[ids[token.position]])
        assert token.probability == pytest.approx(p, rel=1e-4)
        assert token.rank == int((row > row[ids[token.position]]).sum()) + 1
        assert token.top_id == int(row.argmax()) and token.top_probability == pytest.approx(float(row.max()), rel=1e-4)
        assert token.entropy == pytest.approx(float(-(row * row.log()).sum()), abs=1e-4)
        assert [alt.token_id for alt in token.top] == torch.topk(row, 3).indices.tolist()
        assert token.context == token.position  # one window: everything before it
    assert [t.position for t in result.most_surprising] == [
        t.position for t in sorted(result.tokens, key=lambda t: t.probability)[:4]]


def test_bos_is_prepended_when_the_tokenizer_adds_it(tiny_model_dir: Path) -> None:
    from tokenizers import processors

    loaded = load_model(str(tiny_model_dir), device="cpu")
    bos = loaded.tokenizer.bos_token_id
    loaded.tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])
    assert loaded.tokenizer(TEXT)["input_ids"][0] == bos
    result = score_text(loaded, TEXT)
    text_ids = loaded.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert list(result.token_ids) == [bos, *text_ids] and result.bos_prepended and not result.first_token_skipped
    assert result.tokens_scored == len(text_ids) and result.tokens[0].text == "The"
    assert result.perplexity == pytest.approx(math.exp(model_loss(loaded, [bos, *text_ids])), rel=1e-5)
    assert result.scored_bytes == len(TEXT.encode())


def test_strided_path_equals_the_perplexity_guides_method(short_context) -> None:
    import torch

    text = " ".join([TEXT, PARAGRAPH])
    result = score_text(short_context, text, ScoreSettings(stride=10))
    ids = list(result.token_ids)
    assert len(ids) > 3 * 24 and result.window == 24 and result.stride == 10
    # The reference: transformers' perplexity guide, windows of 24 moved by 10, earlier tokens masked with -100.
    total, count, previous_end = 0.0, 0, 0
    for begin in range(0, len(ids), 10):
        end = min(begin + 24, len(ids))
        target_length = end - previous_end
        window = torch.tensor([ids[begin:end]])
        labels = window.clone()
        labels[:, :-target_length] = -100
        valid = int((labels[:, 1:] != -100).sum())
        with torch.inference_mode():
            total += float(short_context.model(window, labels=labels).loss) * valid
        count += valid
        previous_end = end
        if end == len(ids):
            break
    assert result.tokens_scored == count == len(ids) - 1
    assert result.total_nll == pytest.approx(total, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)
    assert result.min_context == 1 and min(t.context for t in result.tokens if t.position >= 24) == 14
    assert result.windows == len(window_plan(len(ids), 1, 24, 10))
    default = score_text(short_context, text)  # window = the context (24), stride half of it
    assert (default.window, default.stride) == (24, 12)
    with pytest.raises(UsageError, match="context of 24"):
        score_text(short_context, text, ScoreSettings(window=25))


def test_window_plan_scores_every_position_once() -> None:
    for length, window, stride in ((100, 24, 10), (30, 8, 7), (10, 50, 25), (24, 24, 1)):
        plan = window_plan(length, 1, window, stride)
        scored = [p for _, end, start in plan for p in range(start, end)]
        assert scored == list(range(1, length))
        assert all(end - begin <= window for begin, end, _ in plan)


def test_chat_scores_only_the_answer(tiny) -> None:
    answer = "The capital of France is Paris."
    result = score_text(tiny, answer, ScoreSettings(prompt="What is the capital of France?", chat=True))
    context = tiny.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                                 add_generation_prompt=True, tokenize=False)
    context_ids = tiny.tokenizer(context, add_special_tokens=False)["input_ids"]
    answer_ids = tiny.tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert list(result.token_ids) == context_ids + answer_ids and result.context_text == context
    assert result.tokens_scored == len(answer_ids) and result.context_tokens == len(context_ids)
    loss = model_loss(tiny, context_ids + answer_ids, [-100] * len(context_ids) + answer_ids)
    assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-5)
    assert result.scored_bytes == len(answer.encode())


def test_max_tokens_caps_the_work(tiny) -> None:
    result = score_text(tiny, TEXT, ScoreSettings(max_tokens=6))
    assert result.truncated and len(result.token_ids) == 6 and result.tokens_scored == 5
    assert result.text_tokens == len(tiny.tokenizer(TEXT, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("options", [{"window": 1}, {"stride": 0}, {"window": 8, "stride": 8}, {"max_tokens": 0},
                                     {"top_k": -1}, {"worst": -1}, {"chat": True}, {"system": "be brief"}])
def test_settings_refuse_bad_values(options: dict) -> None:
    with pytest.raises(UsageError):
        ScoreSettings(**options)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=FUZZ_TEXT)
def test_fuzz_score_never_crashes(tiny, text: str) -> None:
    from llmscope.core.errors import UsageError
    from llmscope.inspection.scoring import score_text

    try:
        result = score_text(tiny, text)
    except UsageError as error:  # empty, or one token with nothing to predict it from
        assert "empty" in str(error) or "single token" in str(error)
        return
    assert result.tokens_scored == len(result.token_ids) - 1  # longer than the context: the sliding window
    assert [token.position for token in result.tokens] == list(range(1, len(result.token_ids)))
    assert result.perplexity is not None and result.perplexity > 1
