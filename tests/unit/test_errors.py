"""Errors recognised by type (a chat template's, safetensors', out of memory) and mapped to llmscope's own."""

from __future__ import annotations

from helpers.cli import USAGE


def test_errors_are_recognised_by_type() -> None:
    import jinja2.exceptions
    import safetensors

    from llmscope.core.errors import DeviceError, ModelLoadError, UsageError, translate

    template = translate(jinja2.exceptions.SecurityError("access to attribute 'x' is unsafe"))
    assert isinstance(template, UsageError) and "chat template" in str(template) and "--no-chat" in str(template)
    assert template.exit_code == USAGE
    broken = translate(safetensors.SafetensorError("header too large"))
    assert isinstance(broken, ModelLoadError) and "safetensors" in str(broken)
    import torch

    memory = translate(torch.OutOfMemoryError("CUDA out of memory"))
    assert isinstance(memory, DeviceError) and "out of memory" in str(memory)
    assert translate(ValueError("something else")) is None
