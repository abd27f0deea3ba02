"""Compute: timed runs (with and without the KV cache), their medians and spreads, and the busy-machine rule.
Returns dataclasses of plain values and never prints; it may import core, loading and other compute packages."""
