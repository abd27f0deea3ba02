"""Option groups that many commands share (how the model is loaded; how results are written), declared once.
`@grouped(load=True, ...)` puts the groups' Typer options in place of the command's one parameter typed Shared and
hands the command their values there, with which parameters the user gave; on the way it gives every option a
metavar that says what to type and checks every file output (--html, --plot) writable. No torch; nothing loads."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import typer

from llmscope.cli.kit import (
    ApiKeyOpt,
    BatchFormatOpt,
    BatchOpt,
    ContextOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    EndpointOpt,
    JsonlOpt,
    JsonOpt,
    MaxTokensOpt,
    QuantizeOpt,
    QuietOpt,
    ScoreChatOpt,
    StrideOpt,
    SystemOpt,
    ThreadsOpt,
    TimeoutOpt,
    TrustOpt,
    WindowOpt,
    batch_from_options,
    command,
    model_settings,
)
from llmscope.cli.server_options import OPTIONS as SERVER_OPTIONS
from llmscope.cli.server_options import ServerOptions
from llmscope.core.command_settings import ModelSettings, OutputMode, output_mode
from llmscope.core.output_files import OutputFile, check_output

Command = TypeVar("Command", bound=Callable[..., Any])
CONTEXT_PARAMETER = "llmscope_context"
# What --help shows after an option that names no metavar of its own, by the type of its value: what to type,
# never Typer's type names (<int>, <list[str]>).
TYPE_METAVARS = {int: "N", float: "NUMBER", str: "TEXT"}


@dataclass(frozen=True)
class LoadOptions:
    """--device, --dtype, --device-map, --trust-remote-code, --quantize and --threads, as given."""

    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    trust_remote_code: bool = False
    quantize: str | None = None
    threads: int | None = None

    def settings(self, model: str | None, **changes: Any) -> ModelSettings:
        """The checked ModelSettings for MODEL, with any field of these options changed first (compare's B)."""
        given = replace(self, **changes)
        return model_settings(model, given.device, given.dtype, given.device_map, given.trust_remote_code,
                              given.threads, given.quantize)


@dataclass(frozen=True)
class OutputOptions:
    """--json, --jsonl and --quiet, as given."""

    json: bool = False
    jsonl: bool = False
    quiet: bool = False

    def mode(self, batch: bool = False, **other_flags: bool) -> OutputMode:
        """The one output mode these flags (and a command's own, e.g. csv=...) ask for."""
        return output_mode(json=self.json, jsonl=self.jsonl, batch=batch, **other_flags)


@dataclass(frozen=True)
class BatchInput:
    """--batch and --batch-format, as given (--batch-size stays with the commands that run prompts together)."""

    batch: str | None = None
    batch_format: str = "auto"

    def settings(self, size: int = 8) -> Any:  # -> BatchSettings | None
        return batch_from_options(self.batch, self.batch_format, size)


@dataclass(frozen=True)
class EndpointOptions:
    """--endpoint, --api-key and --timeout, as given."""

    endpoint: str | None = None
    api_key: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class TextWindow:
    """score's and compare's --prompt, --chat, --system, --window, --stride and --max-tokens, as given."""

    prompt: str | None = None
    chat: bool = False
    system: str | None = None
    window: int | None = None
    stride: int | None = None
    max_tokens: int | None = None

    def fields(self) -> dict[str, Any]:
        """The values by ScoreSettings' names (the same names)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True)
class Shared:
    """What a command's shared option groups said: output always; load, batch and endpoint where it takes them."""

    output: OutputOptions
    load: LoadOptions = LoadOptions()
    batch: BatchInput = BatchInput()
    endpoint: EndpointOptions = EndpointOptions()
    text: TextWindow = TextWindow()
    given: frozenset[str] = frozenset()  # the command's parameters the user gave (not left at their defaults)
    server: ServerOptions = field(default_factory=ServerOptions)


# The Typer options of each group: (parameter name, field, annotation). Parameter names stay those the commands
# always had, so error messages and docs/cli.md name the same options.
GROUPS: dict[str, tuple[type, tuple[tuple[str, str, Any], ...]]] = {
    "text": (TextWindow, (("prompt", "prompt", ContextOpt), ("chat", "chat", ScoreChatOpt),
                          ("system", "system", SystemOpt), ("window", "window", WindowOpt),
                          ("stride", "stride", StrideOpt), ("max_tokens", "max_tokens", MaxTokensOpt))),
    "batch": (BatchInput, (("batch", "batch", BatchOpt), ("batch_format", "batch_format", BatchFormatOpt))),
    "endpoint": (EndpointOptions, (("endpoint", "endpoint", EndpointOpt), ("api_key", "api_key", ApiKeyOpt),
                                   ("timeout", "timeout", TimeoutOpt))),
    "load": (LoadOptions, (("device", "device", DeviceOpt), ("dtype", "dtype", DtypeOpt),
                           ("device_map", "device_map", DeviceMapOpt),
                           ("trust_remote_code", "trust_remote_code", TrustOpt),
                           ("quantize", "quantize", QuantizeOpt), ("threads", "threads", ThreadsOpt))),
    "output": (OutputOptions, (("json_output", "json", JsonOpt), ("jsonl_output", "jsonl", JsonlOpt),
                               ("quiet", "quiet", QuietOpt))),
    "server": (ServerOptions, SERVER_OPTIONS),
}

DEFAULTS = {cls: {field.name: field.default for field in fields(cls)} for cls, _ in GROUPS.values()}


def given_parameters(context: Any) -> frozenset[str]:
    """The parameters of the running command that the user gave (on the command line or through an environment
    variable), by parameter name: what tells `--seed 0` typed from a seed left at its default of 0."""
    if context is None:
        return frozenset()
    return frozenset(name for name in context.params
                     if getattr(context.get_parameter_source(name), "name", None) in ("COMMANDLINE", "ENVIRONMENT"))


def name_what_to_type(annotation: Any) -> None:
    """Give the Typer option in `annotation` (Annotated[T, typer.Option(...)]) a metavar from TYPE_METAVARS when
    it has none; flags (bool) take no value and keep none."""
    from typer.models import OptionInfo

    base, *extras = typing.get_args(annotation) or (annotation,)
    kinds = [kind for kind in (typing.get_args(base) or (base,)) if kind is not type(None)]
    if len(kinds) == 1 and typing.get_origin(kinds[0]) is list:  # a repeatable option: what one value is
        kinds = list(typing.get_args(kinds[0]))
    for info in extras:
        if isinstance(info, OptionInfo) and info.metavar is None and len(kinds) == 1 and kinds[0] in TYPE_METAVARS:
            info.metavar = TYPE_METAVARS[kinds[0]]


def check_output_files(paths: list[tuple[OutputFile, str]], shared: Shared) -> None:
    """Every file the command was asked to write (--html, --plot), checked writable before the command starts, so
    that no model loads and runs for an output that cannot be saved; a failure is one line and exit 2."""
    if not paths:
        return
    with command(shared.output.quiet):
        for spec, value in paths:
            check_output(spec, value, batch=shared.batch.batch is not None)


def grouped(*, load: bool = False, text: bool = False, batch: bool = False,
            endpoint: bool = False, server: bool = False) -> Callable[[Command], Command]:
    """Give a command the shared option groups it names (output always), in place of its one parameter typed
    Shared, and call it with their values in that parameter."""
    chosen = [name for name, wanted in (("text", text), ("batch", batch), ("endpoint", endpoint),
                                        ("server", server), ("load", load), ("output", True)) if wanted]

    def expand(func: Command) -> Command:
        signature = inspect.signature(func, eval_str=True)
        [target] = [parameter.name for parameter in signature.parameters.values() if parameter.annotation is Shared]
        options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                     default=DEFAULTS[GROUPS[group][0]][field])
                   for group in chosen for name, field, annotation in GROUPS[group][1]]
        parameters = [parameter for parameter in signature.parameters.values() if parameter.name != target]
        # Typer hands a parameter typed typer.Context the click context, which knows where each value came from.
        options.append(inspect.Parameter(CONTEXT_PARAMETER, inspect.Parameter.KEYWORD_ONLY,
                                         annotation=typer.Context, default=None))

        for parameter in parameters + options:
            name_what_to_type(parameter.annotation)
        outputs = {parameter.name: marker for parameter in parameters
                   for marker in typing.get_args(parameter.annotation)[1:] if isinstance(marker, OutputFile)}

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            given = given_parameters(kwargs.pop(CONTEXT_PARAMETER, None))
            values = {group: GROUPS[group][0](**{field: kwargs.pop(name) for name, field, _ in GROUPS[group][1]})
                      for group in chosen}
            shared = Shared(**values, given=given)
            check_output_files([(outputs[name], kwargs[name]) for name in outputs if kwargs[name] is not None],
                               shared)
            kwargs[target] = shared
            return func(*args, **kwargs)

        run.__signature__ = signature.replace(parameters=parameters + options)  # type: ignore[attr-defined]
        run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters + options}
        return run  # type: ignore[return-value]

    return expand
