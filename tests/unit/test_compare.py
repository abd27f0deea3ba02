"""`llmscope compare`: KL(A‖B), agreement and perplexity under each model, checked against KL computed here with
torch.nn.functional.kl_div, a model against itself, two different tiny models, and the embedded model in bfloat16."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmscope.core.errors import InputMismatchError, UsageError
from llmscope.inspection.comparison import CompareSettings, compare_texts, first_difference, percentile
from llmscope.inspection.scoring import ScoreSettings, score_text
from llmscope.loading.loader import load_model

TEXT = "The capital of France is Paris. The capital of Italy is Rome."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny llama with the same tokenizer but other random weights."""
    from helpers.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-other"), "llama", seed=7)


@pytest.fixture(scope="module")
def other_tokenizer_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a tokenizer trained to a smaller vocabulary (fewer merges: other ids)."""
    from helpers.models import CORPUS
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-other-tokenizer")
    for path in tiny_model_dir.iterdir():
        if "token" not in path.name:
            shutil.copy(path, folder / path.name)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                            pad_token="<|endoftext|>").save_pretrained(str(folder))
    return folder


def _log_probabilities(loaded, ids: list[int]):
    import torch

    with torch.inference_mode():
        return torch.log_softmax(loaded.model(torch.tensor([ids])).logits[0].float(), dim=-1)


def test_a_model_against_itself(tiny) -> None:
    result = compare_texts(tiny, tiny, TEXT, CompareSettings(against_dtype="float32", next_token=True, top_k=4))
    assert result.tokens_compared == len(result.token_ids) - 1
    assert result.kl_max < 1e-7 and result.kl_mean < 1e-7 and all(p.kl < 1e-7 for p in result.positions)
    assert result.top1_agreement == 100.0 and result.top5_same == 100.0
    assert result.perplexity_a == result.perplexity_b == pytest.approx(score_text(tiny, TEXT).perplexity, rel=1e-9)
    assert all(row.a_id == row.b_id and row.a_probability == row.a_probability_under_b for row in result.next_token)


def test_kl_and_agreement_match_an_independent_computation(tiny, other_dir: Path) -> None:
    import numpy
    import torch

    other = load_model(str(other_dir), device="cpu")
    result = compare_texts(tiny, other, TEXT, CompareSettings(against=str(other_dir), worst=3, next_token=True,
                                                              top_k=5))
    ids = list(result.token_ids)
    log_a, log_b = _log_probabilities(tiny, ids), _log_probabilities(other, ids)
    kl = torch.nn.functional.kl_div(log_b, log_a, log_target=True, reduction="none").sum(dim=-1)  # KL(A‖B) per row
    expected = kl[:-1].tolist()  # row t predicts token t + 1
    assert [p.kl for p in result.positions] == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert result.kl_mean == pytest.approx(float(numpy.mean(expected)), rel=1e-4)
    assert result.kl_p99 == pytest.approx(float(numpy.percentile(expected, 99)), rel=1e-4)
    assert result.kl_max == pytest.approx(max(expected), rel=1e-4) and result.kl_mean > 1e-4
    agree = (log_a[:-1].argmax(-1) == log_b[:-1].argmax(-1)).float().mean().item() * 100
    assert result.top1_agreement == pytest.approx(agree)
    assert [p.position for p in result.most_different] == [int(i) + 1 for i in numpy.argsort(expected)[::-1][:3]]
    assert result.perplexity_b == pytest.approx(score_text(other, TEXT).perplexity, rel=1e-6)
    top = torch.topk(log_a[-1].exp(), 5)
    assert [row.a_id for row in result.next_token] == top.indices.tolist()
    assert result.next_token[0].a_probability_under_b == pytest.approx(float(log_b[-1].exp()[top.indices[0]]),
                                                                       rel=1e-4)
    assert result.next_token_kl == pytest.approx(float(kl[-1]), rel=1e-4)


def test_helpers() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1 and first_difference([1, 2], [1, 2, 3]) == 2
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5 and percentile([5.0], 0.99) == 5.0


def test_mismatched_tokenizers_name_the_first_difference(cli, tiny, tiny_model_dir: Path,
                                                         other_tokenizer_dir: Path) -> None:
    other = load_model(str(other_tokenizer_dir), device="cpu")
    ids_a = tiny.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    ids_b = other.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    where = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y)
    with pytest.raises(InputMismatchError, match=f"first at token {where},"):
        compare_texts(tiny, other, TEXT, CompareSettings(against=str(other_tokenizer_dir)))
    result = cli("compare", TEXT, "-m", tiny_model_dir, "--against", other_tokenizer_dir)
    assert result.exit_code == 1 and f"first at token {where}," in result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr


def test_cli_json_and_tables(cli, tiny, tiny_model_dir: Path, other_dir: Path) -> None:
    document = cli("compare", TEXT, "-m", tiny_model_dir, "--against", other_dir, "--json", "--next-token",
                   "-k", "3").json()
    expected = compare_texts(tiny, load_model(str(other_dir), device="cpu"), TEXT,
                             CompareSettings(against=str(other_dir)))
    assert document["command"] == "compare" and document["summary"]["kl_mean"] == pytest.approx(expected.kl_mean)
    assert len(document["positions"]) == expected.tokens_compared and len(document["next_token"]["rows"]) == 3
    shown = cli("compare", TEXT, "-m", tiny_model_dir, "--against", other_dir, "--next-token", "--worst", "2",
                env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.stderr
    assert f"{expected.kl_mean:.6f}" in shown.stdout and "Where they part most" in shown.stdout
    assert "side by side" in shown.stdout and max(len(line) for line in shown.stdout.splitlines()) <= 80


def test_sliding_window_runs_the_same_plan_for_both(tiny) -> None:
    result = compare_texts(tiny, tiny, TEXT * 3, CompareSettings(score=ScoreSettings(window=16, stride=6),
                                                                 against_dtype="float32"))
    assert result.windows > 1 and result.tokens_compared == len(result.token_ids) - 1 and result.kl_max < 1e-7


@pytest.mark.parametrize("options", [{}, {"against_dtype": "int8"}, {"against": "x", "worst": -1},
                                     {"against": "x", "top_k": 0}])
def test_settings_refuse_bad_values(options: dict) -> None:
    with pytest.raises(UsageError):
        CompareSettings(**options)


@pytest.mark.parametrize("arguments", [[], ["--against-dtype", "int4"], ["--against", "x", "--stride", "0"],
                                       ["--against", "x", "-k", "0"], ["--against", "x", "--chat"]])
def test_cli_bad_values_exit_2_before_loading(cli, monkeypatch: pytest.MonkeyPatch, arguments: list[str]) -> None:
    import llmscope.loading.loader

    def no_loading(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model must not load")

    monkeypatch.setattr(llmscope.loading.loader, "load_model", no_loading)
    result = cli("compare", "some text", *arguments)
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr and "must not load" not in result.stderr


@pytest.mark.slow
def test_embedded_float32_against_bfloat16(embedded_model) -> None:
    import numpy
    import torch
    from helpers.texts import PARAGRAPH

    bf16 = load_model(None, device="cpu", dtype="bfloat16")
    result = compare_texts(embedded_model, bf16, PARAGRAPH, CompareSettings(against_dtype="bfloat16"))
    ids = list(result.token_ids)
    log_a, log_b = _log_probabilities(embedded_model, ids)[:-1], _log_probabilities(bf16, ids)[:-1]
    kl = torch.nn.functional.kl_div(log_b, log_a, log_target=True, reduction="none").sum(dim=-1)
    assert result.kl_mean == pytest.approx(float(kl.mean()), rel=0.05)
    assert 0 < result.kl_mean < 0.01 and result.kl_mean == pytest.approx(9.4e-4, rel=0.3)  # measured 9.38e-4
    assert result.kl_p99 == pytest.approx(float(numpy.percentile(kl.numpy(), 99)), rel=0.1)
    assert result.top1_agreement > 95 and result.tokens_compared == len(ids) - 1
    assert result.perplexity_a == pytest.approx(13.97, rel=0.01)
    assert abs(result.perplexity_b - result.perplexity_a) / result.perplexity_a < 0.02


def test_compare_leaves_inference_mode_off(tiny_model_dir) -> None:
    """scoring's generators yield outside inference mode: one left unfinished (compare zips two) must not switch it
    on in the caller, where a later gradient (attribute) would fail."""
    import torch

    from llmscope.inspection.comparison import CompareSettings, compare_texts
    from llmscope.loading.loader import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu")
    compare_texts(loaded, loaded, "The capital of France is Paris. The capital of Italy is Rome.",
                  CompareSettings(against_dtype="float32"))
    assert not torch.is_inference_mode_enabled()
