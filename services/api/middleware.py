"""ASGI middleware: body size limit and UTF-8 check; one log line plus metrics per request."""

from __future__ import annotations

import time
from typing import Final

import structlog
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import metrics
from services.api.errors import error_body

log = structlog.get_logger("sluice.api")
_QUIET_PREFIXES: Final = ("/healthz", "/readyz", "/metrics")
# How much of an oversized body is drained (as a multiple of the limit) before answering 413.
_DRAIN_FACTOR: Final = 8


def utf8_problem(body: bytes) -> str | None:
    """Why `body` is not UTF-8 text, or None when it is."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start})"
    return None


def _is_json(scope: Scope) -> bool:
    content_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


class BodyLimit:
    """Answer 413 to bodies over `max_bytes`: at once when Content-Length says so, else as soon
    as the streamed body passes the limit. The body is read here and replayed to the app, so
    no route ever sees a partial body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(
        self, scope: Scope, receive: Receive, send: Send, *, more_body: bool = True
    ) -> None:
        # Closing a socket with unread request bytes resets the connection, and the client
        # never sees the 413; so the rest of a moderately oversized body is read and dropped.
        budget = _DRAIN_FACTOR * self.max_bytes
        while more_body and budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            more_body = bool(message.get("more_body", False))
        response = JSONResponse(
            error_body(413, f"request body is larger than {self.max_bytes} bytes"),
            status_code=413,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        total = 0
        pending: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                pending = message  # a disconnect: hand it to the app as it is
                break
            body: bytes = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                more = bool(message.get("more_body", False))
                await self._too_large(scope, receive, send, more_body=more)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        problem = utf8_problem(whole) if _is_json(scope) else None
        if pending is None and problem is not None:
            # Else the JSON parser's "error parsing the body" leaves the client guessing why.
            response = JSONResponse(
                error_body(400, f"body: {problem}; send JSON as UTF-8", field="body"),
                status_code=400,
            )
            await response(scope, receive, send)
            return
        first: list[Message] = [
            pending or {"type": "http.request", "body": whole, "more_body": False}
        ]

        async def replay() -> Message:
            if first:
                return first.pop()
            return await receive()

        await self.app(scope, replay, send)


class Observe:
    """Count, time and log each request by its route template (bounded label values)."""

    def __init__(self, app: ASGIApp, prefix: str = "") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            path = str(scope.get("path", ""))
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = "unmatched"
            elif (
                self.prefix
                and path.startswith(self.prefix + "/")
                and not route.startswith(self.prefix + "/")
            ):
                # Routes of an included router report their path without the router's prefix.
                route = self.prefix + route
            method = str(scope.get("method", ""))
            metrics.REQUESTS.labels(method, route, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(method, route).observe(elapsed)
            if not path.startswith(_QUIET_PREFIXES):
                log.info(
                    "http_request",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
