"""`llmscope attention`: weights that are real probabilities under the causal and sliding-window masks on every tiny
architecture, equal to softmax(QKᵀ/√d + mask) recomputed here on the tiny llama, KV grouping, head statistics, the
memory guard, options refused before loading, the views at 80 columns, JSON and the plot; a pinned fact on SmolLM2."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest

from llmscope.attention.weights import AttentionSettings, attention_weights, masked
from llmscope.core.errors import UsageError
from llmscope.loading.loader import load_model

PROMPT = "The capital of France is Paris. " * 3  # 42 tokens on the tiny tokenizer: past mistral's window of 32
SEED_SENTENCE = "The dog chased the squirrel because it"
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-9]|4[0-9])[0-9;]*m")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


def _tensor(result):
    import torch

    return torch.tensor(result.weights)  # [layers, heads, queries, keys]


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


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


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


@pytest.mark.parametrize("args", [["--keys", ","], ["--plot", "out.txt"], ["--max-weights", "0"]])
def test_bad_options_are_refused_without_importing_torch(args: list[str]) -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom llmscope.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as exit:\n"
            "    print('EXIT', exit.code, [m for m in ('torch', 'transformers') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code, "attention", "Hello", *args], capture_output=True, text=True)
    assert "EXIT 2 []" in result.stdout, (result.stdout, result.stderr)


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


def _render(result, width: int, colour: bool, matrix: bool = False) -> str:
    from rich.console import Console

    from llmscope.render.attention import show_attention
    from llmscope.render.display import Display

    out = io.StringIO()
    display = Display(out=Console(file=out, width=width, force_terminal=colour, no_color=not colour,
                                  highlight=False, color_system="truecolor" if colour else None))
    show_attention(display, None, result, matrix=matrix)
    return out.getvalue()


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


def test_cli_colours_follow_the_terminal_and_no_color(cli, tiny_model_dir: Path) -> None:
    args = ["attention", "Hello world", "-m", str(tiny_model_dir), "-q"]
    piped = cli(*args)
    forced = cli(*args, env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    no_color = cli(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not ANSI_COLOUR.search(piped.stdout) and not ANSI_COLOUR.search(no_color.stdout)
    assert ANSI_COLOUR.search(forced.stdout)
    numbers = re.compile(r"^\s+0 mean(\s+\d+)+\s", re.M)  # the heat row's percentages
    assert numbers.search(piped.stdout) and numbers.search(no_color.stdout)


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


@pytest.mark.slow
def test_it_looks_at_the_squirrel_on_smollm2(embedded_model) -> None:
    """Measured: at layer 27, head 2, "it" puts 0.424 on " squirrel" (its top token), 0.37 on "The", little on dog."""
    result = attention_weights(embedded_model, SEED_SENTENCE, AttentionSettings(layer=27, query="it"))
    assert [t.token_id for t in result.tokens] == [504, 2767, 45360, 260, 27721, 975, 357]
    assert result.query == 6 and result.shape == (1, 9, 7, 7)
    assert [group.heads for group in result.kv_groups] == [(0, 1, 2), (3, 4, 5), (6, 7, 8)]
    head2 = result.head_rows[2]
    assert (head2.top[0].position, head2.top[0].text) == (4, " squirrel")
    assert head2.top[0].weight == pytest.approx(0.4241, abs=0.005)
    assert result.weights[0][2][6][1] < 0.1  # " dog"
    assert result.head_rows[3].top[0].text == " squirrel"  # the next KV group's first head agrees
