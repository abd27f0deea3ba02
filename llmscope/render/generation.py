"""Show generated text: streamed or whole, optionally coloured by each token's probability or entropy,
with the timing / finish-reason summary on stderr and the JSON document (OpenAI-style logprobs) for scripts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from rich.text import Text

from llmscope.core.model_info import ModelInfo
from llmscope.generation.generate import GeneratedToken, GenerationResult
from llmscope.render.display import Display, human_bytes

# Okabe-Ito colours (safe for the common colour-vision deficiencies), from sure to unsure.
CONFIDENCE_COLOURS = ("#56B4E9", "#009E73", "#F0E442", "#E69F00", "#D55E00")
PROBABILITY_EDGES = (0.9, 0.7, 0.5, 0.3)  # p >= edge -> that bin; below the last -> the last colour
ENTROPY_EDGES = (0.5, 1.0, 2.0, 3.0)  # nats; entropy < edge -> that bin
FINISH_WORDS = {"eos": "end of sequence", "length": "reached --max-new-tokens", "interrupted": "interrupted"}


class Confident(Protocol):
    """What colouring needs from a token: generated (GeneratedToken) or scored (scoring.ScoredToken)."""

    delta: str
    probability: float
    entropy: float | None


def confidence_colour(token: Confident, mode: str) -> str:
    if mode == "entropy" and token.entropy is not None:
        for colour, edge in zip(CONFIDENCE_COLOURS, ENTROPY_EDGES):
            if token.entropy < edge:
                return colour
    else:
        for colour, edge in zip(CONFIDENCE_COLOURS, PROBABILITY_EDGES):
            if token.probability >= edge:
                return colour
    return CONFIDENCE_COLOURS[-1]


def confidence_legend(mode: str, colour: bool = True) -> Text:
    """The colour key; without colour on stdout, the key says how to read the token[figure] pairs instead."""
    if not colour:
        figure = "the entropy (nats) of the distribution it came from" if mode == "entropy" else "its probability"
        return Text(f"each token is followed by [{figure}]")
    if mode == "entropy":
        labels = ["H<0.5", "<1", "<2", "<3", "≥3 nats"]
    else:
        labels = ["p≥0.9", "≥0.7", "≥0.5", "≥0.3", "<0.3"]
    legend = Text("confidence: ", style="dim")
    for hue, label in zip(CONFIDENCE_COLOURS, labels):
        legend.append(f" {label} ", style=f"bold {hue}")
    return legend


def token_markup(token: Confident, mode: str | None, colour: bool) -> Text:
    """The text a token adds, coloured by confidence, or as text[p] when colours are off."""
    if not mode or not token.delta:
        return Text(token.delta)
    if colour:
        return Text(token.delta, style=confidence_colour(token, mode))
    figure = f"{token.entropy:.2f}" if mode == "entropy" and token.entropy is not None else f"{token.probability:.2f}"
    body = token.delta.rstrip("\n")
    newlines = token.delta[len(body):]
    return Text(f"{body or '↵'}[{figure}]{newlines}")  # a newline token's figure ends its line, not the next


def colours_on(display: Display) -> bool:
    return display.out.is_terminal and not display.out.no_color


def legend(display: Display, show_probs: str | None) -> None:
    """The --show-probs key on stderr, coloured only when stdout shows colour."""
    if show_probs and display.for_people:
        display.note(confidence_legend(show_probs, colours_on(display)))


def stream_printer(display: Display, show_probs: str | None) -> Callable[[GeneratedToken], None]:
    """The on_token callback that prints each token's text as it arrives."""
    colour = colours_on(display)

    def print_token(token: GeneratedToken) -> None:
        piece = token_markup(token, show_probs, colour)
        if piece.plain:
            display.text(piece)

    return print_token


def show_text(display: Display, result: GenerationResult, show_probs: str | None, full_text: bool) -> None:
    """Print the whole continuation at once (when not streaming)."""
    if full_text:
        display.text(Text(result.prompt_text))
    colour = colours_on(display)
    if show_probs:
        line = Text()
        for token in result.tokens:
            line.append_text(token_markup(token, show_probs, colour))
        display.text(line, end="\n")
    else:
        display.text(Text(result.text), end="\n")


