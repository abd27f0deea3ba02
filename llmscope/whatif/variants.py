"""The what-if variant grammar: a spec such as `sinks=4,window=28+kv-cache=int4` parsed into a Variant, checked
before any model loads, and the preset sweep used when no --variant is given. No torch, no model."""

from __future__ import annotations

from dataclasses import dataclass

from llmscope.core.errors import UsageError

KV_CACHE_BITS = {"int8": 8, "int4": 4, "int2": 2}
QUANT_GROUP = 32  # tokens per key-scale block and channels per value-scale group (KIVI's group size)

# Each attention pattern is named by the set of keys its part holds; the first key names it.
PATTERN_KEYS: dict[frozenset[str], str] = {
    frozenset({"window"}): "window",
    frozenset({"sinks", "window"}): "sinks",
    frozenset({"strided"}): "strided",
    frozenset({"block"}): "block",
    frozenset({"block", "global"}): "block",
    frozenset({"random"}): "random",
    frozenset({"random", "seed"}): "random",
    frozenset({"topk"}): "topk",
}
ZERO_ALLOWED = ("global", "seed")  # keys that may be 0; every other number must be at least 1

GRAMMAR_HELP = (
    "SPEC is one or more parts joined by '+': an attention pattern (window=W: the last W keys; sinks=S,window=W: "
    "the first S tokens plus the last W; strided=K: the last K keys and every K-th before; block=B,global=G: the "
    "query's own block of B tokens plus the first G tokens; random=R,seed=N: R random earlier keys plus its own; "
    "topk=K: the K keys with the highest scores), kv-heads=G (mean-pool the key/value projection heads into G "
    "groups; 1 is multi-query) and kv-cache=int8|int4|int2 (keys quantized per channel, values per token, in "
    f"groups of {QUANT_GROUP}). At most one of each kind, e.g. sinks=4,window=28+kv-cache=int4."
)


@dataclass(frozen=True)
class Pattern:
    """Which earlier keys a query may see (on top of the model's own causal and sliding-window mask)."""

    kind: str  # window | sinks | strided | block | random | topk
    window: int = 0  # window, sinks: the last `window` keys (the query's own included)
    sinks: int = 0  # sinks: the first `sinks` tokens of the sequence
    stride: int = 0  # strided: the last `stride` keys and every `stride`-th key before them
    block: int = 0  # block: the query's own block of `block` positions
    global_tokens: int = 0  # block: the first `global_tokens` positions, seen by every query
    random: int = 0  # random: this many earlier keys drawn per query (its own key always)
    seed: int = 0  # random: the draw is a function of (seed, query position, key position)
    topk: int = 0  # topk: the highest-scoring keys kept per query and head

    @property
    def spec(self) -> str:
        return {
            "window": f"window={self.window}",
            "sinks": f"sinks={self.sinks},window={self.window}",
            "strided": f"strided={self.stride}",
            "block": f"block={self.block},global={self.global_tokens}",
            "random": f"random={self.random},seed={self.seed}",
            "topk": f"topk={self.topk}",
        }[self.kind]

    @property
    def evicts(self) -> bool:
        """Whether a cache can drop keys for good: only patterns whose future queries never look back past a
        point (windows, sinks, blocks). Strided, random and top-k queries may reach any earlier key."""
        return self.kind in ("window", "sinks", "block")


@dataclass(frozen=True)
class Variant:
    """One what-if: an attention pattern, pooled KV heads and a narrow KV cache, each optional. The unchanged
    model is the Variant with none of them (name "full", spec "")."""

    pattern: Pattern | None = None
    kv_heads: int | None = None  # key/value heads after mean-pooling
    kv_bits: int | None = None  # 8, 4 or 2: keys and values stored as codes this wide
    quant_group: int = QUANT_GROUP

    @property
    def spec(self) -> str:
        parts = [self.pattern.spec] if self.pattern else []
        if self.kv_heads is not None:
            parts.append(f"kv-heads={self.kv_heads}")
        if self.kv_bits is not None:
            parts.append(f"kv-cache=int{self.kv_bits}")
        return "+".join(parts)

    @property
    def name(self) -> str:
        return self.spec or "full"

    @property
    def unchanged(self) -> bool:
        return self.pattern is None and self.kv_heads is None and self.kv_bits is None


FULL = Variant()


