"""Attention weights on tiny models: rows are distributions under the causal and sliding masks, equal to the softmax
of rotated queries and keys; key choices, head and layer views, the text views and the plot's checks."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest
from helpers.cli import ANSI_COLOUR

from llmscope.attention.pick import MAX_PLOT_PANELS, check_against_config, strongest_keys
from llmscope.attention.weights import AttentionSettings, attention_weights, masked
from llmscope.core.errors import UsageError
from llmscope.loading.loader import load_model

PROMPT = "The capital of France is Paris. " * 3  # 42 tokens on the tiny tokenizer: past mistral's window of 32


def _tensor(result):
    import torch

    return torch.tensor(result.weights)  # [layers, heads, queries, keys]


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _render(result, width: int, colour: bool, matrix: bool = False) -> str:
    from rich.console import Console
    from rich.style import Style

    from llmscope.render.attention import show_attention
    from llmscope.render.display import Display

    # Rich keeps a parsed style's colour codes from the first console that drew it: one drawn earlier in this process
    # by a 16-colour console would come out in 16 colours here. Parse afresh.
    Style.parse.cache_clear()
    Style._add.cache_clear()
    out = io.StringIO()
    display = Display(out=Console(file=out, width=width, force_terminal=colour, no_color=not colour,
                                  highlight=False, color_system="truecolor" if colour else None))
    show_attention(display, None, result, matrix=matrix)
    return out.getvalue()


LONG_PROMPT = "The capital of France is Paris. The capital of Italy is Rome. Write an email to Sarah."


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2", "phi3", "mistral"])
def test_rows_are_distributions_under_the_masks(tiny_models: dict[str, Path], name: str) -> None:
    loaded = load_model(str(tiny_models[name]), device="cpu")
    before = loaded.model.config._attn_implementation
    result = attention_weights(loaded, PROMPT, AttentionSettings(all_queries=True))
    config = loaded.model.config
    heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    n = len(result.tokens)
    assert n == len(loaded.tokenizer(PROMPT)["input_ids"]) == 42
    assert result.shape == (2, heads, n, n) and result.layers == (0, 1) and result.query_positions == tuple(range(n))
    weights = _tensor(result)
    assert weights.sum(-1).sub(1).abs().max() < 1e-5  # every query row sums to 1
    assert float(weights.triu(1).abs().max()) == 0.0  # nothing above the diagonal
    window = config.sliding_window if name in ("mistral", "phi3") else None
    assert result.windows == (window, window)
    if name == "mistral":  # window 32: a query sees itself and the 31 tokens before it
        for query in range(n):
            for key in range(query + 1):
                if query - key >= 32:
                    assert float(weights[:, :, query, key].abs().max()) == 0.0
                else:
                    assert float(weights[:, :, query, key].min()) > 0.0
        assert masked(40, 8, 32) == "window" and masked(40, 9, 32) is None and masked(3, 4, None) == "future"
    assert len(result.kv_groups) == kv
    assert all(len(group.heads) == heads // kv for group in result.kv_groups)
    assert sorted(h for group in result.kv_groups for h in group.heads) == list(range(heads))
    assert result.layout == {1: "multi-query", heads: "multi-head"}.get(kv, "grouped-query")
    assert loaded.model.config._attn_implementation == before  # switched (to eager, if needed) for the pass only


def test_weights_equal_softmax_of_rotated_queries_and_keys(tiny) -> None:
    """softmax(QKᵀ/√d + causal mask) from the layer's own q_proj / k_proj outputs, with RoPE applied here."""
    import torch

    config = tiny.model.config
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    dim = config.hidden_size // heads
    theta = config.rope_parameters["rope_theta"]
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for index, layer in enumerate(tiny.model.model.layers):
        for part in ("q_proj", "k_proj"):
            hooks.append(getattr(layer.self_attn, part).register_forward_hook(
                lambda _m, _i, out, key=f"{index}.{part}": captured.__setitem__(key, out.detach().clone())))
    try:
        result = attention_weights(tiny, PROMPT, AttentionSettings(all_queries=True))
    finally:
        for hook in hooks:
            hook.remove()
    n = len(result.tokens)
    positions = torch.arange(n, dtype=torch.float32)
    frequencies = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.outer(positions, frequencies)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    mask = torch.full((n, n), float("-inf")).triu(1)
    weights = _tensor(result)
    for layer in range(2):
        q = captured[f"{layer}.q_proj"][0].view(n, heads, dim).transpose(0, 1)
        k = captured[f"{layer}.k_proj"][0].view(n, kv, dim).transpose(0, 1)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv, dim=0)  # query head h reads KV head h // (heads / kv)
        expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim) + mask, dim=-1)
        assert torch.allclose(weights[layer], expected, atol=1e-5), float((weights[layer] - expected).abs().max())
    assert [group.heads for group in result.kv_groups] == [(0, 1), (2, 3)]  # 4 heads / 2 KV heads


