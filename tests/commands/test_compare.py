"""`llmscope compare` in process: JSON and tables, mismatched tokenizers named, values refused before loading, each
side labelled by its weights, different tops marked without colour and one busy-CPU warning."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from llmscope.core.errors import InputMismatchError
from llmscope.inspection.comparison import CompareSettings, compare_texts
from llmscope.loading.loader import load_model

TEXT = "The capital of France is Paris. The capital of Italy is Rome."


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


def test_compare_marks_different_tops_without_colour_and_warns_once(cli, tiny_models: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import llmscope.loading.cputhreads

    monkeypatch.setattr(llmscope.loading.cputhreads, "others_busy_percent", lambda interval=0.1: 100.0)
    result = cli("compare", "The capital of France is Paris. The capital of Italy is Rome.", "-m",
                 tiny_models["llama"], "--against", tiny_models["qwen2"], "--worst", "8",
                 env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    assert "(≠ and bold: different top tokens)" in result.stdout
    assert re.search(r"^.*≠\s*$", result.stdout.split("Where they part most")[1], re.M)
    assert result.stderr.count("other processes keep the CPUs") == 1, result.stderr


def test_compare_labels_each_side_by_its_weights(cli, tiny_model_dir: Path) -> None:
    args = ["compare", "Hello world, hello again.", "-m", tiny_model_dir, "--against-quantize", "int8"]
    document = cli(*args, "--json").json()
    assert document["weights_a"] == "float32" and document["weights_b"].startswith("int8")
    assert document["endpoint_b"] is None
    human = cli(*args, env={"COLUMNS": "200"})
    assert human.exit_code == 0, human.stderr
    assert f"B = {tiny_model_dir} ({document['weights_b']})" in human.stdout
    assert f"A = {tiny_model_dir} (float32)" in human.stdout
