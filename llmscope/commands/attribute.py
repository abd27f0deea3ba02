"""The attribute command: which input tokens made the model say its tokens (one prompt, or --batch).
It parses and checks options, then calls llmscope.attribution and the renderer; it computes nothing itself."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmscope.attribution.settings import DEFAULT_MAX_SECONDS
from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    HtmlOpt,
    ModelOpt,
    OptionalPromptArg,
    SystemOpt,
    command,
    example,
    html_target,
    load,
    prompt_or_batch,
    read_batch,
    warn_all,
    write_batch,
)
from llmscope.core.command_settings import PromptSettings
from llmscope.core.output_files import PLOT_FILE


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}", "--steps", "4", "--target", " again")
@grouped(load=True, batch=True)
def attribute(
    prompt: OptionalPromptArg = None,
    model: ModelOpt = None,
    method: Annotated[list[str] | None, typer.Option(
        "--method", metavar="METHOD",
        help="occlusion | input-x-gradient | integrated-gradients | attention-rollout (ig, ixg, rollout); "
        "repeat it or give a comma list. Default: all four, side by side.", show_default=False)] = None,
    target: Annotated[str | None, typer.Option(
        "--target", metavar="TEXT",
        help="Attribute this continuation instead of the model's own next token (each of its tokens, "
        "teacher-forced), e.g. ' Paris'.", show_default=False)] = None,
    new_tokens: Annotated[int, typer.Option(
        "--new-tokens", "-n", metavar="N",
        help="Attribute the model's next N greedy tokens (a targets x inputs matrix).")] = 1,
    contrast: Annotated[str | None, typer.Option(
        "--contrast", metavar="TEXT",
        help="Attribute log p(target) - log p(this): why the target and not this (one token per "
        "target token).", show_default=False)] = None,
    occlude_with: Annotated[str | None, typer.Option(
        "--occlude-with", metavar="TOKEN", help="Occlusion replaces each input token with TOKEN instead of leaving it "
        "out.", show_default=False)] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", metavar="N",
        help="Integrated-gradients steps (Gauss-Legendre points). Default: 32, doubled up to 256 until "
        "the completeness error is under 1%.", show_default=False)] = None,
    baseline: Annotated[str, typer.Option(
        "--baseline", metavar="mean|eos|zero",
        help="mean | eos | zero: the integrated-gradients baseline embedding (the vocabulary's mean, "
        "EOS's, zeros) of every input but the first (held: it is the attention sink).")] = "mean",
    top: Annotated[int, typer.Option("--top", metavar="N", help="Inputs ranked per target in the table.")] = 5,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", metavar="N",
        help="Refuse prompts whose input + target tokens exceed this (gradient methods cost a "
        "forward and backward pass per step and token).")] = 256,
    max_memory: Annotated[str | None, typer.Option(
        "--max-memory", metavar="SIZE", help="The most memory the process may hold (e.g. 8GB): integrated "
        "gradients runs fewer steps per pass to stay under it, and a method that cannot fit is refused before it "
        "runs. Default: what the process holds plus the memory free.", show_default=False)] = None,
    max_time: Annotated[float, typer.Option(
        "--max-time", metavar="SECONDS", help="Refuse a run whose methods are estimated to take longer (passes x "
        "their work, timed from one real forward pass); integrated gradients' automatic steps grow only as far as "
        "it allows. The plan is printed before the methods run.")] = DEFAULT_MAX_SECONDS,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE.png|svg", help="Also write the targets x inputs heatmaps, one per method (.png or "
        ".svg).", show_default=False), PLOT_FILE] = None,
    chat: Annotated[bool | None, typer.Option(
        "--chat/--no-chat", help="Apply the tokenizer's chat template (default: off, the raw prompt; on with "
        "--system).", show_default=False)] = None,
    system: SystemOpt = None,
    html: HtmlOpt = None,
    *,
    shared: Shared,
) -> None:
    """Show which input tokens made the model say its next token (or --target, -n N): occlusion, input x gradient,
    integrated gradients (with its completeness check) and attention rollout, side by side."""
    with command(shared.output.quiet) as display:
        from llmscope.attribution.settings import AttributeCommand, AttributionSettings, method_list
        from llmscope.loading.memory import parse_size

        batch_settings = shared.batch.settings(8)
        settings = AttributeCommand(
            attribution=AttributionSettings(
                methods=method_list(method), target=target, new_tokens=new_tokens, contrast=contrast,
                occlude_with=occlude_with, steps=steps, baseline=baseline, max_tokens=max_tokens, top=top,
                max_memory=parse_size("--max-memory", max_memory), max_seconds=max_time),
            prompt=PromptSettings(chat=chat if chat is not None else (True if system is not None else None),
                                  system=system),
            model=shared.load.settings(model),
            mode=shared.output.mode(batch=batch_settings is not None),
            plot=plot, batch=batch_settings)
        text = prompt_or_batch(prompt, batch_settings)
        html_path = html_target(html)
        display.mode = settings.mode
        warn_all(display, settings.warnings())
        items = read_batch(batch_settings)
        if contrast is not None:
            _check_targets(settings)  # the tokenizer alone: a mismatch is found before the model loads
        _run_attribute(display, settings, text, items, html_path)


def _check_targets(settings: Any) -> None:
    from llmscope.attribution.attribute import check_contrast
    from llmscope.loading.loader import load_tokenizer, resolve_model_spec

    spec = resolve_model_spec(settings.model.model)
    check_contrast(load_tokenizer(spec, settings.model.trust_remote_code), settings.attribution)


def _run_attribute(display: Any, settings: Any, text: str | None, items: list[Any] | None,
                   html_path: Any = None) -> None:
    import torch

    with torch.inference_mode(False):  # gradients need tensors made outside inference mode, whatever the caller did
        _attribute_loaded(display, settings, text, items, html_path)


def _attribute_loaded(display: Any, settings: Any, text: str | None, items: list[Any] | None,
                      html_path: Any) -> None:
    from llmscope.attribution.attribute import attribute_encoded, plan_attribution, run_attribution
    from llmscope.generation.prompts import encode_prompt
    from llmscope.render import attribution as show
    from llmscope.render.html import save_html

    loaded = load(display, settings.model)
    chat = bool(settings.prompt.chat)
    options = settings.attribution

    def encode(prompt: str) -> Any:
        return encode_prompt(loaded, prompt, chat=chat, system=settings.prompt.system,
                             new_tokens=options.new_tokens, budget_option="-n")

    if items is None:
        plan = plan_attribution(loaded, encode(text), options)
        display.status(f"about to run: {show.cost_line(plan.cost)}")
        result = run_attribution(plan)
        show.show_attribution(display, loaded.info, result, top=options.top, plot=settings.plot)
        save_html(display, html_path, "attribute", loaded.info, result)
        return
    from llmscope.cli.batch import run_batch

    outcomes = run_batch(items, 1, prepare=lambda item: encode(item.prompt),
                         run_chunk=lambda encoded: [attribute_encoded(loaded, e, options) for e in encoded])

    def write(result: Any, keys: dict[str, Any]) -> None:
        show.show_attribution(display, loaded.info, result, top=options.top, **keys)
        save_html(display, html_path, "attribute", loaded.info, result, keys)

    write_batch(display, items, outcomes, write)
