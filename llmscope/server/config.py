"""What `llmscope serve` was asked for, checked before any load (address, key, batching, per-request caps,
timeouts, the Host rule, shutdown), and the plan it prints with --check. Imports nothing heavy: no torch, no
Starlette."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from llmscope.core.command_settings import real_number, whole_number
from llmscope.core.errors import UsageError

MAX_BODY_BYTES = 4 * 1024 * 1024  # a request body past this gets 413
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")

ROUTES = (
    ("GET", "/health", "liveness (no key needed); with the key also the queue and the engine's counters"),
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
    # What one request may ask for (more is refused with 400 before any work):
    max_top_k: int = 100  # alternatives per position (next-token top_k, score top_k, generate logprobs)
    max_steps: int = 64  # next-token steps
    max_tokens: int = 8192  # prompt tokens + tokens to generate, over all the prompts of one request
    max_answer_bytes: int = 32 * 1024 * 1024  # the JSON answer's size (estimated before the work, checked after)
    job_timeout: float = 300.0  # seconds one job may run once started; then it stops and its request gets 504
    # Connections:
    max_connections: int = 64  # open connections; more are closed on arrival (and requests past it get 503)
    header_timeout: float = 10.0  # seconds a connection has to send a request's head (and, after it, its body)
    keep_alive_timeout: float = 5.0  # seconds an idle keep-alive connection is kept open
    allowed_hosts: tuple[str, ...] = ()  # Host header names accepted besides the bound ones ("*": any)

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise UsageError("--host is empty", hint="use 127.0.0.1 (this machine) or 0.0.0.0 (every interface)")
        whole_number("--port", self.port, 0, 65535)
        whole_number("--max-batch", self.max_batch, 1, 256)
        whole_number("--max-queue", self.max_queue, 1, 100_000)
        real_number("--shutdown-timeout", self.shutdown_timeout, 1.0, 3600.0)
        whole_number("--max-top-k", self.max_top_k, 1, 1 << 20)
        whole_number("--max-steps", self.max_steps, 1, 4096)
        whole_number("--max-tokens", self.max_tokens, 1, 1 << 24)
        whole_number("--max-answer-bytes", self.max_answer_bytes, 1024, 1 << 34)
        real_number("--job-timeout", self.job_timeout, 0.1, 86_400.0)
        whole_number("--max-connections", self.max_connections, 1, 100_000)
        real_number("--header-timeout", self.header_timeout, 0.1, 3600.0)
        real_number("--keep-alive-timeout", self.keep_alive_timeout, 0.1, 3600.0)
        for name in self.allowed_hosts:
            if not name.strip() or any(c in name for c in "/ ,"):
                raise UsageError(f"--allowed-host {name!r} is not a host name",
                                 hint="pass one name per option, without scheme or port: --allowed-host box.lan")
        if self.api_key is not None and not self.api_key.strip():
            raise UsageError("--api-key is empty", hint="leave it out to serve without a key")

    def host_names(self) -> frozenset[str]:
        """The Host header names this server answers (lower case, no port): the bound address, the loopback
        names and --allowed-host; any IP address is accepted too (see host_allowed)."""
        return frozenset(name.lower().strip("[]") for name in (self.host, *LOCAL_NAMES, *self.allowed_hosts))

    def warnings(self) -> tuple[str, ...]:
        if self.host not in ("127.0.0.1", "localhost", "::1") and self.api_key is None:
            return (f"serving on {self.host} without --api-key: anyone who can reach this address can use the model",)
        return ()


def check_address(host: str) -> None:
    """Refuse a --host that names no address of this machine's resolver (before the minutes of a load)."""
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise UsageError(f"--host {host} is not an address this machine can listen on ({reason})",
                         hint="use 127.0.0.1 (this machine) or 0.0.0.0 (every interface)") from None


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """Whether a request's Host header may be answered. A DNS-rebinding page reaches the server under a name of
    the attacker's choosing, never under an IP address, so: any IP address, or a name in `names` ("*" in it
    accepts every name). A request without a Host header (HTTP/1.0, no browser sends one) is accepted."""
    if header is None:
        return True
    value = header.strip().lower()
    if value.startswith("["):  # [IPv6]:port
        host = value[1:value.find("]")] if "]" in value else value[1:]
    else:
        host = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    if not host:
        return False
    if "*" in names or host in names:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ServePlan:
    """What a server serves (`serve --check` prints it without listening)."""

    url: str
    model: str
    api_key_required: bool
    max_batch: int
    max_queue: int
    shutdown_timeout: float
    limits: tuple[tuple[str, str], ...] = ()  # (option, value) of the caps and timeouts, for the plan's table
    routes: tuple[tuple[str, str, str], ...] = ROUTES


def plan_for(settings: ServeSettings, model: str, port: int | None = None) -> ServePlan:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return ServePlan(url=f"http://{host}:{settings.port if port is None else port}", model=model,
                     api_key_required=settings.api_key is not None, max_batch=settings.max_batch,
                     max_queue=settings.max_queue, shutdown_timeout=settings.shutdown_timeout,
                     limits=limits_of(settings))


def limits_of(settings: ServeSettings) -> tuple[tuple[str, str], ...]:
    """The per-request caps, timeouts and Host rule as (option, value) pairs."""
    return (("--max-top-k", f"{settings.max_top_k:,}"), ("--max-steps", f"{settings.max_steps:,}"),
            ("--max-tokens", f"{settings.max_tokens:,}"), ("--max-answer-bytes", f"{settings.max_answer_bytes:,}"),
            ("--job-timeout", f"{settings.job_timeout:g} s"), ("--max-connections", f"{settings.max_connections:,}"),
            ("--header-timeout", f"{settings.header_timeout:g} s"),
            ("--keep-alive-timeout", f"{settings.keep_alive_timeout:g} s"),
            ("--allowed-host", ", ".join(sorted(settings.host_names())) + " and any IP address"))


@dataclass(frozen=True)
class ServeSummary:
    """What a server served, from start to stop (serve's result when it exits)."""

    url: str
    seconds: float
    requests: int  # handed to the model worker (refused and malformed requests are not counted)
    batches: int
    rows: int
    largest_batch: int
