"""Attention weights from one eager forward pass: where each head looks, grouped by shared KV head, with per-head
statistics (sink, previous token, self, look-back, entropy). It returns frozen dataclasses and never prints."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.attention.pick import (
    DEFAULT_MAX_WEIGHTS,
    AttentionSettings,
    check_against_config,
    resolve_keys,
    resolve_query,
)
from llmscope.core.errors import ModelLoadError, UsageError

if TYPE_CHECKING:
    import torch

    from llmscope.loading.loader import LoadedModel

__all__ = ["DEFAULT_MAX_WEIGHTS", "AttentionResult", "AttentionSettings", "attention_weights", "masked",
           "resolve_keys", "resolve_query"]

FORWARD_FACTOR = 16  # one layer's eager weights (heads x n², a tensor) may reach 16 x --max-weights
TOP_TOKENS = 3
ROLE_HEADS = 3


@dataclass(frozen=True)
class AttentionToken:
    position: int
    token_id: int
    text: str


@dataclass(frozen=True)
class Attended:
    """One key token and the weight a query puts on it."""

    position: int
    text: str
    weight: float


@dataclass(frozen=True)
class KvGroup:
    kv_head: int
    heads: tuple[int, ...]  # the query heads that read this KV head's keys and values


@dataclass(frozen=True)
class HeadStats:
    """One head's habits, averaged over the queries from position 2 on (where first, previous and self differ)."""

    layer: int
    head: int
    kv_head: int
    first_token: float  # share of attention on the first token (the "attention sink")
    previous_token: float  # share on the token just before the query
    same_token: float  # share on the query token itself
    look_back: float  # mean distance back, in tokens, weighted by attention
    entropy: float  # nats; 0 = all on one token


@dataclass(frozen=True)
class QueryRow:
    """Where the query token looks in one layer: the mean over heads and the strongest head."""

    layer: int
    mean: tuple[float, ...]  # over keys 0..query
    top: tuple[Attended, ...]  # of the mean
    strongest_head: int  # the head with the largest weight on any token but the first
    strongest: tuple[float, ...]
    strongest_top: tuple[Attended, ...]


@dataclass(frozen=True)
class HeadRow:
    """One head of a selected layer at the query token."""

    layer: int
    head: int
    kv_head: int
    entropy: float  # nats, of this query row
    top: tuple[Attended, ...]


@dataclass(frozen=True)
class Role:
    """A role some heads play, and the heads that play it most clearly (largest value first)."""

    name: str  # "sink", "previous", "self", "look-back", "focused", "broad"
    statistic: str  # the HeadStats field it ranks by
    heads: tuple[HeadStats, ...]
    over_half: int | None  # heads with more than half their attention there (share roles only)


@dataclass(frozen=True)
class AttentionResult:
    model: str
    prompt: str
    prompt_text: str
    chat_template_applied: bool
    attention_implementation: str  # "llmscope_invariant" (the loader's) or "eager": SDPA / flash return no weights
    tokens: tuple[AttentionToken, ...]
    query: int  # the query token's position
    num_layers: int
    num_heads: int
    num_kv_heads: int
    layout: str  # "multi-head", "grouped-query" or "multi-query"
    kv_groups: tuple[KvGroup, ...]
    windows: tuple[int | None, ...]  # per layer: the sliding window, None for full attention
    layers: tuple[int, ...]  # the selected layers (first axis of `weights`)
    heads: tuple[int, ...]  # the selected heads (second axis)
    query_positions: tuple[int, ...]  # the kept query rows (third axis); keys are every position
    keys: tuple[int, ...]  # the key positions the user chose to show (--keys), () for the view's own choice
    shape: tuple[int, int, int, int]  # [layers, heads, queries, keys]
    weights: tuple[tuple[tuple[tuple[float, ...], ...], ...], ...]
    query_rows: tuple[QueryRow, ...]  # one per selected layer
    head_rows: tuple[HeadRow, ...]  # with --layer: each selected head at the query token
    stats: tuple[HeadStats, ...]  # every head of every layer
    roles: tuple[Role, ...]
    forward_seconds: float


