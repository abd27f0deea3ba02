"""`llmscope serve`: a warm model behind an OpenAI-compatible HTTP API (Starlette on uvicorn), plus llmscope's own
routes. The package translates HTTP to library calls and back; it computes nothing the library does not."""
