"""The KV cache a what-if really runs with: per attention layer, keys that no later query can see are evicted for
good (window, sinks, block patterns and the layer's own sliding window), and with kv-cache=intN every complete
block of positions is stored as narrow codes. It also predicts what a layer holds after N tokens (held_positions), the
figure kvcache.cache_size turns into bytes. It computes no attention and never prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmscope.architecture.kvcache import HeldPositions, KVLayout
from llmscope.whatif.kvquant import Codes, dequantize_keys, dequantize_values, quantize_keys, quantize_values
from llmscope.whatif.patterns import LayerSpan, retained
from llmscope.whatif.variants import Pattern, Variant

if TYPE_CHECKING:
    import torch


def held_positions(pattern: Pattern | None, span: LayerSpan, bits: int | None, group: int, tokens: int
                   ) -> HeldPositions:
    """What a VariantLayer holds after `tokens` tokens, whatever the steps they came in: eviction only ever drops
    keys that no later query can see, so the kept set depends on the count alone; with narrow codes, the kept
    positions before the last complete block boundary are codes (in key blocks of `group` positions), the rest
    wait in full precision."""
    import torch

    positions = torch.arange(tokens)
    kept = positions[retained(pattern, span, positions, tokens)]
    if bits is None:
        return HeldPositions(full=len(kept))
    boundary = group * (tokens // group)
    narrow = kept[kept < boundary]
    return HeldPositions(full=len(kept) - len(narrow), narrow=len(narrow),
                         key_blocks=len(torch.unique(narrow // group)) if len(narrow) else 0)


def variant_layout(variant: Variant, spans: dict[str, LayerSpan], tokens: int, pooled_heads: int | None
                   ) -> KVLayout:
    """The KVLayout of `variant` after `tokens` tokens, for kvcache.cache_size: per attention layer type (and its
    span), the positions it holds; the pooled head count; the code width."""
    held = {layer_type: held_positions(variant.pattern, span, variant.kv_bits, variant.quant_group, tokens)
            for layer_type, span in spans.items()}
    return KVLayout(kv_heads=pooled_heads, bits=variant.kv_bits, group=variant.quant_group, held=held)


def _layer_base() -> type:
    from transformers.cache_utils import DynamicLayer

    return DynamicLayer


class _Store:
    """One layer's kept keys and values: full-precision rows with their positions, and narrow rows (codes) with
    theirs; rows_block maps each narrow row to its key block's per-channel scale."""

    def __init__(self) -> None:
        self.full_keys: torch.Tensor | None = None
        self.full_values: torch.Tensor | None = None
        self.full_positions: torch.Tensor | None = None
        self.key_codes: Codes | None = None
        self.value_codes: Codes | None = None
        self.narrow_positions: torch.Tensor | None = None
        self.rows_block: torch.Tensor | None = None  # [narrow rows] -> index into key_codes' scale blocks


def make_layer(pattern: Pattern | None, span: LayerSpan, bits: int | None, group: int) -> Any:
    """A transformers cache layer (a DynamicLayer subclass) that evicts and stores as the variant says."""
    return variant_layer_class()(pattern, span, bits, group)


_LAYER_CLASS: list[type] = []


