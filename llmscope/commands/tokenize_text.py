"""The tokenize command (a module name that does not shadow the standard library's tokenize): how text splits into
tokens under one or several tokenizers, and --decode back. It loads tokenizers only and computes nothing itself."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmscope.cli.app import app
from llmscope.cli.groups import Shared, grouped
from llmscope.cli.kit import (
    EXIT_CODES_HELP,
    SystemOpt,
    TrustOpt,
    command,
    example,
    read_batch,
    read_prompt,
    read_text,
    require_text,
    warn_all,
    write_batch,
)
from llmscope.commands._text_input import FileOpt, TextArg
from llmscope.core.command_settings import PromptSettings
from llmscope.core.errors import UsageError


@app.command(epilog=EXIT_CODES_HELP)
@example("Hello world", "-m", "{model}")
@grouped(batch=True)
def tokenize(
    text: TextArg = None,
    file: FileOpt = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", metavar="MODEL",
        help="Model whose tokenizer to use; give several to compare them side by side.",
        show_default=False)] = None,
    ids: Annotated[bool, typer.Option("--ids", help="Print only the ids, space-separated.")] = False,
    decode: Annotated[str | None, typer.Option(
        "--decode", metavar="IDS", help='Decode ids back to text, e.g. "504 3575 282"; "-" reads them from stdin.',
        show_default=False)] = None,
    special: Annotated[bool, typer.Option("--special/--no-special", help="Add BOS/EOS as the model does.")] = True,
    chat: Annotated[bool, typer.Option(
        "--chat", help="Tokenize after the chat template (default: off, the raw text; on with --system).")] = False,
    system: SystemOpt = None,
    trust_remote_code: TrustOpt = False,
    *,
    shared: Shared,
) -> None:
    """Show how TEXT splits into tokens: ids, pieces, spans and counts. Loads the tokenizer only."""
    with command(shared.output.quiet) as display:
        from llmscope.core.command_settings import TokenizeCommand

        batch_settings = shared.batch.settings(8)
        settings = TokenizeCommand(
            models=tuple(model or [None]), prompt=PromptSettings(chat=True if chat else None, system=system),
            mode=shared.output.mode(batch=batch_settings is not None, ids=ids),
            special=special, decode=decode, trust_remote_code=trust_remote_code, batch=batch_settings)
        display.mode = settings.mode
        warn_all(display, settings.warnings())
        if decode is not None:
            if text is not None or file is not None:
                raise UsageError(f"give either {'TEXT' if file is None else '--file'} or --decode, not both")
            _run_decode(display, settings)
            return
        if batch_settings is not None and (text is not None or file is not None):
            raise UsageError("give either TEXT, --file or --batch, not several")
        source = read_text(text, file) if batch_settings is None else None
        items = read_batch(batch_settings)
        _run_tokenize(display, settings, source, items)


def _run_decode(display: Any, settings: Any) -> None:
    from llmscope.core.model_info import ModelInfo
    from llmscope.loading.loader import load_tokenizer, resolve_model_spec
    from llmscope.loading.tokenization import decode_ids, parse_id_list, vocabulary_size
    from llmscope.render import tokens as show

    spec = resolve_model_spec(settings.models[0])
    tokenizer = load_tokenizer(spec, settings.trust_remote_code, light=True)
    ids = parse_id_list(read_prompt(settings.decode, "ids"), vocabulary_size(tokenizer))
    decoded = decode_ids(tokenizer, ids, spec.name, skip_special_tokens=not settings.special)
    show.show_decoded(display, ModelInfo(model=spec.name, source=spec.kind), decoded)


def _run_tokenize(display: Any, settings: Any, source: str | None, items: list[Any] | None) -> None:
    from llmscope.core.model_info import ModelInfo
    from llmscope.loading.loader import load_tokenizer, resolve_model_spec
    from llmscope.loading.tokenization import tokenize_text
    from llmscope.render import tokens as show

    specs = [resolve_model_spec(m) for m in settings.models]
    chat = settings.prompt.applies_template
    light = not chat  # the conversion cache's tokenizer.json can be read without torch / transformers
    tokenizers = [load_tokenizer(spec, settings.trust_remote_code, light=light) for spec in specs]
    info = ModelInfo(model=", ".join(spec.name for spec in specs), source=",".join(s.kind for s in specs))

    def run(text: str) -> list[Any]:
        return [tokenize_text(tokenizer, text, spec.name, add_special_tokens=settings.special, chat=chat,
                              system=settings.prompt.system) for spec, tokenizer in zip(specs, tokenizers)]

    if items is None:
        show.show_tokens(display, info, run(source))
        return
    from llmscope.cli.batch import run_batch

    outcomes = run_batch(items, 64, prepare=lambda item: require_text(item.prompt),
                         run_chunk=lambda texts: [run(text) for text in texts])
    write_batch(display, items, outcomes, lambda results, keys: show.show_tokens(display, info, results, **keys))
