"""Compute: activation patching and ablation (causal tracing): sites described as data, found in any transformers
model's modules, hooks that capture and replace activations, the layer x position maps. Never prints; imports core,
loading and generation (prompts) only."""
