"""The --endpoint client's errors: a server that cannot be reached or answers what is not its API. It imports only
core.errors, so that the client and the readers of its answers (results) share them without importing each other."""

from __future__ import annotations

from llmscope.core.errors import LlmscopeError


class EndpointError(LlmscopeError):
    """The server could not be reached, refused the request or answered something that is not its API."""


class NoSuchRoute(EndpointError):
    """The server has no such route (404): not `llmscope serve`, for llmscope's own routes."""


class AnswerShapeError(ValueError):
    """A server's answer is not in the shape llmscope reads, or holds a figure no distribution can have (turned
    into one EndpointError line by results.reading_answer)."""
