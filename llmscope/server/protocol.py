"""uvicorn's h11 connection protocol with the guards uvicorn 0.54 lacks: a connection must send a request's head within
a time limit that starts when it is accepted (idle and half-sent connections are closed), and the connection slots
are shared so that idle sockets cannot hold them all. It changes nothing else of how uvicorn reads and writes HTTP."""

from __future__ import annotations

import asyncio
import struct
import time
from collections import Counter
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """H11Protocol plus a request-head timeout and a connection limit (set on a subclass: guarded_protocol).

    A connection is *idle* while the server owes it nothing: no request yet, a finished answer on a kept-alive
    connection, or a request whose body has not all arrived. When a new connection would pass max_connections, the
    idle connection of the client holding the most connections goes first (the one idle longest among them), as
    nginx reuses idle keep-alive connections when it runs out; only when every slot is working on a request is the
    newcomer closed. So sockets that send nothing (or trickle a request) cannot lock real clients out: a client
    that sends its request at once is no longer idle by the time later connections arrive."""

    header_timeout: float = 10.0
    max_connections: int = 64

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.idle_since = time.monotonic()
        open_now = sum(1 for c in self.connections if not c.transport.is_closing())  # this one included
        if open_now > self.max_connections:
            victim = self._drainable()
            if victim is None:
                transport.close()
                return
            victim.transport.close()
        self._wait_for_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.idle_since = time.monotonic()
        if not self.transport.is_closing():
            self._wait_for_head()

    def is_idle(self) -> bool:
        """No request being answered (none yet, the last one answered, or one whose body is still arriving) and
        none waiting unread in the socket (a client that sent its request as it connected is not idle, even
        before the server has read it)."""
        cycle = self.cycle
        quiet = cycle is None or cycle.response_complete or (cycle.more_body and not cycle.response_started)
        return quiet and _unread_bytes(self.transport) == 0

    def _drainable(self) -> GuardedH11Protocol | None:
        """The idle connection to close for a newcomer (this one excluded): of the client with the most
        connections, the one idle longest; None when every other connection is working on a request."""
        others = [c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol)
                  and not c.transport.is_closing()]
        held = Counter(_host(c) for c in others)
        idle = [c for c in others if c.is_idle()]
        if not idle:
            return None
        return min(idle, key=lambda c: (-held[_host(c)], c.idle_since))

    def _wait_for_head(self) -> None:
        """Close the connection unless a new request's head has arrived header_timeout seconds from now (a new
        request replaces self.cycle)."""
        self.loop.call_later(self.header_timeout, self._head_timed_out, self.cycle)

    def _head_timed_out(self, cycle_then: Any) -> None:
        if self.cycle is cycle_then and not self.transport.is_closing():
            self.transport.close()


def _unread_bytes(transport: asyncio.Transport) -> int:
    """Bytes the system has received on the connection that the server has not read yet (0 where it cannot
    tell)."""
    sock = transport.get_extra_info("socket")
    try:
        import fcntl
        import termios

        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    except (ImportError, AttributeError, OSError, ValueError):
        return 0


def _host(connection: H11Protocol) -> str:
    """The client's address without its port ("" when unknown)."""
    return connection.client[0] if connection.client else ""


def guarded_protocol(header_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class to hand to uvicorn.Config(http=...) for these limits."""
    return type("ServeProtocol", (GuardedH11Protocol,), {"header_timeout": header_timeout,
                                                         "max_connections": max_connections})
