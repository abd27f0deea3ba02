"""Show tokenization results: the text with token boundaries, a table of tokens, a side-by-side
comparison of several tokenizers, bare ids for pipes, and decoded ids."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from llmscope.core.model_info import ModelInfo
from llmscope.loading.tokenization import DecodeResult, TokenizationResult, TokenPiece
from llmscope.render.display import Display, visible

BOUNDARY_STYLES = ("black on #56B4E9", "black on #E69F00")


def boundaries(result: TokenizationResult, colour: bool) -> Text:
    """The text with each token in alternating colours (or separated by | without colours)."""
    line = Text()
    for token in result.tokens:
        piece = visible(token.text) if token.special or token.start is None else \
            visible(result.text[token.start:token.end])
        if token.partial_bytes is not None:
            piece = shown_text(token)
        if colour:
            line.append(piece, style=BOUNDARY_STYLES[token.position % 2])
        else:
            line.append(("|" if token.position else "") + piece)
    return line


def shown_text(token: TokenPiece) -> str:
    """What a token holds: its text, with the bytes of a partial UTF-8 character in hex (" 👋" split -> ␣<F0 9F>)."""
    if token.partial_bytes is None:
        return visible(token.text)
    decoded = bytes.fromhex(token.partial_bytes).decode("utf-8", errors="surrogateescape")
    out, pending = [], []
    for char in decoded + "\0":  # a sentinel flushes the last run of stray bytes
        if 0xDC80 <= ord(char) <= 0xDCFF:
            pending.append(f"{ord(char) - 0xDC00:02X}")
            continue
        if pending:
            out.append("<" + " ".join(pending) + ">")
            pending = []
        out.append(visible(char))
    return "".join(out[:-1])


def tokens_table(result: TokenizationResult) -> Table:
    table = Table(title=f"{result.model}: {result.token_count} tokens", title_justify="left", expand=False)
    table.add_column("pos", justify="right")
    table.add_column("id", justify="right")
    table.add_column("piece", overflow="fold")
    table.add_column("text", overflow="fold")
    table.add_column("span", justify="right")
    for token in result.tokens:
        span = "-" if token.start is None else f"{token.start}:{token.end}"
        table.add_row(str(token.position), str(token.token_id), visible(token.piece),
                      Text(shown_text(token), style="bold magenta" if token.special else ""), span)
    return table


def footer(result: TokenizationResult) -> str:
    added = ", ".join(result.special_tokens_added) if result.special_tokens_added else "none"
    chat = "; chat template applied" if result.chat_template_applied else ""
    return (f"{result.token_count} tokens, {result.characters} characters, "
            f"{result.characters_per_token:.2f} characters per token; special tokens added: {added}{chat}")


def show_tokens(display: Display, info: ModelInfo, results: list[TokenizationResult], **extra: object) -> None:
    """tokenize's one render entry: the document (--json / --jsonl), the ids (--ids), a comparison of several
    tokenizers, or one tokenizer's boundaries, table and counts."""
    from llmscope.core.command_settings import OutputMode

    if display.mode == OutputMode.IDS:
        show_ids(display, results)
    elif not display.for_people:
        payload = tokenization_payload(results[0]) if len(results) == 1 else {
            "comparison": [tokenization_payload(r) for r in results]}
        display.document("tokenize", info, payload, **extra)
    elif len(results) > 1:
        show_comparison(display, results)
    else:
        result = results[0]
        display.result(boundaries(result, display.out.is_terminal and not display.out.no_color))
        display.result(tokens_table(result))
        display.result(footer(result))


def show_decoded(display: Display, info: ModelInfo, result: DecodeResult) -> None:
    """tokenize --decode: the text, or the document with the ids and pieces."""
    if display.for_people or display.mode.value == "ids":
        display.write(result.text + "\n")
    else:
        display.document("tokenize", info, {"ids": result.ids, "text": result.text, "pieces": result.pieces})


def show_comparison(display: Display, results: list[TokenizationResult]) -> None:
    table = Table(title="tokenizers compared on the same text", title_justify="left")
    table.add_column("model", overflow="fold")
    table.add_column("tokens", justify="right")
    table.add_column("chars/token", justify="right")
    table.add_column("vocab", justify="right")
    table.add_column("pieces", overflow="fold")
    fewest = min(result.token_count for result in results)
    for result in results:
        count = Text(str(result.token_count), style="bold green" if result.token_count == fewest else "")
        table.add_row(result.model, count, f"{result.characters_per_token:.2f}", str(result.vocab_size),
                      "|".join(shown_text(token) for token in result.tokens))
    display.result(table)


def show_ids(display: Display, results: list[TokenizationResult]) -> None:
    for result in results:
        display.write(" ".join(str(i) for i in result.ids) + "\n")


def tokenization_payload(result: TokenizationResult) -> dict:
    return {"model": result.model, "text": result.text, "ids": result.ids, "tokens": result.tokens,
            "token_count": result.token_count, "characters": result.characters,
            "characters_per_token": result.characters_per_token,
            "special_tokens_added": result.special_tokens_added,
            "chat_template_applied": result.chat_template_applied, "vocab_size": result.vocab_size}
