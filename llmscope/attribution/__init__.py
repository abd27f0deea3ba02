"""Compute: which input tokens made the model say its token (occlusion, gradients, integrated gradients,
rollout), a registry of methods with their settings. Never prints; imports core, loading, other compute packages."""
