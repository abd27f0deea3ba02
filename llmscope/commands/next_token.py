"""The next-token command: the distribution over the token after a prompt (top-k, greedy steps, sampler view, logit
lens), locally or through --endpoint. It parses and checks options, then calls llmscope.inspection and the renderer."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    BatchSizeOpt,
    ChatOpt,
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
from llmscope.commands._endpoint import endpoint_settings
from llmscope.core.command_settings import PromptSettings


@app.command("next-token", epilog=EXIT_CODES_HELP)
@example("Hello", "-m", "{model}", "--top-k", "3")
@grouped(load=True, batch=True, endpoint=True)
def next_token(
    prompt: OptionalPromptArg = None,
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", metavar="K",
        help="How many candidates to show per step.")] = 10,
    steps: Annotated[int, typer.Option(
        "--steps", metavar="N",
        help="Greedy steps: append the top token and show the next distribution, N times.")] = 1,
    temperature: Annotated[float | None, typer.Option(
        "--temperature", metavar="NUMBER",
        help="Also show the distribution a sampler draws from at this temperature.", show_default=False)] = None,
    top_p: Annotated[float | None, typer.Option(
        "--top-p", metavar="NUMBER", help="Also show the sampler's distribution after nucleus (top-p) filtering.",
        show_default=False)] = None,
    lens: Annotated[bool, typer.Option(
        "--lens", help="Logit lens: every block's last hidden state through the final norm and LM head.")] = False,
    chat: ChatOpt = None,
    system: SystemOpt = None,
    html: HtmlOpt = None,
    batch_size: BatchSizeOpt = 8,
    *,
    shared: Shared,
) -> None:
    """Show the model's probabilities for the token after PROMPT: top-k, the tensor shapes, greedy steps, logit lens."""
    with command(shared.output.quiet) as display:
        from llmscope.core.command_settings import NextTokenCommand, NextTokenSettings

        batch_settings = shared.batch.settings(batch_size)
        settings = NextTokenCommand(
            inspect=NextTokenSettings(top_k=top_k, steps=steps, temperature=temperature, top_p=top_p, lens=lens),
            prompt=PromptSettings(chat=chat, system=system),
            model=shared.load.settings(model),
            mode=shared.output.mode(batch=batch_settings is not None),
            batch=batch_settings)
        remote = endpoint_settings(shared.endpoint, model, None, {"--lens": lens, "--html": html is not None},
                                   shared.load, display)
        text = prompt_or_batch(prompt, batch_settings)
        html_path = html_target(html)
        display.mode = settings.mode
        warn_all(display, settings.warnings())
        items = read_batch(batch_settings)
        if remote is not None:
            from llmscope.commands._endpoint import run_next_token

            run_next_token(display, remote, text, settings, items)
            return
        _run_next_token(display, settings, text, items, html_path)


def _run_next_token(display: Any, settings: Any, text: str | None, items: list[Any] | None, html_path: Any) -> None:
    from llmscope.generation.prompts import encode_prompt
    from llmscope.inspection.next_token import next_token_encoded
    from llmscope.render import inspection as show
    from llmscope.render.html import save_html

    loaded = load(display, settings.model)
    chat = settings.prompt.applies_template
    steps = settings.inspect.steps

    def encode(prompt: str) -> Any:
        return encode_prompt(loaded, prompt, chat=chat, system=settings.prompt.system, new_tokens=steps - 1,
                             budget_option="--steps", budget_offset=1)

    if items is None:
        result = next_token_encoded(loaded, [encode(text)], settings.inspect)[0]
        show.show_next_token(display, loaded.info, result)
        save_html(display, html_path, "next-token", loaded.info, result)
        return
    from llmscope.cli.batch import run_batch

    outcomes = run_batch(items, settings.batch.batch_size, prepare=lambda item: encode(item.prompt),
                         run_chunk=lambda encoded: next_token_encoded(loaded, encoded, settings.inspect))

    def write(result: Any, keys: dict[str, Any]) -> None:
        show.show_next_token(display, loaded.info, result, **keys)
        save_html(display, html_path, "next-token", loaded.info, result, keys)

    write_batch(display, items, outcomes, write)
