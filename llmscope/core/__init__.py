"""The bottom layer: errors, result dataclasses of plain values, option settings checked before any load, and
small statistics helpers. It imports nothing else from llmscope; everything else may import it."""
