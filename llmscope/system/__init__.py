"""Compute: the machine and its versions (the env command) and the run metadata stamped on benchmark results.
Never prints; it may import core, loading and other compute packages."""
