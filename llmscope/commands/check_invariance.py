"""The check-invariance command: does a prompt get the same numbers alone, in a batch and with the KV cache?
It parses options, then calls llmscope.invariance and the renderer; it computes nothing itself."""

from __future__ import annotations

from typing import Annotated

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import EXIT_CODES_HELP, ModelOpt, command, example, load, read_prompt
from llmscope.core.command_settings import MAX_NEW_TOKENS, MAX_SEED, whole_number

DEFAULT_PROMPT = "The capital of France is"


@app.command("check-invariance", epilog=EXIT_CODES_HELP)
@example("Hello", "-m", "{model}", "-n", "3")
@grouped(load=True)
def check_invariance(
    prompt: Annotated[str | None, typer.Argument(
        help=f"The prompt; '-' reads it from stdin. Default: {DEFAULT_PROMPT!r}.", show_default=False)] = None,
    model: ModelOpt = None,
    new_tokens: Annotated[int, typer.Option(
        "--new-tokens", "-n", metavar="N",
        help="Greedy tokens generated and appended before the checks (decode steps for the "
        "cache check, tokens for the greedy comparisons).")] = 8,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the batch's shuffle.")] = 0,
    *,
    shared: Shared,
) -> None:
    """Check that a prompt's numbers do not depend on how it runs: alone, in a shuffled padded batch, or token by token
    with the KV cache.

    Prints the largest difference of every logit, hidden state and attention weight of the prompt's positions, and
    whether the greedy tokens match; 0 means bit for bit. Run it to trust a new model or a new machine.
    """
    with command(shared.output.quiet) as display:
        display.mode = shared.output.mode()
        whole_number("--new-tokens", new_tokens, 0, MAX_NEW_TOKENS, hint="use --new-tokens 8, for example")
        whole_number("--seed", seed, 0, MAX_SEED)
        from llmscope.generation.prompts import encode_prompt
        from llmscope.invariance.check import COMPANIONS
        from llmscope.invariance.check import check_invariance as run_check
        from llmscope.render.invariance import show_invariance

        text = read_prompt(prompt) if prompt is not None else DEFAULT_PROMPT
        loaded = load(display, shared.load.settings(model))
        encoded = encode_prompt(loaded, text, new_tokens=max(new_tokens, 1), budget_option="--new-tokens")
        companions = [encode_prompt(loaded, other).ids for other in COMPANIONS]
        result = run_check(loaded, encoded.ids, text, new_tokens=new_tokens, companions=companions, seed=seed)
        show_invariance(display, loaded.info, result)
