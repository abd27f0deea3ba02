"""The API key of `llmscope serve` and `explore`: a request carries it as 'Authorization: Bearer KEY' (scripts, the
--endpoint client) or in the page's cookie, which the server sets when the page is opened with ?token=KEY (as
Jupyter does). Comparisons take constant time. No routes here; app.py and explore.py use these checks."""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request

from llmscope.server.openai_shapes import ApiError

TOKEN_PARAMETER = "token"  # /explore?token=KEY


def new_key() -> str:
    """A key for one run (explore makes one when it listens beyond this machine without --api-key)."""
    return secrets.token_urlsafe(24)


def cookie_name(request: Request) -> str:
    """The key cookie's name, one per port: browsers share cookies between the ports of one host, and two servers
    on one machine must not overwrite each other's key."""
    server = request.scope.get("server") or ("", 0)
    return f"llmscope_key_{server[1]}"


def same_key(given: str | None, api_key: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), api_key.encode())


def authorized(request: Request, api_key: str | None) -> bool:
    """Whether the request may use the model: no key is set, or it carries the key (header or cookie)."""
    if api_key is None:
        return True
    given = request.headers.get("authorization", "")
    if given.lower().startswith("bearer ") and same_key(given[7:].strip(), api_key):
        return True
    return same_key(request.cookies.get(cookie_name(request)), api_key)


def check_key(request: Request, api_key: str) -> None:
    """401 unless the request carries the key."""
    if not authorized(request, api_key):
        raise ApiError(401, "Incorrect API key provided (send it as 'Authorization: Bearer KEY'; the explore page: "
                       "open the address with ?token=KEY that the server printed)", code="invalid_api_key")
