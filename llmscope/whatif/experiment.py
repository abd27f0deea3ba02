"""Run what-if variants on a loaded model and measure each against the unchanged model on the same tokens: quality
from one teacher-forced pass over the text, memory and speed from a greedy generation with the variant's own cache,
the KV bytes from kvcache.cache_size, and the pass-key probe. Returns WhatIfResult; never prints."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmscope.architecture.kvcache import cache_size
from llmscope.core.errors import UsageError
from llmscope.whatif.attention import applied, attention_modules
from llmscope.whatif.cache import cache_bytes, variant_cache, variant_layout
from llmscope.whatif.kvquant import check_packable
from llmscope.whatif.patterns import LayerSpan
from llmscope.whatif.results import PasskeyResult, VariantResult, WhatIfResult, WhatIfSettings
from llmscope.whatif.variants import FULL, Variant, preset_variants

if TYPE_CHECKING:
    import torch

    from llmscope.loading.loader import LoadedModel

STATE_LAYER_TYPES = ("linear_attention", "conv", "mamba")  # a fixed recurrent state: no keys to mask or cache
KL_ROWS = 256  # positions whose KL is computed at once (rows x vocabulary floats per temporary)
PASSKEY_NEW_TOKENS = 8


@dataclass(frozen=True)
class ModelPlan:
    """Where a variant can act in this model: each layer's own span (None: a state layer, left alone), the layers
    whose attention runs through the what-if attention, and why the others are left unchanged."""

    spans: dict[int, LayerSpan | None]
    type_spans: dict[str, LayerSpan]  # attention layer types and their spans (for the KV formula)
    changed: frozenset[int]
    notes: tuple[str, ...]  # layers no variant changes
    query_heads: int
    kv_heads: int
    head_dim: int
    latent: bool  # multi-head latent attention: the cache holds a latent, not KV heads
    layer_count: int = 0


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts: list[str] = []
    start = previous = None
    for index in [*sorted(indices), None]:
        if start is not None and (index is None or index != previous + 1):
            parts.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = None
        if index is not None and start is None:
            start = index
        previous = index
    return ", ".join(parts)


def _span(config: Any, layer_type: str) -> LayerSpan:
    from llmscope.loading.modelconfig import SLIDING_TYPES, window_of

    window = window_of(config, layer_type)
    if layer_type == "chunked_attention" and window:
        return LayerSpan(chunk=window)
    if layer_type in SLIDING_TYPES and window:
        return LayerSpan(window=window)
    return LayerSpan()


def model_plan(model: Any) -> ModelPlan:
    """Read the model's layers: their types and spans (transformers' layer_types), the attention modules found."""
    from llmscope.loading.modelconfig import (
        attention_heads,
        head_dim,
        kv_heads,
        latent_fields,
        layer_types,
        text_config,
    )

    config = text_config(model.config)
    types = layer_types(model.config)
    modules = attention_modules(model)
    spans: dict[int, LayerSpan | None] = {}
    type_spans: dict[str, LayerSpan] = {}
    state_layers: dict[str, list[int]] = {}
    missing: list[int] = []
    for index, layer_type in enumerate(types):
        if layer_type in STATE_LAYER_TYPES:
            spans[index] = None
            state_layers.setdefault(layer_type, []).append(index)
            continue
        if index not in modules:
            spans[index] = None
            missing.append(index)
            continue
        spans[index] = type_spans[layer_type] = _span(config, layer_type)
    notes = [f"layers {_ranges(found)} ({kind}): a fixed recurrent state, no keys to mask, evict or quantize"
             for kind, found in state_layers.items()]
    if missing:
        notes.append(f"layers {_ranges(missing)}: no attention module with a layer index was found")
    if not type_spans:
        raise UsageError("the model has no attention layer a what-if can change",
                         hint="what-if works on models whose attention goes through transformers' attention interface")
    heads = attention_heads(config)
    return ModelPlan(spans=spans, type_spans=type_spans,
                     changed=frozenset(i for i, s in spans.items() if s is not None), notes=tuple(notes),
                     query_heads=heads, kv_heads=kv_heads(config) if heads else 0, head_dim=head_dim(config),
                     latent=latent_fields(config) is not None, layer_count=len(types))


def check_variant(variant: Variant, plan: ModelPlan) -> None:
    """The rules that need the model (exit 2 before anything runs): pooled heads divide the KV heads, narrow codes
    pack the head dimension."""
    if variant.kv_heads is not None and not plan.latent:
        if variant.kv_heads > plan.kv_heads or plan.kv_heads % variant.kv_heads:
            divisors = [g for g in range(1, plan.kv_heads + 1) if plan.kv_heads % g == 0]
            raise UsageError(f"kv-heads={variant.kv_heads}: the model has {plan.kv_heads} KV heads",
                             hint=f"kv-heads takes one of {', '.join(map(str, divisors))}")
    if variant.kv_bits is not None:
        problem = check_packable(plan.head_dim, variant.kv_bits)
        if problem:
            raise UsageError(f"kv-cache=int{variant.kv_bits}: {problem}")


def _pool(variant: Variant, plan: ModelPlan) -> Any:
    if variant.kv_heads is None or plan.latent or variant.kv_heads == plan.kv_heads:
        return None
    from llmscope.whatif.heads import pool_kv_heads

    def pool(model: Any) -> Any:
        modules = {i: m for i, m in attention_modules(model).items() if i in plan.changed}
        return pool_kv_heads(model, modules, plan.query_heads, plan.kv_heads, plan.head_dim, variant.kv_heads)

    return pool


def _variant_notes(variant: Variant, plan: ModelPlan, pooled: Any) -> tuple[str, ...]:
    notes = list(plan.notes) if not variant.unchanged else []
    if variant.kv_heads is not None:
        if plan.latent:
            notes.append("kv-heads: multi-head latent attention caches one latent per token, not KV heads: "
                         "every layer keeps its heads")
        elif pooled is not None and pooled.left:
            for reason in sorted(set(pooled.left.values())):
                indices = [i for i, why in pooled.left.items() if why == reason]
                notes.append(f"kv-heads: layers {_ranges(indices)} keep their heads: {reason}")
        elif variant.kv_heads == plan.kv_heads:
            notes.append(f"kv-heads: the model already has {plan.kv_heads} KV head(s): nothing to pool")
    return tuple(notes)


# ------------------------------------------------------------------------------------------- measurements


def _one_pass(model: Any, ids: tuple[int, ...], first: int, device: Any) -> torch.Tensor:
    """Log-probabilities [positions, vocab] (float32) predicting ids[first:], from one pass without a cache."""
    import torch

    from llmscope.generation.decoding import forward_options

    _, keep = forward_options(model)
    rows = len(ids) - first + 1
    extra = {"logits_to_keep": rows} if keep else {}
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False, **extra).logits[0]
        logits = logits[-rows:-1].float()
        return torch.log_softmax(logits, dim=-1)


@dataclass(frozen=True)
class _Quality:
    perplexity: float
    kl: tuple[float, ...]
    top1: float


def _quality(base: torch.Tensor, other: torch.Tensor, targets: list[int]) -> _Quality:
    """KL(base ‖ other) per position, the other model's perplexity on the targets, top-1 agreement."""
    import torch

    from llmscope.inspection.scoring import nll_summary

    kl: list[float] = []
    logprobs: list[float] = []
    same = 0
    for start in range(0, len(targets), KL_ROWS):
        a, b = base[start:start + KL_ROWS], other[start:start + KL_ROWS]
        kl += torch.sum(torch.exp(a) * (a - b), dim=-1).clamp_min(0.0).tolist()
        index = torch.tensor(targets[start:start + KL_ROWS], device=b.device)[:, None]
        logprobs += b.gather(1, index)[:, 0].tolist()
        same += int((a.argmax(dim=-1) == b.argmax(dim=-1)).sum())
    _, _, perplexity, _ = nll_summary(logprobs, 0)
    return _Quality(perplexity=float(perplexity or math.nan), kl=tuple(kl), top1=same / max(len(targets), 1))


