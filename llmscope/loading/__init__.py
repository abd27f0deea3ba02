"""The load layer: model specs, the one loader, devices and threads, the GGUF conversion cache, load errors, the
config reader, tokenizers and packed weights (quant/). It may import llmscope.core only; it never prints."""
