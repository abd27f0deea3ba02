"""The attention command: where each head looks, from one forward pass, with --layer/--head/--query/--keys checked
against the config and the tokenizer before the weights load. It calls llmscope.attention and the renderer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    ChatOpt,
    HtmlOpt,
    ModelOpt,
    PromptArg,
    SystemOpt,
    command,
    example,
    html_target,
    load,
    read_prompt,
)
from llmscope.core.command_settings import ModelSettings, PromptSettings
from llmscope.core.output_files import PLOT_FILE

if TYPE_CHECKING:
    from llmscope.attention.pick import AttentionSettings
    from llmscope.render.display import Display


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}")
@grouped(load=True)
def attention(
    prompt: PromptArg,
    model: ModelOpt = None,
    query: Annotated[str | None, typer.Option(
        "--query", metavar="TOKEN",
        help="The query token: a position (0, 5, -1) or its text ('it'). Default: the last token.",
        show_default=False)] = None,
    layer: Annotated[int | None, typer.Option(
        "--layer", "-l", metavar="N", help="Show every head of this layer (from 0), grouped by the KV head they share.",
        show_default=False)] = None,
    head: Annotated[int | None, typer.Option(
        "--head", metavar="N",
        help="Only this head (from 0): with --layer, that layer's head; alone, the head in every layer.",
        show_default=False)] = None,
    keys: Annotated[str | None, typer.Option(
        "--keys", metavar="TOKENS",
        help="The key tokens to show, by text or position: Mary,John or 0,5,-1 (default: all that fit, "
        "else the strongest).", show_default=False)] = None,
    matrix: Annotated[bool, typer.Option(
        "--matrix", help="With --layer and --head: the whole tokens × tokens pattern, fitted to the terminal.")
    ] = False,
    max_weights: Annotated[int, typer.Option(
        "--max-weights", metavar="N",
        help="Most attention weights to keep (layers × heads × queries × keys); one layer's heads × "
        "n² inside the forward may reach 16 times this.")] = 4_000_000,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE.png|svg", help="Also draw the head grid of the selected layers as an image (needs "
        "matplotlib: pip install 'llmscope[plot]').", show_default=False), PLOT_FILE] = None,
    chat: ChatOpt = None,
    system: SystemOpt = None,
    html: HtmlOpt = None,
    *,
    shared: Shared,
) -> None:
    """Show where each attention head looks, from one forward pass over PROMPT.

    On the CPU the weights are those of llmscope's invariant attention, the one every command computes with; elsewhere
    the model runs with transformers' eager attention (SDPA and flash kernels return no weights). Only the
    selected layers' weights are kept. Default: for the query token, one heat row per layer (mean over heads and the
    strongest head) and the head-roles table.
    """
    with command(shared.output.quiet) as display:
        display.mode = shared.output.mode()
        from pathlib import Path

        from llmscope.attention.weights import AttentionSettings, attention_weights
        from llmscope.render import attention as show

        models = shared.load.settings(model)
        settings = AttentionSettings(layer=layer, head=head, query=query, keys=keys, matrix=matrix,
                                     all_queries=plot is not None or html is not None, max_weights=max_weights,
                                     chat=PromptSettings(chat=chat, system=system).applies_template, system=system)
        for message in settings.ignored():
            display.warning(message)
        plot_path = Path(plot) if plot is not None else None
        html_path = html_target(html)
        text = read_prompt(prompt)
        check_attention_choices(display, models, settings, text, plot_path is not None)
        loaded = load(display, models)
        result = attention_weights(loaded, text, settings)
        show.show_attention(display, loaded.info, result, matrix=matrix)
        n = len(result.tokens)
        display.status(f"one {result.attention_implementation} forward over {n} token{'s' if n != 1 else ''} in "
                       f"{result.forward_seconds:.2f} s")
        if plot_path is not None:
            show.write_plot(result, plot_path)
            display.status(f"wrote {plot_path}")
        from llmscope.render.html import save_html

        save_html(display, html_path, "attention", loaded.info, result)


def check_attention_choices(display: Display, models: ModelSettings, settings: AttentionSettings, text: str,
                            plot: bool) -> None:
    """--layer, --head and a plot's size against the config, --query and --keys against the prompt's tokens: all
    before the weights load (the config and the tokenizer take a fraction of the time)."""
    from pathlib import Path

    from llmscope.attention.pick import (
        check_against_config,
        counts_from_config_file,
        layer_and_head_counts,
        resolve_keys,
        resolve_query,
    )
    from llmscope.loading.loader import gguf_cache_dir, load_config, load_tokenizer, resolve_model_spec
    from llmscope.loading.tokenization import prompt_ids

    spec = resolve_model_spec(models.model)
    if settings.layer is not None or settings.head is not None or plot:
        folder = gguf_cache_dir(spec) if spec.is_gguf else Path(spec.location) if spec.kind == "folder" else None
        counts = counts_from_config_file(folder / "config.json") if folder is not None else None
        if counts is None:
            with display.spinner(f"reading the config of {spec.name}"):
                counts = layer_and_head_counts(load_config(spec, models.trust_remote_code))
        check_against_config(settings, *counts, plot=plot)
    if settings.needs_tokens:
        from llmscope.attention.weights import AttentionToken

        with display.spinner(f"reading the tokenizer of {spec.name}"):
            tokenizer = load_tokenizer(spec, models.trust_remote_code, light=not settings.chat)
        ids = prompt_ids(tokenizer, text, chat=settings.chat, system=settings.system)[1]
        if ids:
            tokens = [AttentionToken(i, t, tokenizer.decode([t])) for i, t in enumerate(ids)]
            resolve_keys(settings, tokens, resolve_query(settings, tokens))
