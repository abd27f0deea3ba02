"""Compute: attention weights per layer and head, grouped by shared KV head, the choice of heads to show, and one
head taken apart (its q, k, v, scale and mask).
Returns dataclasses of plain values and never prints; it may import core, loading and other compute packages."""