def test_query_rows_head_rows_and_statistics(tiny) -> None:
    import torch

    result = attention_weights(tiny, PROMPT, AttentionSettings(layer=1, query="Par"))
    n = len(result.tokens)
    query = max(t.position for t in result.tokens if t.text.strip() == "Par")
    assert result.query == query and result.layers == (1,) and result.shape == (1, 4, n, n)
    full = _tensor(result)[0]  # [heads, n, n]
    row = result.query_rows[0]
    mean = full[:, query, : query + 1].mean(0)
    assert torch.allclose(torch.tensor(row.mean), mean, atol=1e-6)
    assert [a.position for a in row.top] == torch.topk(mean, 3).indices.tolist()
    beyond_first = full[:, query, 1: query + 1].amax(-1)
    assert row.strongest_head == int(beyond_first.argmax())
    for head_row in result.head_rows:
        values = full[head_row.head, query, : query + 1]
        assert head_row.entropy == pytest.approx(float(-(values * values.log()).sum()), abs=1e-5)
        assert head_row.top[0].position == int(values.argmax())
        assert head_row.kv_head == head_row.head // 2
    queries = range(2, n)
    for stats in [s for s in result.stats if s.layer == 1]:
        w = full[stats.head]
        assert stats.first_token == pytest.approx(sum(float(w[q, 0]) for q in queries) / len(queries), abs=1e-6)
        assert stats.previous_token == pytest.approx(sum(float(w[q, q - 1]) for q in queries) / len(queries), abs=1e-6)
        assert stats.same_token == pytest.approx(sum(float(w[q, q]) for q in queries) / len(queries), abs=1e-6)
        back = sum(sum(float(w[q, k]) * (q - k) for k in range(q + 1)) for q in queries) / len(queries)
        assert stats.look_back == pytest.approx(back, abs=1e-4)
    assert len(result.stats) == 2 * 4
    sink = next(role for role in result.roles if role.name == "sink")
    assert sink.heads[0].first_token == max(s.first_token for s in result.stats)
    assert sink.over_half == sum(1 for s in result.stats if s.first_token > 0.5)
    by_position = attention_weights(tiny, PROMPT, AttentionSettings(query="-2"))
    assert by_position.query == n - 2 and by_position.shape == (2, 4, 1, n)


