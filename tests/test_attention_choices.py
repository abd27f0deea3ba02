"""`attention` choices (issue 21 items 5, 6): --layer, --head, --query and --keys checked against the config and
the tokens before the weights load; --keys; the strongest keys kept when a view is cut; one head across all layers;
a plot that labels its tokens and refuses a grid too small to read."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from llmscope.attention.pick import MAX_PLOT_PANELS, check_against_config, strongest_keys
from llmscope.attention.weights import AttentionSettings, attention_weights
from llmscope.core.errors import UsageError
from llmscope.loading.loader import load_model

PROMPT = "The capital of France is Paris. The capital of Italy is Rome. Write an email to Sarah."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


def _render(result, width: int = 80) -> str:
    from rich.console import Console

    from llmscope.render.attention import show_attention
    from llmscope.render.display import Display

    out = io.StringIO()
    display = Display(out=Console(file=out, width=width, no_color=True, highlight=False, color_system=None))
    show_attention(display, None, result)
    return out.getvalue()


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
    result = cli("attention", PROMPT, "-m", str(tiny_model_dir), *args)
    assert result.exit_code == 2 and words in result.stderr, (args, result.stderr)


def test_keys_by_text_and_position(tiny) -> None:
    n = len(attention_weights(tiny, PROMPT).tokens)
    result = attention_weights(tiny, PROMPT, AttentionSettings(keys="capital,0,-1"))
    texts = [t.text for t in result.tokens]
    capital = [i for i, text in enumerate(texts) if text.strip() == "capital"]
    assert len(capital) == 2 and result.keys == tuple(sorted({0, n - 1, *capital}))
    header = [line for line in _render(result).splitlines() if "capital" in line and "prompt" not in line]
    assert header, _render(result)
    assert "keys chosen with --keys" in _render(result)
    with pytest.raises(UsageError, match="after the query token"):
        attention_weights(tiny, PROMPT, AttentionSettings(keys="-1", query="0"))


def test_a_cut_view_keeps_the_strongest_keys(tiny) -> None:
    from llmscope.render.attention import pick_keys

    result = attention_weights(tiny, PROMPT)
    rows = [row.mean for row in result.query_rows] + [row.strongest for row in result.query_rows]
    shown, cell = pick_keys(result, rows, 30)
    assert cell == 6 and len(shown) == 5 and shown == sorted(shown)
    best = [max(row[key] for row in rows) for key in range(result.query + 1)]
    weakest_shown = min(best[key] for key in shown)
    assert all(best[key] <= weakest_shown for key in range(result.query + 1) if key not in shown)
    plain = _render(result)
    assert "the 8 keys with the largest weights of" in plain or "keys with the largest weights" in plain
    assert max(len(line) for line in plain.splitlines()) <= 80
    assert strongest_keys([(0.1, 0.5, 0.2, 0.9)], [0, 1, 2, 3], 2) == [1, 3]


def test_one_head_across_every_layer(tiny) -> None:
    result = attention_weights(tiny, PROMPT, AttentionSettings(head=1))
    n = len(result.tokens)
    assert result.layers == (0, 1) and result.heads == (1,) and result.shape == (2, 1, 1, n)
    every = attention_weights(tiny, PROMPT, AttentionSettings(all_queries=True))
    assert result.weights[1][0][0] == pytest.approx(every.weights[1][1][n - 1], abs=1e-6)
    plain = _render(result)
    assert "layer by layer, head 1" in plain and "head 1 in every layer" in plain
    assert len(re.findall(r"^\s+[01]\s+H1\s", plain, re.M)) == 2 and " mean " not in plain


def test_plot_refuses_an_unreadable_grid_and_labels_tokens(tiny, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="270 panels"):
        check_against_config(AttentionSettings(), 30, 9, plot=True)
    check_against_config(AttentionSettings(head=2), 30, 9, plot=True)  # one head in 30 layers: 30 panels
    check_against_config(AttentionSettings(layer=3), 30, 9, plot=True)
    assert MAX_PLOT_PANELS >= 30
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from llmscope.render.attention import label_axes

    result = attention_weights(tiny, "The capital of France is Paris.", AttentionSettings(all_queries=True))
    figure, axis = pyplot.subplots()
    try:
        label_axes(axis, result, bottom=True, left=True, font=5)
        keys = [label.get_text() for label in axis.get_xticklabels()]
        queries = [label.get_text() for label in axis.get_yticklabels()]
    finally:
        pyplot.close(figure)
    assert "capital" in keys and "capital" in queries and len(keys) == len(result.tokens)


def test_plot_cli_refuses_before_loading(cli, monkeypatch: pytest.MonkeyPatch, tiny_models: dict[str, Path],
                                         tmp_path: Path) -> None:
    import json

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


def test_layer_and_head_are_checked_from_config_json_without_transformers(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    import subprocess
    import sys

    from llmscope.attention.pick import counts_from_config_file

    assert counts_from_config_file(tiny_model_dir / "config.json") == (2, 4)
    assert counts_from_config_file(tmp_path / "missing.json") is None
    (tmp_path / "odd.json").write_text('{"model_type": "llama"}')
    assert counts_from_config_file(tmp_path / "odd.json") is None  # then transformers reads the config
    code = ("import sys\nfrom llmscope.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n"
            "    print('EXIT', exit.code, [m for m in ('torch', 'transformers') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code, "attention", "Hello", "-m", str(tiny_model_dir), "--layer",
                             "5"], capture_output=True, text=True)
    assert "EXIT 2 []" in result.stdout and "--layer 5 is past the model's 2 layers" in result.stderr, result
