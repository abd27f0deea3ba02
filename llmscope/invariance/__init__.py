"""Compute: checks that a prompt's numbers do not depend on how it was run (alone, in a shuffled padded batch, token by
token with the KV cache). Returns dataclasses of plain values and never prints; it may import core, loading and other
compute packages."""
