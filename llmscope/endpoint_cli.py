"""The CLI side of --endpoint: its option types, and the run functions that next-token, score and generate call
instead of loading a model (the same render entries as a local run). No torch, no transformers."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmscope.errors import UsageError

EndpointOpt = Annotated[str | None, typer.Option(
    "--endpoint", metavar="URL", help="Ask a server instead of loading a model: `llmscope serve`, or any "
    "OpenAI-compatible server (vLLM, llama.cpp, ollama). Default: $LLMSCOPE_ENDPOINT. -m then names the served "
    "model.", show_default=False)]
ApiKeyOpt = Annotated[str | None, typer.Option(
    "--api-key", help="The endpoint's API key. Default: $LLMSCOPE_API_KEY.", show_default=False)]


def endpoint_settings(url: str | None, api_key: str | None, model: str | None, batch: Any,
                      local_only: dict[str, bool] | None = None) -> Any:
    """The endpoint to ask, or None to run locally; options that need a local model are refused with it."""
    from llmscope.endpoint import endpoint_from

    settings = endpoint_from(url, api_key, model)
    if settings is None:
        if api_key is not None:
            raise UsageError("--api-key is for --endpoint", hint="add --endpoint URL, or drop --api-key")
        return None
    if batch is not None:
        raise UsageError("--batch runs a local model", hint="loop over the prompts: a warm server answers each fast")
    for option, given in (local_only or {}).items():
        if given:
            raise UsageError(f"{option} needs a local model, not --endpoint", hint=f"drop {option} or --endpoint")
    return settings


def run_next_token(display: Any, endpoint: Any, text: str, settings: Any) -> None:
    from llmscope import endpoint as remote
    from llmscope.render import inspection as show

    info, result, limits = remote.next_token(endpoint, text, settings.inspect, settings.prompt.applies_template,
                                             settings.prompt.system)
    if limits:
        display.warning(f"{endpoint.base} is not `llmscope serve`: it cannot give {', '.join(limits)}")
    display.model_info = info
    show.show_next_token(display, info, result, **({"endpoint_cannot_give": list(limits)} if limits else {}))


def run_score(display: Any, endpoint: Any, text: str, settings: Any, colour_by: str, table: bool) -> None:
    from llmscope import endpoint as remote
    from llmscope.render import scoring as show

    info, result, limits = remote.score(endpoint, text, settings)
    if limits:
        display.warning(f"{endpoint.base} is not `llmscope serve`: it cannot give {', '.join(limits)}")
    display.model_info = info
    show.show_score(display, info, result, colour_by, table,
                    **({"endpoint_cannot_give": list(limits)} if limits else {}))


def run_generate(display: Any, endpoint: Any, text: str, settings: Any) -> None:
    """generate through the server: the same result and output as a local run, without --stream (the whole
    answer comes at once; use /v1/completions with stream for tokens as they come)."""
    from llmscope import endpoint as remote
    from llmscope.generation import TokenDetail
    from llmscope.render import generation as show

    generation = settings.generation
    logprobs = generation.logprobs > 0
    detail = TokenDetail(texts=bool(settings.show_probs) or logprobs,
                         entropy=settings.show_probs == "entropy" or logprobs, alternatives=generation.logprobs)
    info, result = remote.generate(endpoint, text, settings.prompt.applies_template, settings.prompt.system, generation,
                                   detail)
    display.model_info = info
    show.legend(display, settings.show_probs)
    show.show_generation(display, info, result, settings.show_probs, settings.full_text, logprobs, streamed=False)
