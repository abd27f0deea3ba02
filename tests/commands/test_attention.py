"""`llmscope attention` in process: options checked before the weights load, the JSON document, colours, the plot
(and a full disk that leaves no half-written one), the help text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers.cli import ANSI_COLOUR, RUNTIME

PROMPT = "The capital of France is Paris. " * 3  # 42 tokens on the tiny tokenizer: past mistral's window of 32


LONG_PROMPT = "The capital of France is Paris. The capital of Italy is Rome. Write an email to Sarah."


@pytest.mark.parametrize("args", [
    ["--layer", "-1"], ["--keys", ","], ["--matrix"], ["--matrix", "--layer", "0"], ["--max-weights", "0"],
    ["--query", ""], ["--plot", "out.txt"], ["--plot", "/no/such/folder/out.png"], ["--layer", "x"]])
def test_bad_options_exit_2_before_loading(cli, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    import llmscope.loading.loader

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(llmscope.loading.loader, "load_model", refuse)
    result = cli("attention", "Hello", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "the model was loaded" not in result.stderr


def test_options_outside_the_model_exit_2(cli, tiny_model_dir: Path) -> None:
    for args, words in ((["--layer", "2"], "--layer 2 is past the model's 2 layers"),
                        (["--layer", "0", "--head", "4"], "--head 4 is past the layer's 4 heads"),
                        (["--query", "99"], "--query 99 is outside the prompt's"),
                        (["--query", "zebra"], "no prompt token reads 'zebra'"),
                        (["--max-weights", "10"], "raise --max-weights")):
        result = cli("attention", PROMPT, "-m", str(tiny_model_dir), *args)
        assert result.exit_code == 2 and words in result.stderr, (args, result.stderr)


def test_json_document(cli, tiny_model_dir: Path) -> None:
    result = cli("attention", PROMPT, "-m", str(tiny_model_dir), "--layer", "1", "--head", "3", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    n = len(document["tokens"])
    assert document["command"] == "attention" and document["attention_implementation"] == "llmscope_invariant"
    assert document["shape"] == [1, 1, n, n] and document["layers"] == [1] and document["heads"] == [3]
    assert len(document["weights"]) == 1 and len(document["weights"][0][0]) == n
    assert all(abs(sum(row) - 1) < 1e-5 for row in document["weights"][0][0])
    assert document["kv_groups"] == [{"kv_head": 0, "heads": [0, 1]}, {"kv_head": 1, "heads": [2, 3]}]
    assert len(document["stats"]) == 8 and {"first_token", "previous_token", "same_token", "look_back",
                                            "entropy"} <= set(document["stats"][0])
    assert [row["head"] for row in document["head_rows"]] == [3]


def test_cli_colours_follow_the_terminal_and_no_color(cli, tiny_model_dir: Path) -> None:
    args = ["attention", "Hello world", "-m", str(tiny_model_dir), "-q"]
    piped = cli(*args)
    forced = cli(*args, env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    no_color = cli(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not ANSI_COLOUR.search(piped.stdout) and not ANSI_COLOUR.search(no_color.stdout)
    assert ANSI_COLOUR.search(forced.stdout)
    numbers = re.compile(r"^\s+0 mean(\s+\d+)+\s", re.M)  # the heat row's percentages
    assert numbers.search(piped.stdout) and numbers.search(no_color.stdout)


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_the_head_grid(cli, tiny_model_dir: Path, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"grid{suffix}"
    result = cli("attention", "Hello world", "-m", str(tiny_model_dir), "--plot", str(path), "-q")
    assert result.exit_code == 0, result.stderr
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data


def test_help_says_which_attention(cli) -> None:
    result = cli("attention", "--help")
    text = " ".join(result.stdout.replace("│", " ").split())
    assert result.exit_code == 0 and "invariant attention" in text and "eager attention" in text


@pytest.mark.parametrize(("args", "words"), [
    (["--layer", "2"], "--layer 2 is past the model's 2 layers"),
    (["--head", "4"], "--head 4 is past the layer's 4 heads"),
    (["--layer", "0", "--head", "9"], "--head 9 is past the layer's 4 heads"),
    (["--query", "zebra"], "no prompt token reads 'zebra'"),
    (["--query", "99"], "--query 99 is outside the prompt's"),
    (["--keys", "zebra"], "--keys: no prompt token reads 'zebra'"),
])
def test_choices_are_checked_before_the_weights_load(cli, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path,
                                                     args: list[str], words: str) -> None:
    import llmscope.loading.loader

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(llmscope.loading.loader, "load_model", refuse)
    result = cli("attention", LONG_PROMPT, "-m", str(tiny_model_dir), *args)
    assert result.exit_code == 2 and words in result.stderr, (args, result.stderr)


def test_plot_cli_refuses_before_loading(cli, monkeypatch: pytest.MonkeyPatch, tiny_models: dict[str, Path],
                                         tmp_path: Path) -> None:

    import llmscope.loading.loader

    folder = tiny_models["llama"]
    config = json.loads((folder / "config.json").read_text())
    wide = tmp_path / "wide"
    wide.mkdir()
    for item in folder.iterdir():
        (wide / item.name).write_bytes(item.read_bytes())
    config.update(num_hidden_layers=11)  # 11 layers x 4 heads = 44 panels
    (wide / "config.json").write_text(json.dumps(config))

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(llmscope.loading.loader, "load_model", refuse)
    result = cli("attention", "Hello", "-m", str(wide), "--plot", str(tmp_path / "grid.png"))
    assert result.exit_code == 2 and "44 panels" in result.stderr, result.stderr


def test_a_full_disk_leaves_no_empty_plot(cli, tiny_model_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    def full_disk(self: Figure, target: object, *args: object, **kwargs: object) -> None:
        with open(target, "wb") as handle:  # type: ignore[arg-type]
            handle.write(b"\x89PNG")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    path = tmp_path / "grid.png"
    result = cli("attention", "Hello world", "-m", tiny_model_dir, "--layer", "0", "--plot", path, "-q")
    assert result.exit_code == RUNTIME
    assert "could not write" in result.stderr and "No space left on device" in result.stderr
    assert list(tmp_path.iterdir()) == []