def masked(query: int, key: int, window: int | None) -> str | None:
    """Why a key is hidden from a query: "future" (the causal mask), "window" (outside the sliding window), or None."""
    if key > query:
        return "future"
    if window is not None and query - key >= window:
        return "window"
    return None


def kv_groups(heads: int, kv_heads: int) -> tuple[KvGroup, ...]:
    """Query heads by the KV head they read: transformers repeats each KV head for heads // kv_heads heads in a row."""
    size = max(1, heads // max(1, kv_heads))
    return tuple(KvGroup(kv, tuple(h for h in range(heads) if min(h // size, kv_heads - 1) == kv))
                 for kv in range(kv_heads))


def window_per_layer(config: Any, layers: int) -> tuple[int | None, ...]:
    from llmscope.loading.modelconfig import layer_types, text_config

    window = getattr(text_config(config), "sliding_window", None)
    types = layer_types(config)
    return tuple(window if i < len(types) and "sliding" in types[i] and window else None for i in range(layers))


def attention_modules(model: Any) -> tuple[list[Any], int]:
    """The model's attention modules, one per layer in order, and where their output holds the weights."""
    target, suffix, index = None, None, 1
    for module in model.modules():
        spec = (getattr(type(module), "_can_record_outputs", None) or {}).get("attentions")
        if spec is not None:
            target = getattr(spec, "target_class", spec)
            suffix = getattr(spec, "layer_name", None)
            index = getattr(spec, "index", None) or 1
            break
    found = [module for name, module in model.named_modules()
             if (isinstance(module, target) and (not suffix or name.endswith(suffix)) if isinstance(target, type)
                 else type(module).__name__.endswith("Attention") and hasattr(module, "layer_idx"))]
    return found, index


def use_eager_attention(model: Any) -> str:
    """Switch the model to an attention that returns weights, and return the one it had: llmscope's invariant
    attention stays (it returns its weights when asked, the same numbers every other command computes with); any
    other becomes transformers' eager attention (SDPA / flash kernels return none)."""
    from llmscope.invariance.kernels import is_invariant

    before = getattr(model.config, "_attn_implementation", None) or "eager"
    if is_invariant(model):
        return before
    if before != "eager":
        try:
            model.set_attn_implementation("eager")
        except (ValueError, AttributeError, NotImplementedError) as error:
            raise ModelLoadError(f"this model cannot switch to eager attention: {error}") from None
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        raise ModelLoadError(f"this model cannot switch to eager attention (it stays on {before})")
    return before


def restore_attention(model: Any, before: str) -> None:
    """Undo use_eager_attention."""
    if getattr(model.config, "_attn_implementation", None) != before:
        model.set_attn_implementation(before)


def _top(weights: list[float], tokens: tuple[AttentionToken, ...], count: int = TOP_TOKENS) -> tuple[Attended, ...]:
    order = sorted(range(len(weights)), key=lambda key: -weights[key])[:count]
    return tuple(Attended(key, tokens[key].text, weights[key]) for key in order)


def _head_stats(layer: int, weights: torch.Tensor, group: int, kv: int) -> list[HeadStats]:
    """Per-head statistics of one layer's [heads, n, n] weights (float32), over the queries from position 2 on."""
    import torch

    n = weights.shape[-1]
    first = min(2, n - 1)
    queries = torch.arange(first, n, device=weights.device)
    rows = weights[:, queries]  # [heads, q, n]
    keys = torch.arange(n, device=weights.device)
    distance = (queries[:, None] - keys[None, :]).clamp(min=0).to(weights.dtype)
    steps = torch.arange(len(queries), device=weights.device)
    previous = rows[:, steps, (queries - 1).clamp(min=0)] if n > 1 else torch.zeros_like(rows[..., 0])
    values = torch.stack([
        rows[..., 0].mean(-1), previous.mean(-1), rows[:, steps, queries].mean(-1),
        (rows * distance).sum(-1).mean(-1), torch.special.entr(rows).sum(-1).mean(-1)], dim=-1).tolist()
    return [HeadStats(layer, head, min(head // group, kv - 1), *row) for head, row in enumerate(values)]


ROLES = (  # name, statistic, largest first?, only among heads not parked on the first token?
    ("sink", "first_token", True, False), ("previous", "previous_token", True, False),
    ("self", "same_token", True, False), ("look-back", "look_back", True, True), ("focused", "entropy", False, True),
    ("broad", "entropy", True, False))


def head_roles(stats: tuple[HeadStats, ...], count: int = ROLE_HEADS) -> tuple[Role, ...]:
    """For each role, the heads that play it most clearly. Sink heads look far back and have a low entropy only
    because of the first token, so look-back and focus are ranked among the heads with at most half on it."""
    roles = []
    for name, statistic, largest, unparked in ROLES:
        pool = [s for s in stats if s.first_token <= 0.5] if unparked else list(stats)
        ranked = sorted(pool or stats, key=lambda s: (-getattr(s, statistic) if largest else getattr(s, statistic)))
        share = statistic.endswith("_token")
        roles.append(Role(name, statistic, tuple(ranked[:count]),
                          sum(1 for s in stats if getattr(s, statistic) > 0.5) if share else None))
    return tuple(roles)


def check_size(settings: AttentionSettings, layers: int, heads: int, queries: int, n: int, all_heads: int) -> None:
    """The memory guard: the weights kept stay under --max-weights, one layer's eager weights under 16 times that."""
    kept = layers * heads * queries * n
    limit = settings.max_weights
    if kept > limit:
        raise UsageError(f"keeping {layers} layer(s) x {heads} head(s) x {queries} quer{'y' if queries == 1 else 'ies'}"
                         f" x {n} keys = {kept:,} attention weights is over the limit of {limit:,}",
                         hint="choose one layer with --layer (and --head), shorten the prompt, or raise --max-weights")
    transient = all_heads * n * n
    if transient > FORWARD_FACTOR * limit:
        raise UsageError(f"the eager forward holds {all_heads} heads x {n}² = {transient:,} weights per layer, over "
                         f"{FORWARD_FACTOR} x --max-weights = {FORWARD_FACTOR * limit:,}",
                         hint="shorten the prompt, or raise --max-weights")


def attention_weights(loaded: LoadedModel, prompt: str, settings: AttentionSettings | None = None) -> AttentionResult:
    """One forward pass over `prompt` with eager attention, keeping the weights of the selected layers only.

    Args:
        loaded: the model and tokenizer (loader.load_model); its attention implementation is switched to eager for
            the pass and switched back afterwards.
        prompt: the text; with settings.chat it is wrapped in the chat template first.
        settings: layer / head / query selection and the memory limit (AttentionSettings).
    Returns:
        AttentionResult with the tokens, the kept weights [layers, heads, queries, keys], the KV grouping, the
        query token's rows and every head's statistics and roles.
    Raises:
        UsageError for a layer, head or query outside the model or prompt, or a selection over --max-weights;
        ModelLoadError when the model cannot return attention weights.
    """
    import torch

    from llmscope.architecture.layerkinds import attention_layout
    from llmscope.generation.prompts import check_ids_fit
    from llmscope.loading.modelconfig import text_config
    from llmscope.loading.tokenization import prompt_ids

    settings = settings or AttentionSettings()
    model, tokenizer = loaded.model, loaded.tokenizer
    config = text_config(model.config)
    layout = attention_layout(config)
    num_layers, heads, kv = int(config.num_hidden_layers), layout.heads, layout.kv_heads
    check_against_config(settings, num_layers, heads)
    prompt_text, ids = prompt_ids(tokenizer, prompt, chat=settings.chat, system=settings.system)
    if not ids:
        raise UsageError("the prompt is empty", hint="pass some text, or - to read it from stdin")
    check_ids_fit(model, ids)
    tokens = tuple(AttentionToken(i, t, tokenizer.decode([t])) for i, t in enumerate(ids))
    n = len(tokens)
    query = resolve_query(settings, tokens)
    keys = resolve_keys(settings, tokens, query)
    layers = (settings.layer,) if settings.layer is not None else tuple(range(num_layers))
    head_sel = (settings.head,) if settings.head is not None else tuple(range(heads))
    query_positions = tuple(range(n)) if settings.keeps_all_queries else (query,)
    check_size(settings, len(layers), len(head_sel), len(query_positions), n, heads)
    modules, index = attention_modules(model)
    if len(modules) != num_layers:
        raise ModelLoadError(f"found {len(modules)} attention modules for {num_layers} layers: this architecture's "
                             "attention weights cannot be read")
    group = max(1, heads // kv)
    kept: dict[int, torch.Tensor] = {}
    stats: list[HeadStats] = []
    missing: list[int] = []

    def hook_for(layer: int) -> Any:
        def keep(_module: Any, _inputs: Any, output: Any) -> None:
            weights = output[index] if isinstance(output, (tuple, list)) and len(output) > index else None
            if weights is None:
                missing.append(layer)
                return
            weights = weights[0].float()
            stats.extend(_head_stats(layer, weights, group, kv))
            if layer in layers:
                rows = torch.tensor(query_positions, device=weights.device)
                kept[layer] = weights[list(head_sel)][:, rows].cpu()
        return keep

    before = use_eager_attention(model)
    used = getattr(model.config, "_attn_implementation", None) or "eager"
    handles = [module.register_forward_hook(hook_for(layer)) for layer, module in enumerate(modules)]
    for module in modules:
        module.return_attention_weights = True  # read by the invariant attention
    try:
        input_ids = torch.tensor([ids], device=loaded.input_device)
        started = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
        seconds = time.perf_counter() - started
    finally:
        for handle in handles:
            handle.remove()
        for module in modules:
            del module.return_attention_weights
        restore_attention(model, before)
    if missing:
        raise ModelLoadError(f"layer {missing[0]} returned no attention weights, even with {used} attention")
    weights = torch.stack([kept[layer] for layer in layers])  # [layers, heads, queries, keys]
    stats.sort(key=lambda s: (s.layer, s.head))
    return AttentionResult(
        model=loaded.spec.name, prompt=prompt, prompt_text=prompt_text, chat_template_applied=settings.chat,
        attention_implementation=used, tokens=tokens, query=query, num_layers=num_layers, num_heads=heads,
        num_kv_heads=kv, layout=layout.kind, kv_groups=kv_groups(heads, kv),
        windows=window_per_layer(model.config, num_layers), layers=layers, heads=head_sel,
        query_positions=query_positions, keys=keys, shape=tuple(weights.shape),
        weights=tuple(tuple(tuple(tuple(row) for row in head) for head in layer) for layer in weights.tolist()),
        query_rows=_query_rows(weights, layers, head_sel, query_positions.index(query), query, tokens),
        head_rows=_head_rows(weights, layers, head_sel, query_positions.index(query), query, tokens, group, kv)
        if settings.layer is not None else (),
        stats=tuple(stats), roles=head_roles(tuple(stats)), forward_seconds=seconds)


def _query_rows(weights: torch.Tensor, layers: tuple[int, ...], heads: tuple[int, ...], row: int, query: int,
                tokens: tuple[AttentionToken, ...]) -> tuple[QueryRow, ...]:
    out = []
    for i, layer in enumerate(layers):
        rows = weights[i, :, row, : query + 1]  # [heads, keys up to the query]
        mean = rows.mean(0).tolist()
        beyond_first = rows[:, 1:].amax(-1) if query > 0 else rows.amax(-1)
        strongest = int(beyond_first.argmax())
        strong = rows[strongest].tolist()
        out.append(QueryRow(layer, tuple(mean), _top(mean, tokens), heads[strongest], tuple(strong),
                            _top(strong, tokens)))
    return tuple(out)


def _head_rows(weights: torch.Tensor, layers: tuple[int, ...], heads: tuple[int, ...], row: int, query: int,
               tokens: tuple[AttentionToken, ...], group: int, kv: int) -> tuple[HeadRow, ...]:
    import torch

    out = []
    for j, head in enumerate(heads):
        values = weights[0, j, row, : query + 1]
        out.append(HeadRow(layers[0], head, min(head // group, kv - 1), float(torch.special.entr(values).sum()),
                           _top(values.tolist(), tokens)))
    return tuple(out)

