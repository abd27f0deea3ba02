"""Commands that look at a model itself: attention, architecture, env and cache.
They parse and check options, then call the library and the renderer; they compute nothing themselves."""

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
from llmscope.core.command_settings import ModelSettings, PromptSettings, quantize_from
from llmscope.core.errors import UsageError

if TYPE_CHECKING:
    from llmscope.attention.pick import AttentionSettings
    from llmscope.render.display import Display

# ------------------------------------------------------------------------------------ attention


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}")
@grouped(load=True)
def attention(
    prompt: PromptArg,
    model: ModelOpt = None,
    query: Annotated[str | None, typer.Option(
        "--query", help="The query token: a position (0, 5, -1) or its text ('it'). Default: the last token.",
        show_default=False)] = None,
    layer: Annotated[int | None, typer.Option(
        "--layer", "-l", help="Show every head of this layer (from 0), grouped by the KV head they share.",
        show_default=False)] = None,
    head: Annotated[int | None, typer.Option(
        "--head", help="Only this head (from 0): with --layer, that layer's head; alone, the head in every layer.",
        show_default=False)] = None,
    keys: Annotated[str | None, typer.Option(
        "--keys", help="The key tokens to show, by text or position: Mary,John or 0,5,-1 (default: all that fit, "
        "else the strongest).", show_default=False)] = None,
    matrix: Annotated[bool, typer.Option(
        "--matrix", help="With --layer and --head: the whole tokens × tokens pattern, fitted to the terminal.")
    ] = False,
    max_weights: Annotated[int, typer.Option(
        "--max-weights", help="Most attention weights to keep (layers × heads × queries × keys); one layer's heads × "
        "n² inside the forward may reach 16 times this.")] = 4_000_000,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE.png|svg", help="Also draw the head grid of the selected layers as an image (needs "
        "matplotlib: pip install 'llmscope[plot]').", show_default=False)] = None,
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
        if plot_path is not None:
            from llmscope.render.benchchart import check_plot_path, require_matplotlib

            check_plot_path(plot_path)
            require_matplotlib()
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


# ------------------------------------------------------------------------------------ architecture


@app.command(epilog=EXIT_CODES_HELP)
@example("-m", "{model}")
@grouped(load=True)
def architecture(
    model: ModelOpt = None,
    weights: Annotated[bool, typer.Option(
        "--weights", help="Load the real model for its dtypes and devices (default: config only, no weights).")
    ] = False,
    depth: Annotated[int | None, typer.Option(
        "--depth", help="Show the module tree this many levels deep.", show_default=False)] = None,
    context: Annotated[str | None, typer.Option(
        "--context", help="Memory plan up to this many tokens: 4096, 32k, 128k (default: the model's context).",
        show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Memory plan for this many sequences at once (B).")] = 1,
    kv_dtype: Annotated[str | None, typer.Option(
        "--kv-dtype", help="KV cache dtype for the plan: float32 | bfloat16 | float16 | float8 | int8 | int4 "
        "(default: the weights' dtype).", show_default=False)] = None,
    gpu_memory: Annotated[str | None, typer.Option(
        "--gpu-memory", help="Check the plan against this GPU size, e.g. 80GB (GB = GiB, as GPU makers mean it; "
        "default: 24, 40 and 80 GiB).", show_default=False)] = None,
    *,
    shared: Shared,
) -> None:
    """Describe a model from its config alone: sizes, attention per layer type, parameters (active ones for MoE),
    KV cache, a memory plan (weights + KV + state at --context x --batch-size; --dtype sets the weights' dtype)
    and the module tree."""
    with command(shared.output.quiet) as display:
        display.mode = shared.output.mode()
        from llmscope.architecture.moduletree import check_depth
        from llmscope.architecture.planner import PlannerSettings

        check_depth(depth)

        plan = PlannerSettings.from_options(context, batch_size, kv_dtype, gpu_memory,
                                            shared.load.dtype if not weights else "auto")
        from llmscope.architecture import describe as arch
        from llmscope.render import architecture as show
        from llmscope.render.display import human_count

        if weights:
            loaded = load(display, shared.load.settings(model))
            report = arch.describe_loaded_model(loaded, depth, plan)
            info = loaded.info
        else:
            from llmscope.core.model_info import ModelInfo
            from llmscope.loading.loader import resolve_model_spec

            if (shared.load.device, shared.load.device_map) != ("auto", None):
                display.warning("--device and --device-map only matter with --weights")
            spec = resolve_model_spec(model)
            with display.spinner(f"reading the config of {spec.name}"):
                report = arch.describe_config_model(spec, depth, shared.load.trust_remote_code, plan,
                                                    quantize_from(shared.load.quantize))
            info = ModelInfo(model=spec.name, source=spec.kind, device="meta", dtype=report.summary.dtype,
                             parameters=report.parameters.total)
            display.status(f"built {report.summary.model_class} from the config on the meta device (no weights): "
                           f"{human_count(report.parameters.total)} parameters")
        show.show_architecture(display, info, report)


@app.command("env", epilog=EXIT_CODES_HELP)
@example()
@grouped()
def env_command(*, shared: Shared) -> None:
    """Versions, CUDA/MPS and GPUs, cache folders and the default model: paste it into bug reports."""
    with command(shared.output.quiet) as display:
        display.mode = shared.output.mode()
        from llmscope.render.environment import show_environment
        from llmscope.system.environment import collect_environment

        show_environment(display, collect_environment())


@app.command("cache", epilog=EXIT_CODES_HELP)
@example()
@grouped()
def cache_command(
    clear: Annotated[bool, typer.Option("--clear", help="Remove the entries named, or every entry.")] = False,
    entries: Annotated[list[str] | None, typer.Argument(
        help="Entries to clear: a name (or its first characters) or a source file name.", show_default=False)] = None,
    *,
    shared: Shared,
) -> None:
    """List the GGUF conversion cache (size, source file, last use, state) or clear it."""
    with command(shared.output.quiet) as display:
        display.mode = shared.output.mode()
        from llmscope.loading import conversion_cache
        from llmscope.render.cache import show_cache

        if entries and not clear:
            raise UsageError("entry names are only used with --clear", hint="llmscope cache --clear NAME")
        report = conversion_cache.clear(tuple(entries or ())) if clear else conversion_cache.list_entries(check=True)
        show_cache(display, report)
