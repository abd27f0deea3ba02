"""Compute: attention weights per layer and head, grouped by shared KV head, and the choice of heads to show.
Returns dataclasses of plain values and never prints; it may import core, loading and other compute packages."""
