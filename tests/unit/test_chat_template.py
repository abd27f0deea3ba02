"""The chat rule (a raw prompt unless a template is asked for) and the cap on what a chat template may render."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmscope.core.command_settings import PromptSettings


def _tokenizer_with_template(folder: Path, template: str):
    from helpers.models import build_tokenizer

    tokenizer = build_tokenizer(folder)
    tokenizer.chat_template = template
    return tokenizer


def test_the_rule() -> None:
    assert PromptSettings().applies_template is False
    assert PromptSettings(chat=True).applies_template is True
    assert PromptSettings(system="be brief").applies_template is True
    assert PromptSettings(chat=False, system="be brief").applies_template is False


def test_a_chat_template_that_renders_without_end_is_stopped_at_the_cap(tmp_path: Path) -> None:
    from llmscope.core.errors import UsageError
    from llmscope.loading.tokenization import MAX_TEMPLATE_CHARS, apply_chat_template

    # 5,000 x 100,000 characters: 500 MB if rendered whole; the cap stops it after about 1 MB
    huge = "{% set s = 'x' * 100000 %}{% for i in range(5000) %}{{ s }}{% endfor %}"
    tokenizer = _tokenizer_with_template(tmp_path / "huge", huge)
    with pytest.raises(UsageError) as refused:
        apply_chat_template(tokenizer, "Hello")
    assert f"{MAX_TEMPLATE_CHARS:,}" in str(refused.value) and "--no-chat" in str(refused.value)
    tokenizer.chat_template = "{% for i in range(10**9) %}{{ i }}{% endfor %}"
    with pytest.raises(UsageError) as too_big:
        apply_chat_template(tokenizer, "Hello")
    assert "chat template" in str(too_big.value) and "--no-chat" in str(too_big.value)
    tokenizer.chat_template = "{{ messages[0]['content'] * 2 }}"  # an ordinary template still renders
    assert apply_chat_template(tokenizer, "ab") == "abab"
