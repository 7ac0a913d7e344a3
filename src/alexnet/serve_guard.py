"""What slow or numerous clients may take from `alexnet serve`: a cap on open connections, a deadline for a request's
headers and one for its body, and log lines that cannot flood the disk.

uvicorn (0.54) has no read timeout: a client that trickles a byte now and then holds its socket forever, and 1,100
of them under a 1024-file limit starved every other client while asyncio logged each failed ``accept()`` with a
traceback (half a million lines in 30 s). `guarded_protocol` is uvicorn's h11 protocol with the deadlines and the cap
(a connection over it is answered 503 and closed at once, so file descriptors stay bounded), and `RateLimitFilter`
lets one line per kind of message through per interval, counting the rest.
Needs the ``[serve]`` extra, as `alexnet.serve` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from .errors import AlexnetError
from .schemas import tagged

try:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError as e:  # pragma: no cover - alexnet.serve names the extra first
    raise AlexnetError(
        f"alexnet serve needs the [serve] extra ({e.name} is not installed): pip install 'alexnet[serve]'"
    ) from None

__all__ = ["ConnectionLimits", "RateLimitFilter", "guarded_protocol", "install_log_limits"]

log = logging.getLogger("alexnet.serve")


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections may be open, and how long a request's headers and body may take to arrive."""

    max_connections: int = 256
    header_timeout_s: float = 10.0  # from the connection (or the previous response) to the end of the headers
    body_timeout_s: float = 60.0  # from the end of the headers to the end of the body


def _busy_response() -> bytes:
    error = {"error": {"status": 503, "message": "too many open connections: retry shortly"}}
    body = json.dumps(tagged("serve.error", error)).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


_BUSY = _busy_response()


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with `ConnectionLimits` (set on the subclass `guarded_protocol` makes)."""

    limits = ConnectionLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        if len(self.connections) > self.limits.max_connections:
            log.warning("refusing a connection: %d are open (--max-connections)", len(self.connections) - 1)
            transport.write(_BUSY)
            transport.close()
            return
        self._arm("headers", self.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm the deadline of what the client must send next: headers (idle), body, or nothing (request read)."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE and self._phase != "headers" and (self.cycle is None or self.cycle.response_complete):
            self._arm("headers", self.limits.header_timeout_s)
        elif state is h11.SEND_BODY and self._phase != "body":
            self._arm("body", self.limits.body_timeout_s)
        elif state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._timer = self.loop.call_later(seconds, self._expire, phase, seconds)

    def _disarm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
        self._timer, self._phase = None, None

    def _expire(self, phase: str, seconds: float) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        waiting = h11.IDLE if phase == "headers" else h11.SEND_BODY
        if self.conn.their_state is waiting:
            peer = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.warning("closing the connection of %s: its request %s took over %g s", peer, phase, seconds)
            self.transport.close()  # a request being read sees a disconnect: its handler answers nobody


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol class (``uvicorn.Config(http=...)``) enforcing ``limits``."""
    return type("GuardedH11Protocol", (_GuardedH11Protocol,), {"limits": limits})


class RateLimitFilter(logging.Filter):
    """Lets through one record per kind (logger, message template, exception type) per ``interval_s``; the next
    one through says how many were dropped. A flood of identical errors ("Too many open files" on every
    ``accept()``) costs a line per interval instead of a traceback per attempt."""

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[Any, ...], float] = {}
        self._dropped: dict[tuple[Any, ...], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        key = (record.name, str(record.msg)[:200], exc)
        now = time.monotonic()
        if now - self._last.get(key, -float("inf")) < self.interval_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        if len(self._last) > 1000:  # messages that embed addresses or numbers: forget the old kinds
            self._last.clear()
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} similar messages dropped in the last {self.interval_s:g} s)"
        return True


_LOGGERS = ("asyncio", "uvicorn.error", "alexnet.serve")


def install_log_limits(interval_s: float = 10.0) -> RateLimitFilter:
    """Attach one `RateLimitFilter` to the loggers a flood comes from (asyncio's accept errors, uvicorn's and
    ours); returns it (tests read it)."""
    flt = RateLimitFilter(interval_s)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RateLimitFilter)]:
            logger.removeFilter(old)
        logger.addFilter(flt)
    return flt
