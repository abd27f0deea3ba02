"""Show `score` and `compare` results: the text coloured by each token's probability (generate --show-probs'
colouring), the summaries and tables for people, and the JSON documents (OpenAI-style prompt logprobs). No compute."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from llmscope.core.model_info import ModelInfo
from llmscope.inspection.comparison import ComparedPosition, CompareResult
from llmscope.inspection.scoring import ScoredToken, ScoreResult
from llmscope.render.display import Display, titled
from llmscope.render.generation import colours_on, legend, token_markup
from llmscope.render.inspection import TOKEN_WIDTH, probability_text, token_text

DIFFERENT = "≠"  # marks a row whose top tokens differ, with or without colour


def _rank(rank: int) -> str:
    """A rank, or "-" for 0: not known (a server sent only the top log-probabilities, and not this token's)."""
    return f"{rank:,}" if rank else "-"


def _figure(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def quoted(text: str) -> str:
    """A token's text in a table cell, quoted so that a token like "-" cannot read as a missing value."""
    return f"'{token_text(text)}'" if text else token_text(text)


def kl_text(value: float) -> str:
    """Six decimals, or scientific notation for the tiny values of nearly equal models."""
    return f"{value:.6f}" if value >= 1e-4 or value == 0 else f"{value:.2e}"


def context_note(display: Display, result: ScoreResult | CompareResult, max_tokens: int | None) -> None:
    """On stderr: what was not scored (the first token, BOS, the prompt) and how the windows ran."""
    if result.first_token_skipped:
        display.status(f"the first token {result.context_text!r} is not scored: nothing comes before it "
                       "(the tokenizer adds no BOS)")
    elif result.bos_prepended and result.context_tokens == 1:
        display.status(f"scored after the tokenizer's BOS token {result.context_text!r}: every text token counts")
    else:
        template = ", the chat template applied: TEXT is the assistant's answer" if getattr(
            result, "chat_template_applied", False) else ""
        display.status(f"{result.context_tokens} context tokens (prompt{template}) before the scored text")
    if result.truncated:
        display.warning(f"--max-tokens {max_tokens}: the text's tokens after the first {max_tokens} are not scored")
    if result.windows > 1:
        display.status(f"sliding window: {result.windows} forward passes of up to {result.window} tokens, stride "
                       f"{result.stride}; every scored token after the first window sees at least "
                       f"{result.window - result.stride} tokens of context")


def show_score(display: Display, info: ModelInfo, result: ScoreResult, mode: str = "probability",
               table: bool = False, **extra: Any) -> None:
    """score's one render entry: the document (--json / --jsonl, extra keys first) or the coloured text, the
    summary and the most surprising tokens."""
    if not display.for_people:
        display.document("score", info, score_payload(result), **extra)
        return
    if not table:
        legend(display, mode)
    context_note(display, result, result.settings.max_tokens)
    if table:
        display.result(token_table(result))
    else:
        line = Text(result.context_text, style="dim")
        colour = colours_on(display)
        for token in result.tokens:
            line.append_text(token_markup(token, mode, colour))
        display.text(line, end="\n")
    display.result(summary_table(result))
    if result.most_surprising:
        display.result(surprise_table(result.most_surprising))


def token_table(result: ScoreResult) -> Any:
    grid = Table(box=box.SIMPLE, pad_edge=False)
    for name in ("#", "token", "prob", "logprob", "rank", "model's top", "top prob", "entropy"):
        grid.add_column(name, justify="left" if "token" in name or "top" == name[-3:] else "right",
                        max_width=TOKEN_WIDTH if name in ("token", "model's top") else None, no_wrap=True,
                        overflow="ellipsis")
    for token in result.tokens:
        grid.add_row(str(token.position), quoted(token.text), probability_text(token.probability),
                     f"{token.logprob:.3f}", _rank(token.rank), quoted(token.top_text),
                     probability_text(token.top_probability),
                     "-" if math.isnan(token.entropy) else f"{token.entropy:.2f}")
    return titled(f"Every scored token ({result.tokens_scored})", grid)


def summary_table(result: ScoreResult) -> Any:
    grid = Table(box=None, show_header=False, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    grid.add_row("tokens scored", f"{result.tokens_scored:,}")
    grid.add_row("total NLL", f"{_figure(result.total_nll)} nats")
    grid.add_row("mean NLL", f"{_figure(result.mean_nll, 4)} nats/token")
    grid.add_row("perplexity", _figure(result.perplexity))
    grid.add_row("bits per byte", f"{_figure(result.bits_per_byte, 4)} ({result.scored_bytes:,} UTF-8 bytes)")
    grid.add_row("context", f"{result.min_context:,}–{max(t.context for t in result.tokens):,} tokens "
                            f"(mean {result.mean_context:,.1f})")
    return titled(f"Score under {result.model}", grid)


def surprise_table(tokens: tuple[ScoredToken, ...]) -> Any:
    grid = Table(box=box.SIMPLE, pad_edge=False)
    grid.add_column("#", justify="right")
    grid.add_column("token", max_width=TOKEN_WIDTH, no_wrap=True, overflow="ellipsis")
    grid.add_column("prob", justify="right")
    grid.add_column("rank", justify="right")
    grid.add_column("expected", max_width=TOKEN_WIDTH, no_wrap=True, overflow="ellipsis")
    grid.add_column("its prob", justify="right")
    for token in tokens:
        grid.add_row(str(token.position), quoted(token.text), probability_text(token.probability),
                     _rank(token.rank), quoted(token.top_text), probability_text(token.top_probability))
    return titled(f"The {len(tokens)} most surprising token{'s' if len(tokens) != 1 else ''}", grid)


def _record(token: ScoredToken) -> dict[str, Any]:
    return {"token": token.text, "id": token.token_id, "logprob": token.logprob, "probability": token.probability,
            "rank": token.rank or None, "bytes": list(token.bytes),
            "top": {"token": token.top_text, "id": token.top_id, "probability": token.top_probability},
            "entropy": token.entropy, "context": token.context,
            "top_logprobs": [{"token": alt.text, "id": alt.token_id, "logprob": alt.logprob,
                              "bytes": list(alt.bytes)} for alt in token.top]}


def score_payload(result: ScoreResult) -> dict[str, Any]:
    content = []
    if result.first_token_skipped:  # the first token has no prediction: logprob null, as in OpenAI's echo
        first = result.token_ids[0]
        content.append({"token": result.context_text, "id": first, "logprob": None, "probability": None,
                        "rank": None, "bytes": list(result.context_text.encode("utf-8")), "top": None,
                        "entropy": None, "context": 0, "top_logprobs": []})
    content.extend(_record(token) for token in result.tokens)
    return {
        "text": result.text, "prompt": result.prompt, "context_text": result.context_text,
        "chat_template_applied": result.chat_template_applied, "bos_prepended": result.bos_prepended,
        "first_token_skipped": result.first_token_skipped, "token_ids": list(result.token_ids),
        "context_tokens": result.context_tokens,
        "summary": {"tokens_scored": result.tokens_scored, "text_tokens": result.text_tokens,
                    "truncated": result.truncated, "total_nll": result.total_nll, "mean_nll": result.mean_nll,
                    "perplexity": result.perplexity, "scored_bytes": result.scored_bytes,
                    "bits_per_byte": result.bits_per_byte, "seconds": result.seconds},
        "window": {"size": result.window, "stride": result.stride, "forward_passes": result.windows,
                   "min_context": result.min_context, "mean_context": result.mean_context},
        "most_surprising": [{"position": t.position, "token": t.text, "id": t.token_id, "probability": t.probability,
                             "rank": t.rank or None, "expected": t.top_text, "expected_probability": t.top_probability}
                            for t in result.most_surprising],
        "prompt_logprobs": {"content": content},
        "settings": result.settings,
    }


# ------------------------------------------------------------------------------------------------ compare


def show_compare(display: Display, info: ModelInfo, result: CompareResult) -> None:
    """compare's one render entry: the document (--json / --jsonl) or the summary and tables."""
    if not display.for_people:
        display.document("compare", info, compare_payload(result))
        return
    context_note(display, result, result.settings.score.max_tokens)
    a, b = _names(result)
    grid = Table(box=None, show_header=False, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    grid.add_row("tokens compared", f"{result.tokens_compared:,}")
    grid.add_row("mean KL(A‖B)", f"{kl_text(result.kl_mean)} nats")
    grid.add_row("median KL", kl_text(result.kl_median))
    grid.add_row("99th percentile KL", kl_text(result.kl_p99))
    grid.add_row("max KL", kl_text(result.kl_max))
    grid.add_row("same top token", f"{result.top1_agreement:.2f} %")
    grid.add_row("same top-5 set", f"{result.top5_same:.2f} %")
    grid.add_row("perplexity A / B", f"{_figure(result.perplexity_a, 4)} / {_figure(result.perplexity_b, 4)}")
    display.result(titled(f"A = {a}\nB = {b}", grid))
    if result.most_different:
        display.result(difference_table(result.most_different))
    if result.next_token:
        display.result(next_token_table(result))


def _names(result: CompareResult) -> tuple[str, str]:
    """Each side by its model and how its weights are held (and B by its server, when one gave B's figures)."""
    server = f", from the server at {result.endpoint_b}" if result.endpoint_b else ""
    return (f"{result.model_a} ({result.weights_a or result.dtype_a})",
            f"{result.model_b} ({result.weights_b or result.dtype_b}{server})")


def difference_table(positions: tuple[ComparedPosition, ...]) -> Any:
    grid = Table(box=box.SIMPLE, pad_edge=False)
    grid.add_column("#", justify="right")
    grid.add_column("token", max_width=TOKEN_WIDTH, no_wrap=True, overflow="ellipsis")
    grid.add_column("KL", justify="right")
    grid.add_column("A's top", max_width=TOKEN_WIDTH, no_wrap=True, overflow="ellipsis")
    grid.add_column("p", justify="right")
    grid.add_column("B's top", max_width=TOKEN_WIDTH, no_wrap=True, overflow="ellipsis")
    grid.add_column("p", justify="right")
    grid.add_column("", no_wrap=True)
    for row in positions:
        grid.add_row(str(row.position), quoted(row.text), kl_text(row.kl),
                     quoted(row.a_top_text), probability_text(row.a_top_probability),
                     quoted(row.b_top_text), probability_text(row.b_top_probability),
                     "" if row.top_agree else DIFFERENT, style=None if row.top_agree else "bold")
    return titled(f"Where they part most ({DIFFERENT} and bold: different top tokens)", grid)


def next_token_table(result: CompareResult) -> Any:
    grid = Table(box=box.SIMPLE, pad_edge=False)
    grid.add_column("#", justify="right")
    grid.add_column("A's token", max_width=TOKEN_WIDTH, no_wrap=True, overflow="ellipsis")
    grid.add_column("p(A)", justify="right")
    grid.add_column("p(B)", justify="right")
    grid.add_column("Δ", justify="right")
    grid.add_column("B's token", max_width=TOKEN_WIDTH, no_wrap=True, overflow="ellipsis")
    grid.add_column("p(B)", justify="right")
    grid.add_column("p(A)", justify="right")
    for row in result.next_token:
        grid.add_row(str(row.rank), quoted(row.a_text), probability_text(row.a_probability),
                     probability_text(row.a_probability_under_b),
                     f"{row.a_probability_under_b - row.a_probability:+.4f}",
                     quoted(row.b_text), probability_text(row.b_probability),
                     probability_text(row.b_probability_under_a))
    kl = f"KL(A‖B) {kl_text(result.next_token_kl)} nats" if result.next_token_kl is not None else ""
    return titled(f"The token after the text: A's top {len(result.next_token)} and B's, side by side", grid,
                  f"Δ = p(B) − p(A) for A's token; {kl}")


def compare_payload(result: CompareResult) -> dict[str, Any]:
    return {
        "model_a": result.model_a, "model_b": result.model_b, "dtype_a": result.dtype_a, "dtype_b": result.dtype_b,
        "weights_a": result.weights_a, "weights_b": result.weights_b, "endpoint_b": result.endpoint_b,
        "text": result.text, "token_ids": list(result.token_ids), "context_tokens": result.context_tokens,
        "bos_prepended": result.bos_prepended, "first_token_skipped": result.first_token_skipped,
        "summary": {"tokens_compared": result.tokens_compared, "kl_mean": result.kl_mean,
                    "kl_median": result.kl_median, "kl_p99": result.kl_p99, "kl_max": result.kl_max,
                    "top1_agreement_percent": result.top1_agreement, "top5_same_percent": result.top5_same,
                    "perplexity_a": result.perplexity_a, "perplexity_b": result.perplexity_b,
                    "bits_per_byte_a": result.bits_per_byte_a, "bits_per_byte_b": result.bits_per_byte_b,
                    "seconds": result.seconds},
        "window": {"size": result.window, "stride": result.stride, "forward_passes": result.windows},
        "most_different": [p.position for p in result.most_different],
        "positions": result.positions,
        "next_token": {"rows": result.next_token, "kl": result.next_token_kl} if result.next_token else None,
        "settings": result.settings,
    }