@dataclass(frozen=True)
class _Generation:
    tokens: tuple[int, ...]
    after_prefill: int
    at_end: int
    end_tokens: int
    peak: int | None
    added: int | None
    tokens_per_s: float | None
    prefill_seconds: float


def release_freed_memory() -> None:
    """Hand memory that earlier runs freed back to the system (glibc's malloc_trim), so the next run's RSS peak is
    its own and not what the allocator kept. A no-op where there is no glibc."""
    import ctypes
    import ctypes.util

    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _generate(loaded: LoadedModel, ids: list[int], variant: Variant, plan: ModelPlan, state: Any,
              new_tokens: int, measure: bool = True) -> _Generation:
    """Greedy tokens after `ids` with the variant's own cache filling as it goes (state.cache while it runs)."""
    from llmscope.generation.decoding import decode_steps, pad_token_id, prompt_batch
    from llmscope.loading.peakmem import peak_memory, start_peak_memory

    model = loaded.model
    cache = variant_cache(model, variant, [plan.spans.get(i) for i in range(plan.layer_count)])
    state.cache = cache
    on_cuda = str(loaded.input_device).startswith("cuda")
    batch = prompt_batch([ids], pad_token_id(loaded.tokenizer), loaded.input_device)
    if measure:
        release_freed_memory()
    start = start_peak_memory(on_cuda) if measure else None
    tokens: list[int] = []
    seconds: list[float] = []
    after_prefill = 0
    try:
        for step in decode_steps(model, batch, new_tokens, cache=cache):
            if step.index == 0:
                after_prefill = cache_bytes(cache)
            tokens.append(step.token_ids[0])
            seconds.append(step.seconds)
    finally:
        state.cache = None
    peak = peak_memory(on_cuda) if measure else None
    decode = sum(seconds[1:])
    return _Generation(tokens=tuple(tokens), after_prefill=after_prefill, at_end=cache_bytes(cache),
                       end_tokens=len(ids) + max(len(tokens) - 1, 0), peak=peak,
                       added=peak - start if peak is not None and start is not None else None,
                       tokens_per_s=(len(seconds) - 1) / decode if len(seconds) > 1 and decode > 0 else None,
                       prefill_seconds=seconds[0] if seconds else 0.0)


