"""Batch and cache invariance in one place: kernels.py holds the invariant linears and attention the loader installs,
selftest.py probes them on the machine at hand and picks their tile size (both load layer: torch and the cache
root only), check.py runs check-invariance on a loaded model (compute layer: it uses generation's decode core). Two
layers, one subject: tests/test_import_graph.py ranks invariance.kernels and .selftest with loading, the rest above."""
