"""What `attention` shows: its settings, and the layers, heads, query and keys chosen, checked against the config
and the prompt's tokens before the weights load. Plain values only: it imports no torch and never prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmscope.core.errors import UsageError

DEFAULT_MAX_WEIGHTS = 4_000_000  # weights kept in the result: ~130 MB as Python floats, ~80 MB of JSON
MAX_PLOT_PANELS = 40  # a head grid with more panels than this cannot be read (one layer, or one head, fits)


class Token(Protocol):
    position: int
    text: str


@dataclass(frozen=True)
class AttentionSettings:
    """What to keep and show; every value is checked here, before any model is loaded."""

    layer: int | None = None  # 0-based block index; None = every layer
    head: int | None = None  # 0-based query head; without `layer`: that head in every layer
    query: str | None = None  # a position ("5", "-1") or a token's text ("it"); None = the last token
    keys: str | None = None  # the key tokens to show: positions or texts, comma-separated ("Mary,John", "0,5")
    matrix: bool = False  # the whole tokens x tokens pattern of one head
    all_queries: bool = False  # keep every query row of the selected layers (the plot needs them)
    max_weights: int = DEFAULT_MAX_WEIGHTS
    chat: bool = False
    system: str | None = None

    def __post_init__(self) -> None:
        if self.layer is not None and self.layer < 0:
            raise UsageError(f"--layer must be 0 or more (got {self.layer})", hint="layers count from 0")
        if self.head is not None and self.head < 0:
            raise UsageError(f"--head must be 0 or more (got {self.head})", hint="heads count from 0")
        if self.matrix and (self.layer is None or self.head is None):
            raise UsageError("--matrix draws one head's pattern", hint="add --layer L --head H")
        if self.max_weights < 1:
            raise UsageError(f"--max-weights must be at least 1 (got {self.max_weights})")
        if self.query is not None and not self.query.strip():
            raise UsageError("--query is empty", hint="give a position (0, 5, -1) or a token's text")
        if self.keys is not None and not key_parts(self.keys):
            raise UsageError("--keys is empty", hint="give positions or token texts, e.g. --keys Mary,John")

    @property
    def query_position(self) -> int | None:
        """--query as a position when it is an integer (negative counts from the end), else None."""
        return as_position(self.query) if self.query is not None else None

    @property
    def keeps_all_queries(self) -> bool:
        return self.layer is not None or self.matrix or self.all_queries

    @property
    def needs_tokens(self) -> bool:
        """Whether a choice (--query, --keys) can only be checked against the prompt's tokens."""
        return self.query is not None or self.keys is not None

    def ignored(self) -> tuple[str, ...]:
        """Options that this mode does not use, for a warning."""
        notes = []
        if self.matrix and self.query is not None:
            notes.append("--query is ignored with --matrix (the matrix shows every query)")
        if self.matrix and self.keys is not None:
            notes.append("--keys is ignored with --matrix (the matrix shows every key)")
        return tuple(notes)


def as_position(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def key_parts(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def check_against_config(settings: AttentionSettings, layers: int, heads: int, plot: bool = False) -> None:
    """--layer and --head inside the model (read from its config, before the weights load), and a plot that can be
    read: at most MAX_PLOT_PANELS panels of layers x heads."""
    if settings.layer is not None and settings.layer >= layers:
        raise UsageError(f"--layer {settings.layer} is past the model's {layers} layers", hint=f"use 0 to {layers - 1}")
    if settings.head is not None and settings.head >= heads:
        raise UsageError(f"--head {settings.head} is past the layer's {heads} heads", hint=f"use 0 to {heads - 1}")
    panels = (1 if settings.layer is not None else layers) * (1 if settings.head is not None else heads)
    if plot and panels > MAX_PLOT_PANELS:
        raise UsageError(f"a plot of {layers} layers x {heads} heads would hold {panels} panels, too small to read "
                         f"(at most {MAX_PLOT_PANELS})",
                         hint="choose one layer with --layer L, or one head across the layers with --head H")


def layer_and_head_counts(config: Any) -> tuple[int, int]:
    """(layers, query heads per layer) from a model's config."""
    from llmscope.architecture.layerkinds import attention_layout
    from llmscope.loading.modelconfig import text_config

    text = text_config(config)
    return int(text.num_hidden_layers), attention_layout(text).heads


LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
HEAD_KEYS = ("num_attention_heads", "n_head")


def counts_from_config_file(path: Path) -> tuple[int, int] | None:
    """(layers, heads) read straight from a config.json (no transformers import: a fraction of a second), or None
    when the file is missing or does not name them plainly (then the caller asks transformers)."""
    import json

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    config = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    layers = next((config[key] for key in LAYER_KEYS if isinstance(config.get(key), int)), None)
    heads = next((config[key] for key in HEAD_KEYS if isinstance(config.get(key), int)), None)
    return (layers, heads) if layers and heads and layers > 0 and heads > 0 else None


def _shown(tokens: Sequence[Token], count: int = 20) -> str:
    return ", ".join(repr(token.text) for token in tokens[:count]) + (" ..." if len(tokens) > count else "")


def _by_text(wanted: str, tokens: Sequence[Token]) -> list[int]:
    for same in (lambda text: text == wanted, lambda text: text.lower() == wanted.lower()):
        found = [token.position for token in tokens if same(token.text.strip())]
        if found:
            return found
    return []


def resolve_query(settings: AttentionSettings, tokens: Sequence[Token]) -> int:
    """The query token's position: the last by default, a position, or the last token whose text is --query."""
    n = len(tokens)
    if settings.query is None:
        return n - 1
    position = settings.query_position
    if position is not None:
        if not -n <= position < n:
            raise UsageError(f"--query {position} is outside the prompt's {n} tokens",
                             hint=f"use 0 to {n - 1}, or -1 for the last")
        return position % n
    found = _by_text(settings.query.strip(), tokens)
    if not found:
        raise UsageError(f"no prompt token reads {settings.query!r}", hint=f"the tokens are {_shown(tokens)}")
    return found[-1]


def resolve_keys(settings: AttentionSettings, tokens: Sequence[Token], query: int) -> tuple[int, ...]:
    """--keys as sorted positions up to the query: each part a position (negative from the end) or a token's text
    (every token that reads it); () without --keys."""
    if settings.keys is None:
        return ()
    n = len(tokens)
    chosen: set[int] = set()
    for part in key_parts(settings.keys):
        position = as_position(part)
        if position is not None:
            if not -n <= position < n:
                raise UsageError(f"--keys {position} is outside the prompt's {n} tokens",
                                 hint=f"use 0 to {n - 1}, or -1 for the last")
            chosen.add(position % n)
            continue
        found = _by_text(part, tokens)
        if not found:
            raise UsageError(f"--keys: no prompt token reads {part!r}", hint=f"the tokens are {_shown(tokens)}")
        chosen.update(found)
    visible = sorted(p for p in chosen if p <= query)
    if not visible:
        raise UsageError(f"--keys {settings.keys!r} are all after the query token (position {query}), which cannot "
                         "see them", hint="choose keys at or before the query, or a later --query")
    return tuple(visible)


def strongest_keys(rows: Sequence[Sequence[float]], keys: Sequence[int], count: int) -> list[int]:
    """The `count` keys (of `keys`) with the largest weight in any of the rows, in position order."""
    if len(keys) <= count:
        return list(keys)
    ranked = sorted(keys, key=lambda key: (-max(row[key] for row in rows), key))
    return sorted(ranked[:max(1, count)])
