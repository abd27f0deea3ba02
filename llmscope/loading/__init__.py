"""The load layer: model specs, the one loader, devices and threads, the GGUF conversion cache, load errors, the
config reader, tokenizers and packed weights (quant/). It may import llmscope.core and the invariant kernels it
installs and self-tests (llmscope.invariance.kernels, .selftest) only; it never prints."""