def summary(display: Display, result: GenerationResult, show_probs: str | None, weights: str | None = None) -> None:
    """Counts, timings, peak memory, the weights' format when packed, and why generation stopped, on stderr."""
    ttft = f"{result.time_to_first_token_s * 1000:.0f} ms" if result.time_to_first_token_s is not None else "-"
    prompt_rate = f" ({result.prompt_tokens_per_s:.0f} prompt tok/s)" if result.prompt_tokens_per_s else ""
    rate = f"{result.decode_tokens_per_s:.1f} tok/s" if result.decode_tokens_per_s else "-"
    peak = f", peak memory {human_bytes(result.peak_memory_bytes)}" if result.peak_memory_bytes else ""
    peak += f" (weights {weights})" if weights else ""
    template = " (chat template applied)" if result.chat_template_applied else ""
    display.status(f"{result.prompt_tokens} prompt tokens{template}, {result.new_tokens} new tokens; time to first "
                   f"token {ttft}{prompt_rate}, decode {rate}, total {result.total_seconds:.2f} s{peak}; stopped: "
                   f"{FINISH_WORDS.get(result.finish_reason, result.finish_reason)}"
                   + (" (cache off)" if not result.settings.use_cache else ""))
    if show_probs and result.tokens:
        least = result.least_certain
        assert least is not None
        display.status(
            f"mean log-probability {result.mean_logprob:.3f}, perplexity {result.perplexity:.3f}; least certain: "
            f"{least.text!r} (p={least.probability:.3f}) at position {least.index}"
            + (" [sampler's distribution]" if result.distribution == "sampler" else ""))


def generation_payload(result: GenerationResult, full_text: bool, logprobs: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "prompt": result.prompt,
        "text": result.text,
        "full_text": result.full_text if full_text else None,
        "chat_template_applied": result.chat_template_applied,
        "prompt_token_ids": list(result.prompt_token_ids),
        "token_ids": list(result.token_ids),
        "prompt_tokens": result.prompt_tokens,
        "new_tokens": result.new_tokens,
        "finish_reason": result.finish_reason,
        "timings": {
            "time_to_first_token_s": result.time_to_first_token_s,
            "prompt_tokens_per_s": result.prompt_tokens_per_s,
            "decode_seconds": result.decode_seconds,
            "decode_tokens_per_s": result.decode_tokens_per_s,
            "total_seconds": result.total_seconds,
            "batch_size": result.batch_size,
        },
        "peak_memory_bytes": result.peak_memory_bytes,
        "settings": result.settings,
        "mean_logprob": result.mean_logprob,
        "perplexity": result.perplexity,
    }
    if logprobs:
        payload["logprobs"] = {
            "distribution": result.distribution,
            "content": [
                {"token": token.text, "id": token.token_id, "probability": token.probability,
                 "logprob": token.logprob, "entropy": token.entropy, "bytes": list(token.bytes),
                 "top_logprobs": [
                     {"token": alt.text, "id": alt.token_id, "probability": alt.probability,
                      "logprob": alt.logprob, "bytes": list(alt.bytes)} for alt in token.top]}
                for token in result.tokens],
        }
    return payload


def show_generation(display: Display, info: ModelInfo, result: GenerationResult, show_probs: str | None = None,
                    full_text: bool = False, logprobs: bool = False, streamed: bool = False, **extra: Any) -> None:
    """generate's one render entry: the document (--json / --jsonl, extra keys first), or the text (unless it was
    streamed) and the summary on stderr."""
    if not display.for_people:
        display.document("generate", info, generation_payload(result, full_text, logprobs), **extra)
    elif streamed:
        display.write("\n")
    else:
        show_text(display, result, show_probs, full_text)
    if not extra:  # a --batch record: the progress bar reports instead
        summary(display, result, show_probs if display.for_people else None, info.weights)
