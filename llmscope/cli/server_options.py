"""The options `serve` and `explore` share, declared once: the API key, the Host rule, the queue, the per-request
caps, the job and shutdown timeouts and the connection limits. Their defaults are ServeSettings'; nothing is checked
here (ServeSettings checks the values) and nothing heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from llmscope.server.config import ServeSettings

DEFAULTS = ServeSettings()

ServeApiKeyOpt = Annotated[str | None, typer.Option(
    "--api-key", envvar="LLMSCOPE_API_KEY", help="Require the key on every route but /health: 'Authorization: "
    "Bearer KEY', or the page's cookie, set by opening /explore?token=KEY. Default: $LLMSCOPE_API_KEY, else no key.",
    show_default=False)]
AllowedHostOpt = Annotated[list[str] | None, typer.Option(
    "--allowed-host", metavar="NAME", help="Also answer requests whose Host header is NAME (repeat for more; "
    "'*' for any). Default: the --host address, localhost and any IP address; other names get 400, which "
    "stops DNS-rebinding pages.", show_default=False)]
MaxQueueOpt = Annotated[int, typer.Option("--max-queue", help="Requests waiting beyond this get 503 (busy).")]
ShutdownTimeoutOpt = Annotated[float, typer.Option(
    "--shutdown-timeout", metavar="SECONDS", help="After SIGTERM or Ctrl-C: time (1 s or more) in-flight requests "
    "get to finish; then they get 503 and the server exits 0. A second signal answers them with 503 at once.")]
MaxTopKOpt = Annotated[int, typer.Option(
    "--max-top-k", help="Most alternatives per position one request may ask for (next-token and score top_k, "
    "generate logprobs); more gets 400.")]
MaxStepsOpt = Annotated[int, typer.Option(
    "--max-steps", help="Most next-token steps, and attribution steps on explore's page, per request; more gets "
    "400.")]
ServeMaxTokensOpt = Annotated[int, typer.Option(
    "--max-tokens", help="Most prompt + new tokens per request, over all its prompts; more gets 400.")]
MaxAnswerBytesOpt = Annotated[int, typer.Option(
    "--max-answer-bytes", metavar="BYTES", help="Largest JSON answer (and line of a streamed one); a request whose "
    "answer is estimated larger gets 400 before any work.")]
JobTimeoutOpt = Annotated[float, typer.Option(
    "--job-timeout", metavar="SECONDS", help="Time one job may run once started; it stops within one layer and "
    "its request gets 504. A request whose passes cannot finish in it at the measured speed gets 400 at once.")]
MaxConnectionsOpt = Annotated[int, typer.Option(
    "--max-connections", help="Most open connections; past it the longest-idle connection is closed (of the "
    "client holding the most), and a newcomer only when every connection is being answered.")]
HeaderTimeoutOpt = Annotated[float, typer.Option(
    "--header-timeout", metavar="SECONDS", help="Time a connection has, from when it is accepted, to send a "
    "request's head, and then its body; idle and half-sent connections are closed.")]
KeepAliveTimeoutOpt = Annotated[float, typer.Option(
    "--keep-alive-timeout", metavar="SECONDS", help="Time an idle keep-alive connection stays open between "
    "requests.")]


@dataclass(frozen=True)
class ServerOptions:
    """What `serve` and `explore` were told about keys, hosts, queueing, caps, timeouts and connections."""

    api_key: str | None = None
    allowed_host: list[str] | None = None
    max_queue: int = DEFAULTS.max_queue
    shutdown_timeout: float = DEFAULTS.shutdown_timeout
    max_top_k: int = DEFAULTS.max_top_k
    max_steps: int = DEFAULTS.max_steps
    max_tokens: int = DEFAULTS.max_tokens
    max_answer_bytes: int = DEFAULTS.max_answer_bytes
    job_timeout: float = DEFAULTS.job_timeout
    max_connections: int = DEFAULTS.max_connections
    header_timeout: float = DEFAULTS.header_timeout
    keep_alive_timeout: float = DEFAULTS.keep_alive_timeout

    def settings(self, host: str, port: int, **fields: Any) -> ServeSettings:
        """The checked ServeSettings for this address (fields: others, such as max_batch or a made api_key)."""
        given: dict[str, Any] = dict(
            host=host, port=port, api_key=self.api_key, max_queue=self.max_queue,
            shutdown_timeout=self.shutdown_timeout, max_top_k=self.max_top_k, max_steps=self.max_steps,
            max_tokens=self.max_tokens, max_answer_bytes=self.max_answer_bytes, job_timeout=self.job_timeout,
            max_connections=self.max_connections, header_timeout=self.header_timeout,
            keep_alive_timeout=self.keep_alive_timeout, allowed_hosts=tuple(self.allowed_host or ()))
        given.update(fields)
        return ServeSettings(**given)


# (parameter name, field, annotation), as groups.GROUPS lists them
OPTIONS: tuple[tuple[str, str, Any], ...] = (
    ("api_key", "api_key", ServeApiKeyOpt), ("allowed_host", "allowed_host", AllowedHostOpt),
    ("max_queue", "max_queue", MaxQueueOpt), ("shutdown_timeout", "shutdown_timeout", ShutdownTimeoutOpt),
    ("max_top_k", "max_top_k", MaxTopKOpt), ("max_steps", "max_steps", MaxStepsOpt),
    ("max_tokens", "max_tokens", ServeMaxTokensOpt), ("max_answer_bytes", "max_answer_bytes", MaxAnswerBytesOpt),
    ("job_timeout", "job_timeout", JobTimeoutOpt), ("max_connections", "max_connections", MaxConnectionsOpt),
    ("header_timeout", "header_timeout", HeaderTimeoutOpt),
    ("keep_alive_timeout", "keep_alive_timeout", KeepAliveTimeoutOpt),
)
