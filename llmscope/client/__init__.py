"""The --endpoint client: asks a running server (llmscope serve, vLLM, llama.cpp, ollama) and turns its answers
into the same result dataclasses as a local run. It may import core, loading, compute and server.openai_shapes."""
