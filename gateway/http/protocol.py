"""The HTTP/1.1 connection as uvicorn's httptools protocol, with the limits a gateway facing
hostile clients needs before a request reaches the app:

- request headers over `max_header_bytes` get 431, decided before they are buffered;
- headers not complete within `header_timeout_s` of the connection (or of the previous answer)
  get 408 and the connection is closed; a body not complete within `body_timeout_s` of its
  headers closes the connection (the app sees the client gone);
- a request whose app asked for it (`CANCEL_ON_DISCONNECT` in its scope) is cancelled when its
  client disconnects before the response starts;
- a request with more than one Authorization header gets 400 (which one would count depends on
  who reads them);
- the number of connections per worker and the keep-alive time are uvicorn's own settings
  (`limit_concurrency`, `timeout_keep_alive`), set from the same config.

The timers are armed only while a request is incomplete after the bytes at hand, so a request that
arrives in one read costs none."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = logging.getLogger("tiergate.http")
# An app sets this key of a request's scope while the request may be cancelled if its client
# disconnects before the response starts; the connection then sets CLIENT_GONE and cancels it.
CANCEL_ON_DISCONNECT = "tiergate.cancel_on_disconnect"
CLIENT_GONE = "tiergate.client_gone"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float


def _error_response(status: int, reason: str, message: str, code: str) -> bytes:
    body = msgspec.json.encode(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    )
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedProtocol(HttpToolsProtocol):
    limits = ConnectionLimits(32 * 1024, 10.0, 30.0)  # set per server by `guarded_protocol`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True
        self._in_body = False
        self._header_bytes = 0  # of the request whose headers are being read
        self._tail = b""  # the last bytes read, where a split "\r\n\r\n" may begin
        self._timer: asyncio.TimerHandle | None = None
        self._running: tuple[RequestResponseCycle, asyncio.Task[None]] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        running = self._running
        if running is not None:
            cycle, task = running
            if cycle.scope.get(CANCEL_ON_DISCONNECT) and not cycle.response_started and not task.done():
                cycle.scope[CLIENT_GONE] = True  # type: ignore[literal-required]
                task.cancel()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """As uvicorn starts it, remembering the task so a disconnect can cancel it."""
        if getattr(self.config, "reset_contextvars", False):
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        self._running = (cycle, task)

    def data_received(self, data: bytes) -> None:
        if self._in_headers and self._over_header_limit(data):
            limit = self.limits.max_header_bytes
            self._refuse(
                _error_response(
                    431,
                    "Request Header Fields Too Large",
                    f"request headers are over {limit} bytes",
                    "headers_too_large",
                )
            )
            return
        super().data_received(data)
        if self._timer is None and not self.transport.is_closing():
            if self._in_headers and self._header_bytes:
                self._arm(self.limits.header_timeout_s, self._headers_too_slow)
            elif self._in_body:
                self._arm(self.limits.body_timeout_s, self._body_too_slow)

    def _over_header_limit(self, data: bytes) -> bool:
        """Whether the headers of the request being read pass the limit with `data`: the bytes up
        to the blank line that ends them count, a body after it does not."""
        # the blank line may straddle the previous read and this one, or lie in this one
        joined = (self._tail + data[:3]).find(b"\r\n\r\n") if self._tail else -1
        if joined >= 0:
            size = joined + 4 - len(self._tail)
        else:
            end = data.find(b"\r\n\r\n")
            size = end + 4 if end >= 0 else len(data)
        if self._header_bytes + size > self.limits.max_header_bytes:
            return True
        self._header_bytes += len(data)
        self._tail = (self._tail + data)[-3:] if len(data) < 3 else data[-3:]
        return False

    def on_headers_complete(self) -> None:
        self._in_headers, self._in_body = False, True
        if self._timer is not None:
            self._disarm()
        if [name for name, _ in self.headers].count(b"authorization") > 1:
            # which one counted would depend on who reads them: neither does
            self._refuse(
                _error_response(
                    400, "Bad Request", "send one Authorization header, not several", "invalid_request"
                )
            )
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._in_headers, self._header_bytes, self._tail = True, 0, b""
        if self._timer is not None:
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn's keep-alive timer closes an idle connection; once a byte arrives, this one runs
        self._disarm()

    # -- timers ---------------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_too_slow(self) -> None:
        self._timer = None
        if self._in_headers and not self.transport.is_closing():
            if self.cycle is not None and not self.cycle.response_complete:
                return  # an answer is still being worked out; its end rearms nothing here
            timeout = self.limits.header_timeout_s
            self._refuse(
                _error_response(
                    408, "Request Timeout", f"request headers not complete within {timeout:g}s", "timeout"
                )
            )

    def _body_too_slow(self) -> None:
        self._timer = None
        if self._in_body and not self.transport.is_closing():
            log.debug("closing a connection whose request body was not complete in time")
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        self.transport.write(response)
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """The protocol class with these limits, for `uvicorn.Config(http=...)`."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})
