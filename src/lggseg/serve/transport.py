"""Connections: deadlines a slow client cannot stretch, and a connection cap that never starves a request.

uvicorn's h11 protocol, with two additions (:func:`protocol_class`):

* **Request-head deadline.** From the moment a connection opens, and again from the end of each
  response, the client has ``header_timeout`` seconds to send a complete request head (request
  line and headers). A connection that sends nothing, or half a header, or trickles a byte at a
  time, is closed then. uvicorn's own keep-alive timer is cancelled by any byte received, so it
  alone does not bound a slow client.
* **Connection cap without starvation.** uvicorn's ``limit_concurrency`` answers 503 to every
  request once that many connections are open, idle ones included: 48 silent sockets denied the
  whole server. Instead, when more than ``max_connections`` are open, the connection that has
  waited longest for its request head is closed to make room; failing that, the one that has been
  sending a request body longest; only when every connection is being answered is the new one
  closed. Idle connections can therefore never keep a real request out.

Request bodies have their own deadlines, enforced where the body is read
(:func:`lggseg.serve.uploads.receive_uploads`). Every connection closed here logs one line on the
``lggseg.serve`` logger.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from lggseg.serve.limits import ServerLimits

log = logging.getLogger("lggseg.serve")

MAX_HEAD_BYTES = 16 * 1024
"""Largest request head (request line and headers); a larger one gets 400 from h11."""


def open_files_limit() -> int | None:
    """The process's soft limit on open files, or None where it cannot be read."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(limits: ServerLimits) -> int:
    """``max_connections``, lowered to leave 64 file descriptors for uploads, models and logs."""
    soft = open_files_limit()
    if soft is None:
        return limits.max_connections
    return max(8, min(limits.max_connections, soft - 64))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and an idle-first connection cap."""

    header_timeout: float = 10.0
    max_connections: int = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None
        """Loop time since which the connection waits for a request head (None: a request is in progress)."""
        self.request_since: float | None = None

    # ------------------------------------------------------------------ uvicorn's hooks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_head()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a complete request head arrived: the app has the request now
            self._cancel_head_timer()
            self.idle_since = None
            self.request_since = self.loop.time()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._wait_for_head()  # before uvicorn parses a pipelined request, which cancels it again
        super().on_response_complete()

    # ------------------------------------------------------------------ deadlines and the cap

    def _wait_for_head(self) -> None:
        self._cancel_head_timer()
        self.idle_since = self.loop.time()
        self.request_since = None
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self.close_connection(f"no complete request within {self.header_timeout:g} s")

    def _receiving_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_started

    def _make_room(self) -> None:
        peers = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c is not self]
        idle = [c for c in peers if c.idle_since is not None and not c.transport.is_closing()]
        if idle:
            victim = min(idle, key=lambda c: c.idle_since or 0.0)
            victim.close_connection(f"idle the longest while {len(self.connections)} connections are open")
            return
        sending = [c for c in peers if c._receiving_body() and not c.transport.is_closing()]
        if sending:
            victim = min(sending, key=lambda c: c.request_since or 0.0)
            victim.close_connection(f"sending a body the longest while {len(self.connections)} connections are open")
            return
        self.close_connection(f"{len(self.connections) - 1} connections are being answered (limit reached)")

    def close_connection(self, why: str) -> None:
        """Close the connection now, with one log line."""
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.info("connection closed client=%s reason=%r", client, why)
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:  # in the middle of a request: just drop it
            pass
        self.transport.close()


def protocol_class(limits: ServerLimits) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass carrying ``limits``' deadline and connection cap."""
    return type(
        "LggsegH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": limits.header_timeout, "max_connections": connection_cap(limits)},
    )


def build_server(app: Any, host: str, port: int, limits: ServerLimits) -> Any:
    """A ``uvicorn.Server`` for ``app`` with lggseg's protocol, deadlines and quiet logs (not started).

    ``lggseg serve`` runs it; the tests start the same server in a thread on a free port.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(limits),
        ws="none",
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,  # lggseg.serve.guard.AccessLog writes one line per request
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]  # seconds; a float works
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        server_header=False,
    )
    return uvicorn.Server(config)
