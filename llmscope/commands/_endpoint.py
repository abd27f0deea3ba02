"""The --endpoint glue that several commands share: endpoint_settings (options checked against a served model), and
the run functions next-token, score and generate call instead of loading one. No command, no torch, no transformers."""

from __future__ import annotations

from typing import Any

from llmscope.cli.groups import EndpointOptions
from llmscope.core.errors import UsageError

# The one rule for settings that shape a local load, checked before anything loads: given as options with an
# endpoint they are refused (the server chose its own weights); set in the environment they are set aside with a
# warning. Each output names the server, its model and its weights (model_info.endpoint / server / weights).
LOAD_OPTIONS = (("--quantize", "quantize", None), ("--dtype", "dtype", "auto"), ("--device", "device", "auto"),
                ("--device-map", "device_map", None), ("--trust-remote-code", "trust_remote_code", False),
                ("--threads", "threads", None))
LOAD_VARIABLES = ("LLMSCOPE_QUANTIZE", "LLMSCOPE_THREADS")


def endpoint_settings(given: EndpointOptions, model: str | None, batch: Any,
                      local_only: dict[str, bool] | None = None, load: Any = None, display: Any = None,
                      option: str = "--endpoint") -> Any:
    """The endpoint to ask, or None to run locally; options that need a local model are refused with it (load:
    the command's LoadOptions, each one given is refused), environment load settings set aside with a warning on
    display. `option` is the command's name for the endpoint (compare's --against-endpoint): the messages say it."""
    import os

    from llmscope.client.endpoint import check_url, endpoint_from

    url, api_key = given.endpoint, given.api_key
    if url is not None:
        check_url(url, option)
    settings = endpoint_from(url, api_key, model, given.timeout)
    if settings is None:
        if api_key is not None:
            raise UsageError(f"--api-key is for {option}", hint=f"add {option} URL, or drop --api-key")
        if given.timeout is not None:
            raise UsageError(f"--timeout is for {option}", hint=f"add {option} URL, or drop --timeout")
        return None
    if batch is not None:
        raise UsageError("--batch with --endpoint is for next-token and score",
                         hint="loop over the prompts: a warm server answers each fast")
    loading = {name: getattr(load, field) != default for name, field, default in LOAD_OPTIONS} if load else {}
    for name, wanted in {**loading, **(local_only or {})}.items():
        if wanted:
            raise UsageError(f"{name} needs a local model, not {option}",
                             hint=f"drop {name} or {option}: the server holds its model as it was started")
    set_aside = [f"{name}={os.environ[name]}" for name in LOAD_VARIABLES if os.environ.get(name, "").strip()]
    if set_aside and display is not None:
        display.warning(f"{', '.join(set_aside)} set aside: the figures come from the server at {settings.base}, "
                        "with the weights it was started with")
    return settings


def describe_source(display: Any, info: Any) -> None:
    """On stderr, as a local run's load line: which server answered, its model, and how its weights are held."""
    if info.endpoint:
        server = {"llmscope serve": "`llmscope serve`", "openai-compatible": "an OpenAI-compatible server"}.get(
            info.server or "", "the server")
        display.status(f"answered by {server} at {info.endpoint}: {info.model}, {info.weights_label}")


def _limits_note(display: Any, endpoint: Any, limits: tuple[str, ...]) -> dict[str, Any]:
    """Say once what the server could not give; the --json key that says it too."""
    if not limits:
        return {}
    display.warning(f"{endpoint.base} is not `llmscope serve`: it cannot give {', '.join(limits)}")
    return {"endpoint_cannot_give": list(limits)}


def _each(display: Any, endpoint: Any, items: list[Any], size: int, ask: Any, show: Any) -> None:
    """--batch through the endpoint: each chunk's prompts sent at once (the server batches them), one record per
    prompt in input order, as a local --batch writes them."""
    from concurrent.futures import ThreadPoolExecutor

    from llmscope.cli.batch import run_batch
    from llmscope.cli.kit import require_text, write_batch

    noted: dict[str, Any] = {}

    def run_chunk(texts: list[str]) -> list[Any]:
        with ThreadPoolExecutor(max_workers=len(texts)) as pool:
            answers = list(pool.map(ask, texts))
        if "keys" not in noted:
            noted["keys"] = _limits_note(display, endpoint, answers[0][2])
            display.model_info = answers[0][0]
            describe_source(display, answers[0][0])
        return answers

    outcomes = run_batch(items, size, prepare=lambda item: require_text(item.prompt), run_chunk=run_chunk)
    write_batch(display, items, outcomes, lambda answer, keys: show(answer[0], answer[1], {**noted["keys"], **keys}))


def run_next_token(display: Any, endpoint: Any, text: str | None, settings: Any, items: list[Any] | None = None
                   ) -> None:
    from llmscope.client import endpoint as remote
    from llmscope.render import inspection as show

    def ask(prompt: str) -> Any:
        return remote.next_token(endpoint, prompt, settings.inspect, settings.prompt.applies_template,
                                 settings.prompt.system)

    if items is not None:
        _each(display, endpoint, items, settings.batch.batch_size, ask,
              lambda info, result, keys: show.show_next_token(display, info, result, **keys))
        return
    info, result, limits = ask(text or "")
    keys = _limits_note(display, endpoint, limits)
    display.model_info = info
    describe_source(display, info)
    show.show_next_token(display, info, result, **keys)


def run_score(display: Any, endpoint: Any, text: str | None, settings: Any, colour_by: str, table: bool,
              items: list[Any] | None = None) -> None:
    from llmscope.client import endpoint as remote
    from llmscope.render import scoring as show

    def ask(source: str) -> Any:
        return remote.score(endpoint, source, settings)

    if items is not None:
        _each(display, endpoint, items, 8, ask,
              lambda info, result, keys: show.show_score(display, info, result, **keys))
        return
    info, result, limits = ask(text or "")
    keys = _limits_note(display, endpoint, limits)
    display.model_info = info
    describe_source(display, info)
    show.show_score(display, info, result, colour_by, table, **keys)


def run_generate(display: Any, endpoint: Any, text: str, settings: Any) -> None:
    """generate through the server: the same result and output as a local run, without --stream (the whole
    answer comes at once; use /v1/completions with stream for tokens as they come)."""
    from llmscope.client import endpoint as remote
    from llmscope.generation.generate import TokenDetail
    from llmscope.render import generation as show

    generation = settings.generation
    logprobs = generation.logprobs > 0
    detail = TokenDetail(texts=bool(settings.show_probs) or logprobs,
                         entropy=settings.show_probs == "entropy" or logprobs, alternatives=generation.logprobs)
    info, result = remote.generate(endpoint, text, settings.prompt.applies_template, settings.prompt.system, generation,
                                   detail)
    display.model_info = info
    describe_source(display, info)
    show.legend(display, settings.show_probs)
    show.show_generation(display, info, result, settings.show_probs, settings.full_text, logprobs, streamed=False)
