"""Compute: what a model is from its configuration alone: attention per layer type, KV-cache sizes, parameters,
the memory planner and the module tree. Never prints; it may import core, loading and other compute packages."""
