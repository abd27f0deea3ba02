"""The --endpoint client's errors (a server that cannot be reached or answers what is not its API) and its limits.
It imports only core.errors, so that the client, the readers of its answers (results) and the CLI's help share them
without importing each other or urllib."""

from __future__ import annotations

from llmscope.core.errors import LlmscopeError

DEFAULT_TIMEOUT = 300.0  # seconds for one whole answer, from sending the request to its last byte
MAX_ANSWER_BYTES = 64 * 2**20  # the most an answer may hold; compare's logprobs call sets its own from the text


class EndpointError(LlmscopeError):
    """The server could not be reached, refused the request or answered something that is not its API."""


class NoSuchRoute(EndpointError):
    """The server has no such route (404): not `llmscope serve`, for llmscope's own routes."""


class AnswerShapeError(ValueError):
    """A server's answer is not in the shape llmscope reads, or holds a figure no distribution can have (turned
    into one EndpointError line by results.reading_answer)."""
