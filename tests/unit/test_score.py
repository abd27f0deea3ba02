"""`llmscope score`: teacher-forced per-token figures and perplexity, checked against transformers' own loss
(model(ids, labels=ids)), an independent forward pass, the perplexity guide's strided method and the embedded model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers.texts import PARAGRAPH

from llmscope.core.errors import UsageError
from llmscope.inspection.scoring import ScoreSettings, score_text, window_plan
from llmscope.loading.loader import load_model

TEXT = "The capital of France is Paris. The capital of Italy is Rome."
@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


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


def _loss(loaded, ids: list[int], labels: list[int] | None = None) -> float:
    import torch

    with torch.inference_mode():
        return float(loaded.model(torch.tensor([ids]), labels=torch.tensor([labels or ids])).loss)


def test_perplexity_is_exp_of_the_models_own_loss(tiny) -> None:
    result = score_text(tiny, TEXT)
    ids = tiny.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert list(result.token_ids) == ids and tiny.tokenizer(TEXT)["input_ids"][0] != tiny.tokenizer.bos_token_id
    loss = _loss(tiny, ids)
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
    assert result.perplexity == pytest.approx(math.exp(_loss(loaded, [bos, *text_ids])), rel=1e-5)
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
    loss = _loss(tiny, context_ids + answer_ids, [-100] * len(context_ids) + answer_ids)
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


def test_cli_json_is_openai_shaped(cli, tiny_model_dir: Path, tiny) -> None:
    result = cli("score", "-", "-m", tiny_model_dir, "--json", "--top-k", "2", input=TEXT)
    assert result.exit_code == 0, result.stderr
    document = result.json()
    expected = score_text(tiny, TEXT)
    assert document["command"] == "score" and document["text"] == TEXT
    assert document["summary"]["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)
    content = document["prompt_logprobs"]["content"]
    assert len(content) == len(expected.token_ids) and content[0]["logprob"] is None and content[0]["token"] == "The"
    assert [c["id"] for c in content] == list(expected.token_ids)
    assert content[1]["logprob"] == pytest.approx(expected.tokens[0].logprob, abs=1e-6)
    assert len(content[1]["top_logprobs"]) == 2 and content[1]["rank"] == expected.tokens[0].rank


def test_cli_text_from_a_file_and_plain_output(cli, tiny_model_dir: Path, tmp_path: Path, tiny) -> None:
    path = tmp_path / "text.txt"
    path.write_text(TEXT + "\n", encoding="utf-8")
    result = cli("score", "--file", path, "-m", tiny_model_dir, "--worst", "2")
    assert result.exit_code == 0, result.stderr
    expected = score_text(tiny, TEXT + "\n")  # the file's bytes are its text, final newline included
    first = expected.tokens[0]
    assert result.stdout.startswith(f"The{first.delta}[{first.probability:.2f}]")
    assert f"{expected.perplexity:.3f}" in result.stdout and "The 2 most surprising tokens" in result.stdout
    assert "the first token 'The' is not scored" in result.stderr


@pytest.mark.parametrize("arguments", [
    ["--window", "1"], ["--stride", "0"], ["--window", "8", "--stride", "9"], ["--max-tokens", "0"],
    ["--top-k", "-1"], ["--chat"], ["--colour-by", "size"], ["--file", "/nonexistent/file.txt"],
    ["--file", "x.txt", "--system", "s"]])
def test_cli_bad_values_exit_2_before_loading(cli, monkeypatch: pytest.MonkeyPatch, arguments: list[str]) -> None:
    import llmscope.loading.loader

    def no_loading(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model must not load")

    monkeypatch.setattr(llmscope.loading.loader, "load_model", no_loading)
    text = [] if "--file" in arguments else ["some text"]
    result = cli("score", *text, *arguments)
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr and "must not load" not in result.stderr
    both = cli("score", "some text", "--file", "x.txt")
    assert both.exit_code == 2 and "either TEXT or --file" in both.stderr


@pytest.mark.slow
def test_embedded_perplexity_and_paris(embedded_model) -> None:
    result = score_text(embedded_model, PARAGRAPH)
    ids = list(result.token_ids)
    assert result.first_token_skipped and ids[:2] == embedded_model.tokenizer("Paris is")["input_ids"]
    loss = _loss(embedded_model, ids)
    assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-5)
    assert result.perplexity == pytest.approx(13.97, rel=0.01)  # measured: 13.974 (float32, CPU)
    paris = score_text(embedded_model, "The capital of France is Paris").tokens[-1]
    assert paris.text == " Paris" and paris.rank == 1 and paris.probability == pytest.approx(0.7725, abs=0.005)