def variant_layer_class() -> type:
    """VariantLayer, built on first use (transformers is imported only when a what-if runs)."""
    if _LAYER_CLASS:
        return _LAYER_CLASS[0]
    import torch

    base = _layer_base()

    class VariantLayer(base):  # type: ignore[misc, valid-type]
        """A cache layer that returns every kept key (dequantized where narrow) plus the new ones in full
        precision, with their absolute positions (returned_positions) for the attention's mask; then stores the
        new keys, quantizes complete blocks and evicts what no later query can see."""

        is_croppable = False

        def __init__(self, pattern: Pattern | None, span: LayerSpan, bits: int | None, group: int) -> None:
            super().__init__()
            self.pattern, self.span, self.bits, self.group = pattern, span, bits, group
            self.is_sliding = span.window is not None or span.chunk is not None
            self.seen = 0
            self.store = _Store()
            self.returned_positions: torch.Tensor | None = None

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.device, self.dtype = key_states.device, key_states.dtype
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
                   ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            count = key_states.shape[-2]
            new_positions = torch.arange(self.seen, self.seen + count, device=key_states.device)
            keys, values, positions = self._readable(key_states.dtype)
            keys.append(key_states)
            values.append(value_states)
            positions.append(new_positions)
            self.returned_positions = torch.cat(positions)
            out_keys, out_values = torch.cat(keys, dim=-2), torch.cat(values, dim=-2)
            self.seen += count
            self._store(key_states, value_states, new_positions)
            return out_keys, out_values

        def _readable(self, dtype: torch.dtype) -> tuple[list[Any], list[Any], list[Any]]:
            store = self.store
            keys, values, positions = [], [], []
            if store.key_codes is not None and store.narrow_positions is not None and len(store.narrow_positions):
                keys.append(dequantize_keys(store.key_codes, store.rows_block, dtype))
                values.append(dequantize_values(store.value_codes, dtype))  # type: ignore[arg-type]
                positions.append(store.narrow_positions)
            if store.full_keys is not None:
                keys.append(store.full_keys)
                values.append(store.full_values)
                positions.append(store.full_positions)
            return keys, values, positions

        def _store(self, key_states: torch.Tensor, value_states: torch.Tensor, new_positions: torch.Tensor) -> None:
            store = self.store
            if store.full_keys is None:
                store.full_keys, store.full_values, store.full_positions = key_states, value_states, new_positions
            else:
                store.full_keys = torch.cat([store.full_keys, key_states], dim=-2)
                store.full_values = torch.cat([store.full_values, value_states], dim=-2)
                store.full_positions = torch.cat([store.full_positions, new_positions])
            if self.bits is not None:
                self._quantize_complete_blocks()
            self._evict()

        def _quantize_complete_blocks(self) -> None:
            store = self.store
            boundary = self.group * (self.seen // self.group)
            ready = store.full_positions < boundary
            if not bool(ready.any()):
                return
            for block in torch.unique(store.full_positions[ready] // self.group).tolist():
                rows = ready & (store.full_positions // self.group == block)
                self._append_narrow(store.full_keys[:, :, rows], store.full_values[:, :, rows],
                                    store.full_positions[rows])
            left = ~ready
            store.full_keys, store.full_values = store.full_keys[:, :, left], store.full_values[:, :, left]
            store.full_positions = store.full_positions[left]

        def _append_narrow(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> None:
            store, bits = self.store, self.bits
            assert bits is not None
            key_codes, value_codes = quantize_keys(keys, bits), quantize_values(values, bits, self.group)
            if store.key_codes is None:
                store.key_codes, store.value_codes = key_codes, value_codes
                store.narrow_positions = positions
                store.rows_block = torch.zeros(len(positions), dtype=torch.long, device=positions.device)
                return
            blocks = store.key_codes.scale.shape[-2]
            store.key_codes = Codes(torch.cat([store.key_codes.packed, key_codes.packed], dim=-2),
                                    torch.cat([store.key_codes.scale, key_codes.scale], dim=-2),
                                    torch.cat([store.key_codes.zero, key_codes.zero], dim=-2), bits, keys.shape[-1])
            old = store.value_codes
            assert old is not None
            store.value_codes = Codes(torch.cat([old.packed, value_codes.packed], dim=-2),
                                      torch.cat([old.scale, value_codes.scale], dim=-2),
                                      torch.cat([old.zero, value_codes.zero], dim=-2), bits, values.shape[-1])
            store.narrow_positions = torch.cat([store.narrow_positions, positions])  # type: ignore[list-item]
            store.rows_block = torch.cat([store.rows_block,  # type: ignore[list-item]
                                          torch.full((len(positions),), blocks, dtype=torch.long,
                                                     device=positions.device)])

        def _evict(self) -> None:
            store = self.store
            keep = retained(self.pattern, self.span, store.full_positions, self.seen)
            if not bool(keep.all()):
                store.full_keys, store.full_values = store.full_keys[:, :, keep], store.full_values[:, :, keep]
                store.full_positions = store.full_positions[keep]
            if store.narrow_positions is None or not len(store.narrow_positions):
                return
            keep = retained(self.pattern, self.span, store.narrow_positions, self.seen)
            if bool(keep.all()):
                return
            keys, values = store.key_codes, store.value_codes
            assert keys is not None and values is not None and store.rows_block is not None
            live, rows_block = torch.unique(store.rows_block[keep], return_inverse=True)
            store.key_codes = Codes(keys.packed[:, :, keep], keys.scale[:, :, live], keys.zero[:, :, live],
                                    keys.bits, keys.channels)
            store.value_codes = Codes(values.packed[:, :, keep], values.scale[:, :, keep], values.zero[:, :, keep],
                                      values.bits, values.channels)
            store.narrow_positions, store.rows_block = store.narrow_positions[keep], rows_block

        # ---- what the cache reports to transformers and to the measurements

        def get_seq_length(self) -> int:
            return self.seen

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            """The mask transformers builds is not read (the attention masks by positions); its size is what
            update will return."""
            return self.held().full + self.held().narrow + query_length, 0

        def get_max_length(self) -> int:
            return -1

        def held(self) -> HeldPositions:
            store = self.store
            full = 0 if store.full_positions is None else len(store.full_positions)
            narrow = 0 if store.narrow_positions is None else len(store.narrow_positions)
            blocks = store.key_codes.scale.shape[-2] if store.key_codes is not None and narrow else 0
            return HeldPositions(full=full, narrow=narrow, key_blocks=blocks)

        def stored_bytes(self) -> int:
            """Bytes of the tensors that hold keys and values (codes, scales, full-precision rows); the position
            index beside them is bookkeeping and not counted."""
            store = self.store
            total = 0
            for tensor in (store.full_keys, store.full_values):
                if tensor is not None:
                    total += tensor.numel() * tensor.element_size()
            if store.narrow_positions is not None and len(store.narrow_positions):
                total += store.key_codes.nbytes + store.value_codes.nbytes  # type: ignore[union-attr]
            return total

        def reset(self) -> None:
            self.seen = 0
            self.store = _Store()
            self.returned_positions = None
            self.is_initialized = False

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("a what-if cache that evicts or quantizes cannot be cropped")

    _LAYER_CLASS.append(VariantLayer)
    return VariantLayer


def variant_cache(model: Any, variant: Variant, spans: list[LayerSpan | None]) -> Any:
    """A transformers DynamicCache for `model` whose attention layers are VariantLayers (spans[i] is layer i's own
    span; None keeps transformers' layer, for linear-attention and other state layers)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    if len(cache.layers) != len(spans):
        raise ValueError(f"the model's cache has {len(cache.layers)} layers, its attention plan {len(spans)}")
    for index, span in enumerate(spans):
        if span is not None:
            cache.layers[index] = make_layer(variant.pattern, span, variant.kv_bits, variant.quant_group)
    return cache


def cache_bytes(cache: Any) -> int:
    """Bytes every VariantLayer of the cache holds (stored_bytes), the measured side of kvcache.cache_size."""
    return sum(layer.stored_bytes() for layer in cache.layers if hasattr(layer, "stored_bytes"))
