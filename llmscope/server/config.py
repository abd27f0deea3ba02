"""What `llmscope serve` was asked for, checked before any load (address, key, batching, shutdown), and the plan it
prints with --check. Imports nothing heavy: no torch, no Starlette."""

from __future__ import annotations

from dataclasses import dataclass

from llmscope.core.errors import UsageError
from llmscope.core.settings import real_number, whole_number

MAX_BODY_BYTES = 4 * 1024 * 1024  # a request body past this gets 413

ROUTES = (
    ("GET", "/health", "liveness, queue length and batching counters (no key needed)"),
    ("GET", "/v1/models", "the served model (OpenAI)"),
    ("POST", "/v1/completions", "prompt or list, max_tokens, temperature, top_p, seed, stop, logprobs, echo, stream"),
    ("POST", "/v1/chat/completions", "messages, logprobs / top_logprobs, stream (OpenAI)"),
    ("POST", "/llmscope/v1/tokenize", "ids, pieces and spans (tokenize --json)"),
    ("POST", "/llmscope/v1/next-token", "the full top-k with logits and entropy (next-token --json)"),
    ("POST", "/llmscope/v1/score", "per-token figures, perplexity (score --json)"),
    ("POST", "/llmscope/v1/generate", "generate --json, with --logprobs and entropy"),
)


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000  # 0: a free port, chosen by the system and printed
    api_key: str | None = None
    max_batch: int = 8
    max_queue: int = 64
    shutdown_timeout: float = 10.0  # seconds in-flight requests get after SIGTERM before they are cancelled

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise UsageError("--host is empty", hint="use 127.0.0.1 (this machine) or 0.0.0.0 (every interface)")
        whole_number("--port", self.port, 0, 65535)
        whole_number("--max-batch", self.max_batch, 1, 256)
        whole_number("--max-queue", self.max_queue, 1, 100_000)
        real_number("--shutdown-timeout", self.shutdown_timeout, 1.0, 3600.0)
        if self.api_key is not None and not self.api_key.strip():
            raise UsageError("--api-key is empty", hint="leave it out to serve without a key")

    def warnings(self) -> tuple[str, ...]:
        if self.host not in ("127.0.0.1", "localhost", "::1") and self.api_key is None:
            return (f"serving on {self.host} without --api-key: anyone who can reach this address can use the model",)
        return ()


@dataclass(frozen=True)
class ServePlan:
    """What a server serves (`serve --check` prints it without listening)."""

    url: str
    model: str
    api_key_required: bool
    max_batch: int
    max_queue: int
    shutdown_timeout: float
    routes: tuple[tuple[str, str, str], ...] = ROUTES


def plan_for(settings: ServeSettings, model: str, port: int | None = None) -> ServePlan:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return ServePlan(url=f"http://{host}:{settings.port if port is None else port}", model=model,
                     api_key_required=settings.api_key is not None, max_batch=settings.max_batch,
                     max_queue=settings.max_queue, shutdown_timeout=settings.shutdown_timeout)


@dataclass(frozen=True)
class ServeSummary:
    """What a server served, from start to stop (serve's result when it exits)."""

    url: str
    seconds: float
    requests: int  # handed to the model worker (refused and malformed requests are not counted)
    batches: int
    rows: int
    largest_batch: int