def _number(part: str, key: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--variant {part!r}: {key} takes a whole number (got {text!r})") from None
    least = 0 if key in ZERO_ALLOWED else 1
    if value < least:
        raise UsageError(f"--variant {part!r}: {key} must be at least {least} (got {value})")
    return value


def _fields(part: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in part.split(","):
        key, equals, value = item.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key or not value:
            raise UsageError(f"--variant {part!r}: {item.strip()!r} is not KEY=VALUE",
                             hint="e.g. window=32, sinks=4,window=28, kv-heads=1, kv-cache=int4")
        if key in fields:
            raise UsageError(f"--variant {part!r} gives {key} twice")
        fields[key] = value
    return fields


def _pattern(part: str, fields: dict[str, str]) -> Pattern:
    kind = PATTERN_KEYS.get(frozenset(fields))
    if kind is None:
        known = sorted({key for keys in PATTERN_KEYS for key in keys} | {"kv-heads", "kv-cache"})
        unknown = [key for key in fields if key not in known]
        what = (f"unknown key {unknown[0]!r}" if unknown else
                f"no variant takes {', '.join(sorted(fields))} together")
        raise UsageError(f"--variant {part!r}: {what}", hint=f"keys: {', '.join(known)}; see llmscope what-if --help")
    numbers = {key: _number(part, key, value) for key, value in fields.items()}
    if kind == "window":
        return Pattern("window", window=numbers["window"])
    if kind == "sinks":
        return Pattern("sinks", sinks=numbers["sinks"], window=numbers["window"])
    if kind == "strided":
        return Pattern("strided", stride=numbers["strided"])
    if kind == "block":
        return Pattern("block", block=numbers["block"], global_tokens=numbers.get("global", 0))
    if kind == "random":
        return Pattern("random", random=numbers["random"], seed=numbers.get("seed", 0))
    return Pattern("topk", topk=numbers["topk"])


def parse_variant(spec: str) -> Variant:
    """A --variant SPEC as a Variant (see GRAMMAR_HELP); 'full' or '' is the unchanged model.

    Raises UsageError (exit 2) with one line naming the faulty part: this runs before any model loads.
    """
    text = spec.strip()
    if text in ("", "full"):
        return FULL
    pattern: Pattern | None = None
    kv_heads: int | None = None
    kv_bits: int | None = None
    for raw in text.split("+"):
        part = raw.strip()
        if not part:
            raise UsageError(f"--variant {spec!r} has an empty part", hint="join parts with a single '+'")
        fields = _fields(part)
        if "kv-heads" in fields or "kv-cache" in fields:
            if len(fields) > 1:
                raise UsageError(f"--variant {part!r}: kv-heads and kv-cache are parts of their own",
                                 hint="join them with '+', e.g. window=64+kv-heads=1")
            if "kv-heads" in fields:
                if kv_heads is not None:
                    raise UsageError(f"--variant {spec!r} gives kv-heads twice")
                kv_heads = _number(part, "kv-heads", fields["kv-heads"])
            else:
                if kv_bits is not None:
                    raise UsageError(f"--variant {spec!r} gives kv-cache twice")
                name = fields["kv-cache"].lower()
                if name not in KV_CACHE_BITS:
                    raise UsageError(f"--variant {part!r}: kv-cache takes {' | '.join(KV_CACHE_BITS)} (got "
                                     f"{fields['kv-cache']!r})")
                kv_bits = KV_CACHE_BITS[name]
            continue
        if pattern is not None:
            raise UsageError(f"--variant {spec!r} gives two attention patterns ({pattern.spec} and {part})",
                             hint="one pattern per variant; give --variant again for another")
        pattern = _pattern(part, fields)
    return Variant(pattern=pattern, kv_heads=kv_heads, kv_bits=kv_bits)


def parse_variants(specs: list[str] | tuple[str, ...] | None) -> tuple[Variant, ...]:
    """Every --variant, parsed and without repeats (the unchanged model is always measured, first)."""
    seen: dict[str, Variant] = {}
    for spec in specs or ():
        variant = parse_variant(spec)
        if not variant.unchanged:
            seen.setdefault(variant.spec, variant)
    return tuple(seen.values())


# The sweep without --variant, in the order the chapter tells it: local windows and what sinks give back, the
# fixed patterns (strided, blocks with global tokens), random and content-based sparsity, then fewer KV heads and
# narrower caches. kv-heads choices depend on the model (preset_variants).
PRESET_SPECS = ("window=32", "sinks=4,window=28", "window=128", "sinks=4,window=124", "strided=32",
                "block=64,global=4", "random=32,seed=0", "topk=32")
PRESET_CACHE_SPECS = ("kv-cache=int8", "kv-cache=int4", "kv-cache=int2")


def kv_head_choices(kv_heads: int) -> tuple[int, ...]:
    """The pooled head counts the sweep tries: grouped-query at about half the model's KV heads (when that is a
    proper divisor above 1), then multi-query (1); nothing when the model already has one KV head."""
    if kv_heads <= 1:
        return ()
    half = [g for g in range(kv_heads // 2, 1, -1) if kv_heads % g == 0]
    return (*half[:1], 1)


def preset_variants(kv_heads: int | None) -> tuple[Variant, ...]:
    """The sweep: PRESET_SPECS, kv-heads at kv_head_choices (when the model's KV heads can be pooled), then
    PRESET_CACHE_SPECS."""
    heads = tuple(f"kv-heads={g}" for g in kv_head_choices(kv_heads or 0))
    return parse_variants([*PRESET_SPECS, *heads, *PRESET_CACHE_SPECS])
