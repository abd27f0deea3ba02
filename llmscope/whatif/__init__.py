"""Compute: what-if experiments on a loaded model's attention (sparse patterns, pooled KV heads, a narrow KV cache):
the variant grammar, the masks, the cache that evicts or stores narrow values, and the measurements against the
unchanged model. Returns dataclasses of plain values and never prints; it may import core, loading, generation,
inspection and architecture."""