def test_memory_guard_names_the_option(tiny) -> None:
    n = 42
    with pytest.raises(UsageError, match=r"2 layer\(s\) x 4 head\(s\) x 1 query x 42 keys = 336 .*--max-weights"):
        attention_weights(tiny, PROMPT, AttentionSettings(max_weights=335))
    with pytest.raises(UsageError, match=r"2 layer\(s\) x 4 head\(s\) x 42 queries x 42 keys = 14,112 .*--max-we"):
        attention_weights(tiny, PROMPT, AttentionSettings(all_queries=True, max_weights=14_111))
    transient = 4 * n * n  # 7,056: one layer's eager weights, allowed up to 16 x --max-weights
    with pytest.raises(UsageError, match=rf"4 heads x 42² = {transient:,} weights per layer, over 16 x --max-weights"):
        attention_weights(tiny, PROMPT, AttentionSettings(max_weights=transient // 16 - 1))
    assert attention_weights(tiny, PROMPT, AttentionSettings(max_weights=transient // 16)).shape == (2, 4, 1, n)
    full = attention_weights(tiny, PROMPT, AttentionSettings(all_queries=True, max_weights=14_112))
    assert full.shape == (2, 4, n, n)


def test_settings_refuse_bad_values() -> None:
    for bad in (dict(layer=-1), dict(head=-1, layer=0), dict(head=-1), dict(matrix=True), dict(matrix=True, layer=0),
                dict(max_weights=0), dict(query="  "), dict(keys=" , ")):
        with pytest.raises(UsageError):
            AttentionSettings(**bad)
    assert AttentionSettings(query="-1").query_position == -1 and AttentionSettings(query="it").query_position is None
    assert AttentionSettings(matrix=True, layer=0, head=0, query="it").ignored()


def test_views_fit_80_columns_with_numbers_with_and_without_colour(tiny) -> None:
    default = attention_weights(tiny, PROMPT)
    layer = attention_weights(tiny, PROMPT, AttentionSettings(layer=0))
    for result in (default, layer):
        plain = _render(result, 80, colour=False)
        assert not ANSI_COLOUR.search(plain) and max(len(line) for line in plain.splitlines()) <= 80
        assert "cut to fit 80 columns: the " in plain  # 42 keys do not fit: the ones with the largest weights
        assert "llmscope's invariant attention" in plain and "% attention:" in plain
    coloured = _render(default, 80, colour=True)
    assert "48;2;68;1;84" in coloured  # the darkest viridis colour (#440154) as a background
    row = default.query_rows[0]
    assert re.search(rf"^\s+0 mean .*{round(row.mean[-1] * 100)}\s+\S", _render(default, 80, False), re.M)
    grouped = _render(layer, 80, colour=False)
    assert re.search(r"^\s+0\s+H0 ", grouped, re.M) and re.search(r"^\s+1\s+H2 ", grouped, re.M)
    assert "groups of 2 heads share a KV head" in grouped


def test_matrix_draws_the_causal_mask_and_the_window(tiny_models: dict[str, Path]) -> None:
    loaded = load_model(str(tiny_models["mistral"]), device="cpu")
    result = attention_weights(loaded, PROMPT, AttentionSettings(layer=1, head=2, matrix=True))
    wide = _render(result, 250, colour=False, matrix=True)
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r"^\s*(\d+) \S+\s.*$", wide, re.M)}
    cells_41 = rows[41].split()[2:]
    assert cells_41[:10] == ["░"] * 10 and "·" not in cells_41  # keys 0-9 lie outside the window of 32
    assert rows[0].split()[2:] == [str(round(result.weights[0][0][0][0] * 100))] + ["·"] * 41
    assert "outside the sliding window of 32" in wide and "cut to fit" not in wide
    narrow = _render(result, 80, colour=False, matrix=True)
    assert max(len(line) for line in narrow.splitlines()) <= 80 and "cut to fit 80 columns: positions 1–" in narrow


def test_keys_by_text_and_position(tiny) -> None:
    n = len(attention_weights(tiny, LONG_PROMPT).tokens)
    result = attention_weights(tiny, LONG_PROMPT, AttentionSettings(keys="capital,0,-1"))
    texts = [t.text for t in result.tokens]
    capital = [i for i, text in enumerate(texts) if text.strip() == "capital"]
    assert len(capital) == 2 and result.keys == tuple(sorted({0, n - 1, *capital}))
    shown = _render(result, 80, colour=False)
    header = [line for line in shown.splitlines() if "capital" in line and "prompt" not in line]
    assert header, shown
    assert "keys chosen with --keys" in shown
    with pytest.raises(UsageError, match="after the query token"):
        attention_weights(tiny, LONG_PROMPT, AttentionSettings(keys="-1", query="0"))


def test_a_cut_view_keeps_the_strongest_keys(tiny) -> None:
    from llmscope.render.attention import pick_keys

    result = attention_weights(tiny, LONG_PROMPT)
    rows = [row.mean for row in result.query_rows] + [row.strongest for row in result.query_rows]
    shown, cell = pick_keys(result, rows, 30)
    assert cell == 6 and len(shown) == 5 and shown == sorted(shown)
    best = [max(row[key] for row in rows) for key in range(result.query + 1)]
    weakest_shown = min(best[key] for key in shown)
    assert all(best[key] <= weakest_shown for key in range(result.query + 1) if key not in shown)
    plain = _render(result, 80, colour=False)
    assert "the 8 keys with the largest weights of" in plain or "keys with the largest weights" in plain
    assert max(len(line) for line in plain.splitlines()) <= 80
    assert strongest_keys([(0.1, 0.5, 0.2, 0.9)], [0, 1, 2, 3], 2) == [1, 3]


def test_one_head_across_every_layer(tiny) -> None:
    result = attention_weights(tiny, LONG_PROMPT, AttentionSettings(head=1))
    n = len(result.tokens)
    assert result.layers == (0, 1) and result.heads == (1,) and result.shape == (2, 1, 1, n)
    every = attention_weights(tiny, LONG_PROMPT, AttentionSettings(all_queries=True))
    assert result.weights[1][0][0] == pytest.approx(every.weights[1][1][n - 1], abs=1e-6)
    plain = _render(result, 80, colour=False)
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
