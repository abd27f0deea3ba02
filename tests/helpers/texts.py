"""Texts several tests score, compare or run in batches, and the fuzzed text strategy."""

from __future__ import annotations

from hypothesis import strategies as st

PARAGRAPH = (
    "Paris is the capital and largest city of France. It sits on the river Seine, in the north of the country, "
    "and has been a centre of trade, science and the arts for many centuries. Visitors come to see its museums, "
    "its old churches and the iron tower that was built for a world fair at the end of the nineteenth century.")

# Prompts of different lengths for --batch against single runs.
BATCH_PROMPTS = ["The capital of France is", "Hello", "Write an email to Sarah about the tokens and ids", "def main():"]

# Any UTF-8 text up to 200 characters, or one character repeated 500-3000 times (long inputs, sliding windows).
FUZZ_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200) | st.builds(
    lambda c, n: c * n, st.characters(codec="utf-8", exclude_categories=("Cs",)), st.integers(500, 3000))
