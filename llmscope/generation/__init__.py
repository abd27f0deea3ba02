"""Compute: the one decode-step core, prompt building (chat template, context checks) and text generation.
Returns dataclasses of plain values and never prints; it may import llmscope.core and llmscope.loading."""
