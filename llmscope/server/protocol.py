"""uvicorn's h11 connection protocol with the two guards uvicorn 0.54 lacks: a connection must send a request's
head within a time limit (idle and half-sent connections are closed), and connections past a limit are closed on
arrival. It changes nothing else of how uvicorn reads and writes HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """H11Protocol plus a request-head timeout and a connection limit (set on a subclass: guarded_protocol)."""

    header_timeout: float = 10.0
    max_connections: int = 64

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:  # this one included
            transport.close()
            return
        self._wait_for_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._wait_for_head()

    def _wait_for_head(self) -> None:
        """Close the connection unless a new request's head has arrived header_timeout seconds from now (a new
        request replaces self.cycle)."""
        self.loop.call_later(self.header_timeout, self._head_timed_out, self.cycle)

    def _head_timed_out(self, cycle_then: Any) -> None:
        if self.cycle is cycle_then and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(header_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class to hand to uvicorn.Config(http=...) for these limits."""
    return type("ServeProtocol", (GuardedH11Protocol,), {"header_timeout": header_timeout,
                                                         "max_connections": max_connections})
