"""Exceptions that llmscope turns into one readable line and an exit code.
Library code raises these; only the CLI decides how they are shown."""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class LlmscopeError(Exception):
    """A failure the user can act on: `message` says what went wrong, `hint` what to do."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(LlmscopeError):
    """A bad option value or input: exit code 2."""

    exit_code = EXIT_USAGE


class ModelLoadError(LlmscopeError):
    """The model, tokenizer or config could not be found or loaded."""


class DeviceError(LlmscopeError):
    """The requested device or dtype cannot run here, or it ran out of memory."""


class InputMismatchError(LlmscopeError):
    """Two models cannot be compared on this input (different tokens or vocabularies): exit code 1."""
