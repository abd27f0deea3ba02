"""What `llmscope what-if` measured, as frozen dataclasses of plain values (no tensors), and the settings that ask
for it, checked on creation before any model loads."""

from __future__ import annotations

from dataclasses import dataclass

from llmscope.core.errors import UsageError
from llmscope.whatif.variants import Variant

DEFAULT_PASSKEY_TOKENS = 480


MAX_CONTEXT = 2**24  # 16,777,216 tokens: past any model's context today, a 128 MiB positions tensor

@dataclass(frozen=True)
class WhatIfSettings:
    """What to try and how much to measure. An empty `variants` runs the preset sweep."""

    variants: tuple[Variant, ...] = ()
    new_tokens: int = 32  # greedy tokens generated with each variant's cache (0: no generation figures)
    context: int | None = None  # the length kv_cache_bytes_at_context is given for (None: the model's context)
    passkey_depths: tuple[float, ...] = ()  # where the pass key sits in the probe, 0 = start, 1 = end
    passkey_tokens: int = DEFAULT_PASSKEY_TOKENS  # the probe's length
    passkey_seed: int = 0
    max_tokens: int | None = None  # read at most this many tokens of the text

    def __post_init__(self) -> None:
        if self.new_tokens < 0:
            raise UsageError(f"-n must be 0 or more (got {self.new_tokens})")
        if self.context is not None and self.context < 1:
            raise UsageError(f"--context must be at least 1 token (got {self.context})")
        if self.context is not None and self.context > MAX_CONTEXT:
            # the eviction rules are evaluated over every position up to --context: bounded memory, checked first
            raise UsageError(f"--context must be at most {MAX_CONTEXT:,} tokens (got {self.context:,})")
        for depth in self.passkey_depths:
            if not 0.0 <= depth <= 1.0:
                raise UsageError(f"--passkey-depth takes fractions from 0 to 1 (got {depth:g})",
                                 hint="0 puts the key at the start of the filler, 1 at its end")
        if self.passkey_tokens < 64:
            raise UsageError(f"--passkey-tokens must be at least 64 (got {self.passkey_tokens})")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise UsageError(f"--max-tokens must be at least 2 (got {self.max_tokens})")


@dataclass(frozen=True)
class PasskeyResult:
    """One pass-key probe: the key at `depth` of the filler, and what the model said after the question."""

    depth: float
    key: str
    found: bool
    answer: str  # the greedy continuation after "The pass key is"
    key_position: int  # the token index the key sentence starts at
    tokens: int  # the probe's length in tokens


@dataclass(frozen=True)
class VariantResult:
    """One variant against the unchanged model on the same tokens (the unchanged model's own row has KL 0)."""

    name: str
    spec: str
    perplexity: float
    kl_mean: float  # nats, KL(unchanged ‖ variant) averaged over the scored positions
    kl_max: float
    top1_agreement: float  # share of positions (0..1) whose most likely token is the unchanged model's
    kl_per_token: tuple[float, ...]  # along the text, one per scored position
    greedy_parts_at: int | None  # the first generated token that differs from the unchanged model's (None: none)
    continuation: str  # the greedy continuation's text
    kv_cache_bytes: int  # the formula (kvcache.cache_size) at the text's length
    kv_cache_bytes_at_context: int  # the formula at --context tokens
    kv_cache_measured_bytes: int | None  # the cache's own tensors right after reading the text
    kv_cache_end_bytes: int | None  # ... after the -n generated tokens
    kv_cache_end_expected_bytes: int | None  # the formula at that length
    peak_memory_bytes: int | None  # the generation's peak (CUDA allocator, or the process's RSS high-water mark)
    peak_memory_added_bytes: int | None  # that peak minus the memory in use when the generation started
    decode_tokens_per_s: float | None
    prefill_seconds: float | None
    passkey: tuple[PasskeyResult, ...]
    unchanged_layers: tuple[str, ...]  # layers the variant could not change, and why


@dataclass(frozen=True)
class WhatIfResult:
    model: str
    text: str
    tokens: int  # tokens read (BOS included when the tokenizer adds one)
    scored: int  # positions compared
    context: int  # the length kv_cache_bytes_at_context is for
    new_tokens: int
    kv_dtype: str  # the dtype full-precision keys and values are cached in
    memory_measure: str  # what peak_memory_bytes is on this device
    variants: tuple[VariantResult, ...]
    preset: bool  # no --variant: the preset sweep
    seconds: float
    settings: WhatIfSettings
