"""Batch and cache invariance in one place: kernels.py holds the invariant linears and attention the loader installs
(load layer: torch only), check.py runs check-invariance on a loaded model (compute layer: it uses generation's decode
core). Two layers, one subject: tests/test_import_graph.py ranks invariance.kernels with loading, the rest above it."""