# ------------------------------------------------------------------------------------------- the pass key

FILLER = ("The morning bus was late again. ", "A cat slept on the warm stone step. ",
          "Somebody left the radio on in the kitchen. ", "Rain tapped on the window all afternoon. ",
          "The baker sold the last loaf before noon. ", "Two boats drifted slowly across the lake. ")
PASSKEY_INTRO = "A pass key is hidden somewhere in the long text below. Find it and remember it.\n"
PASSKEY_QUESTION = "\nWhat is the pass key? The pass key is"


def passkey_key(seed: int, depth: float) -> str:
    """A 5-digit key, the same for every variant at one depth (so each variant looks for the same number)."""
    import random

    return str(random.Random(f"{seed}:{depth:.6f}").randint(10000, 99999))


def passkey_prompt(tokenizer: Any, depth: float, key: str, tokens: int) -> tuple[list[int], int]:
    """The probe's ids (at most `tokens`, as close to it as whole filler sentences allow): an instruction, filler
    sentences with the key sentence at `depth` of them, the question; and the token index where the key sentence
    starts."""
    needle = f"The pass key is {key}. Remember it: {key} is the pass key. "

    def build(count: int) -> tuple[str, str]:
        sentences = [FILLER[i % len(FILLER)] for i in range(count)]
        place = round(depth * count)
        before = PASSKEY_INTRO + "".join(sentences[:place])
        return before, before + needle + "".join(sentences[place:]) + PASSKEY_QUESTION

    def length(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    per_sentence = max(min(length(sentence) for sentence in FILLER) - length(""), 1)
    bare = length(build(0)[1])
    if bare > tokens:
        raise UsageError(f"the pass-key probe needs at least {bare} tokens with this tokenizer (got {tokens})",
                         hint="raise --passkey-tokens (the model's context permitting)")
    count = (tokens - bare) // per_sentence  # an upper bound: trimmed below
    while count and length(build(count)[1]) > tokens:
        count -= 1
    before, text = build(count)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"]), length(before)


def _passkeys(loaded: LoadedModel, variant: Variant, plan: ModelPlan, state: Any, settings: WhatIfSettings,
              length: int) -> tuple[PasskeyResult, ...]:
    import re

    found = []
    for depth in settings.passkey_depths:
        key = passkey_key(settings.passkey_seed, depth)
        ids, position = passkey_prompt(loaded.tokenizer, depth, key, length)
        run = _generate(loaded, ids, variant, plan, state, PASSKEY_NEW_TOKENS, measure=False)
        answer = loaded.tokenizer.decode(list(run.tokens), skip_special_tokens=True)
        digits = "".join(re.findall(r"\d", answer))
        found.append(PasskeyResult(depth=depth, key=key, found=digits.startswith(key), answer=answer,
                                   key_position=position, tokens=len(ids)))
    return tuple(found)


# ------------------------------------------------------------------------------------------- the run


def _formula(config: Any, variant: Variant, plan: ModelPlan, tokens: int, kv_dtype: str, pooled: bool) -> int:
    layout = variant_layout(variant, plan.type_spans, tokens, variant.kv_heads if pooled else None)
    return cache_size(config, tokens, 1, kv_dtype, layout=layout).kv_bytes


@dataclass(frozen=True)
class _Text:
    """The text's tokens and what the run needs to know about them and the model."""

    ids: tuple[int, ...]
    first_target: int
    context: int  # the length kv_cache_bytes_at_context is for
    passkey_tokens: int  # the probe's length, within the model's context


def _prepare(loaded: LoadedModel, text: str, settings: WhatIfSettings) -> _Text:
    """Tokenize TEXT as score does and check that it fits the model's context with -n tokens and the probe."""
    from llmscope.generation.prompts import check_ids_fit
    from llmscope.inspection.scoring import ScoreSettings, prepare_ids
    from llmscope.loading.modelconfig import context_length

    prepared = prepare_ids(loaded.tokenizer, text, ScoreSettings(max_tokens=settings.max_tokens))
    ids = prepared.ids
    check_ids_fit(loaded.model, ids)
    if len(ids) < 2:
        raise UsageError("the text is a single token: there is nothing to predict", hint="pass a longer text")
    limit = context_length(loaded.model.config)
    if limit is not None and len(ids) + settings.new_tokens > limit:
        raise UsageError(f"the text is {len(ids):,} tokens and -n {settings.new_tokens} more would pass the model's "
                         f"context of {limit:,}", hint="use --max-tokens or a smaller -n")
    passkey_tokens = min(settings.passkey_tokens, (limit or settings.passkey_tokens) - PASSKEY_NEW_TOKENS)
    if settings.passkey_depths and passkey_tokens < 32:
        raise UsageError(f"the model's context of {limit} tokens is too short for a pass-key probe")
    return _Text(ids=ids, first_target=prepared.first_target, context=settings.context or limit or len(ids),
                 passkey_tokens=passkey_tokens)


@dataclass(frozen=True)
class _Measured:
    """What one variant's run produced, before it is compared with the unchanged model's."""

    logprobs: Any  # torch.Tensor [positions, vocab]
    run: _Generation | None
    passkeys: tuple[PasskeyResult, ...]
    pooled: bool  # its KV heads were pooled in at least one layer
    notes: tuple[str, ...]


def _measure(loaded: LoadedModel, variant: Variant, plan: ModelPlan, text: _Text, settings: WhatIfSettings
             ) -> _Measured:
    """Apply the variant, read the text in one pass, generate -n tokens with its cache, run the probes."""
    spans = {i: s for i, s in plan.spans.items() if s is not None}
    with applied(loaded.model, variant, spans, set(plan.changed), _pool(variant, plan)) as state:
        logprobs = _one_pass(loaded.model, text.ids, text.first_target, loaded.input_device)
        run = _generate(loaded, list(text.ids), variant, plan, state, settings.new_tokens) \
            if settings.new_tokens else None
        passkeys = _passkeys(loaded, variant, plan, state, settings, text.passkey_tokens)
        pooled = state.pooled is not None and bool(state.pooled.layouts)
        return _Measured(logprobs, run, passkeys, pooled, _variant_notes(variant, plan, state.pooled))


def _variant_result(loaded: LoadedModel, variant: Variant, plan: ModelPlan, text: _Text, kv_dtype: str,
                    measured: _Measured, quality: _Quality, base_tokens: tuple[int, ...]) -> VariantResult:
    from llmscope.inspection.comparison import first_difference

    run, config = measured.run, loaded.model.config

    def formula(tokens: int) -> int:
        return _formula(config, variant, plan, tokens, kv_dtype, measured.pooled)

    return VariantResult(
        name=variant.name, spec=variant.spec, perplexity=quality.perplexity,
        kl_mean=math.fsum(quality.kl) / max(len(quality.kl), 1), kl_max=max(quality.kl, default=0.0),
        top1_agreement=quality.top1, kl_per_token=quality.kl,
        greedy_parts_at=first_difference(base_tokens, run.tokens) if run else None,
        continuation=loaded.tokenizer.decode(list(run.tokens), skip_special_tokens=True) if run else "",
        kv_cache_bytes=formula(len(text.ids)), kv_cache_bytes_at_context=formula(text.context),
        kv_cache_measured_bytes=run.after_prefill if run else None,
        kv_cache_end_bytes=run.at_end if run else None,
        kv_cache_end_expected_bytes=formula(run.end_tokens) if run else None,
        peak_memory_bytes=run.peak if run else None, peak_memory_added_bytes=run.added if run else None,
        decode_tokens_per_s=run.tokens_per_s if run else None,
        prefill_seconds=run.prefill_seconds if run else None, passkey=measured.passkeys,
        unchanged_layers=measured.notes)


def what_if(loaded: LoadedModel, text: str, settings: WhatIfSettings | None = None,
            progress: Callable[[int, int, str], None] | None = None) -> WhatIfResult:
    """Measure each variant of settings (or the preset sweep) against the unchanged model on TEXT.

    Args:
        loaded: the model and tokenizer (loader.load_model); any causal LM whose attention goes through
            transformers' attention interface.
        text: the text read in one pass (it must fit the model's context with -n tokens after it).
        settings: the variants, -n, --context, the pass-key depths.
        progress: called with (variants done, variants in all, the next variant's name) before each variant.
    Returns:
        WhatIfResult: one VariantResult per variant, the unchanged model first.
    Raises:
        UsageError for a text that does not fit, or a variant the model cannot take (kv-heads that do not divide
        its KV heads, codes that do not pack its head dimension).
    """
    from llmscope.loading.peakmem import memory_measure

    settings = settings or WhatIfSettings()
    started = time.perf_counter()
    plan = model_plan(loaded.model)
    variants = settings.variants or preset_variants(plan.kv_heads if not plan.latent else None)
    for variant in variants:
        check_variant(variant, plan)
    prepared = _prepare(loaded, text, settings)
    kv_dtype = loaded.dtype if loaded.dtype in ("float32", "bfloat16", "float16") else "float32"
    targets = list(prepared.ids[prepared.first_target:])
    results: list[VariantResult] = []
    baseline: _Measured | None = None
    for number, variant in enumerate((FULL, *variants)):
        if progress is not None:
            progress(number, len(variants) + 1, variant.name)
        measured = _measure(loaded, variant, plan, prepared, settings)
        baseline = baseline or measured
        quality = _quality(baseline.logprobs, measured.logprobs, targets)
        base_tokens = baseline.run.tokens if baseline.run else ()
        results.append(_variant_result(loaded, variant, plan, prepared, kv_dtype, measured, quality, base_tokens))
    return WhatIfResult(model=loaded.spec.name, text=text, tokens=len(prepared.ids), scored=len(targets),
                        context=prepared.context, new_tokens=settings.new_tokens, kv_dtype=kv_dtype,
                        memory_measure=memory_measure(str(loaded.input_device)), variants=tuple(results),
                        preset=not settings.variants, seconds=time.perf_counter() - started, settings=settings)
