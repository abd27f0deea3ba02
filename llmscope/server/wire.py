"""What the server's routes share about the wire: JSON bytes as every answer writes them, and a client that leaves
(ClientGone, and the watcher that notices it). No routes, no state, no model."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request


class ClientGone(Exception):
    """The client closed the connection before its answer was ready (its work was cancelled)."""


def json_bytes(document: Any) -> bytes:
    """A document as JSONResponse writes it (UTF-8, compact, no NaN)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


async def client_disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read, so receive() waits for the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
