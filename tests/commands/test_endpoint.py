"""--endpoint URLs that cannot be used are one line, without nested parentheses."""

from __future__ import annotations

import pytest
from helpers.cli import one_error_line

PROMPT = "The capital of France is"


@pytest.mark.parametrize(("url", "said"), [
    ("http://[::1", "is not a valid URL: Invalid IPv6 URL"), ("http://127.0.0.1:99999", "Port out of range"),
    ("http://", "names no host"), ("localhost:8000", "takes an http:// or https:// URL, not 'localhost:8000'")])
def test_a_bad_endpoint_url_is_one_line_without_nested_parentheses(cli, url: str, said: str) -> None:
    result = cli("next-token", PROMPT, "--endpoint", url)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert said in line
    depth = deepest = 0
    for char in line:
        depth += {"(": 1, ")": -1}.get(char, 0)
        deepest = max(deepest, depth)
    assert deepest <= 1, line
