"""The `webhook` source: `POST /hooks/s3` for MinIO, Ceph RGW and AWS-style notification bodies.

Also serves the listener's `/healthz`, `/readyz` and `/metrics` on the same port.

Answers:
- no, or a wrong, token: 401 and nothing is recorded. With no token configured every request is
  refused: the endpoint is secure by default and says why in its log and in `/readyz`.
- a body that cannot be parsed: recorded as an `invalid` event and answered 200, because a
  non-2xx answer makes MinIO retry the same body forever and block its queue behind it.
- a body that parses: 200 only after the intake transaction committed (contract 3); if it could
  not commit, 503, so the store retries and dedup absorbs what was already admitted.
- a body with an event for a workflow at its `policy.max_waiting` (backpressure): 503 with
  `Retry-After` and nothing recorded; the store retries and the event is admitted once the
  workflow drained below 80 % of its bound.

The token arrives as `Authorization: Bearer <token>`. Stores that cannot send headers (Ceph RGW
HTTP push endpoints) may put it in the URL as `?token=<token>` instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import parse_qs

import asyncpg
import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.storage_listener import metrics
from services.storage_listener.admitter import Admitter
from services.storage_listener.events import body_events, invalid_event
from services.storage_listener.health import Health
from shared.backpressure import HeldBack
from shared.db.migrate import is_current
from shared.db.pool import Executor
from shared.probes import QuietServer

log = structlog.get_logger("sluice.storage_listener.webhook")

HOOK_PATH = "/hooks/s3"
NO_TOKEN_DETAIL = (
    "refusing every request with 401: SLUICE_WEBHOOK_TOKENS is empty (set one or two tokens)"
)
Clock = Callable[[], datetime]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Header = tuple[bytes, bytes]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def token_digests(tokens: Sequence[str]) -> list[bytes]:
    """Digests of the accepted tokens; comparing digests keeps the comparison length-blind."""
    return [hashlib.sha256(t.encode("utf-8")).digest() for t in tokens if t]


def presented_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token a request presents: `Authorization: Bearer <t>` first, else `?token=<t>`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return query_token or None


def token_accepted(presented: str | None, digests: Sequence[bytes]) -> bool:
    """Constant-time check against every configured token (two during a rotation)."""
    if not presented or not digests:
        return False
    given = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
    accepted = False
    for digest in digests:
        # No early exit: the time taken does not tell which token (if any) matched.
        accepted |= hmac.compare_digest(given, digest)
    return accepted


async def database_checks(pool: Executor, timeout_s: float = 2.0) -> dict[str, str]:
    """`/readyz` checks: the database answers and every migration is applied."""
    try:
        async with asyncio.timeout(timeout_s):
            if isinstance(pool, asyncpg.Pool):
                async with pool.acquire() as conn:
                    current = await is_current(cast("asyncpg.Connection[Any]", conn))
            else:
                current = await is_current(cast("asyncpg.Connection[Any]", pool))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return {"database": f"unreachable: {type(exc).__name__}: {exc}"}
    return {"database": "ok", "migrations": "ok" if current else "pending: run `sluice migrate`"}


class WebhookApp:
    """The listener's HTTP app (plain ASGI): the S3 webhook plus health, readiness and metrics.

    Plain ASGI rather than a framework: the webhook is on the intake hot path, and routing four
    fixed paths needs none of a framework's per-request machinery (it halves the cost of a request).
    """

    def __init__(
        self,
        *,
        pool: Executor,
        admitter: Admitter,
        tokens: Sequence[str],
        health: Health,
        max_body_bytes: int = 1 << 20,
        clock: Clock = _utcnow,
    ) -> None:
        self._pool = pool
        self._admitter = admitter
        self._digests = token_digests(tokens)
        self._health = health
        self._state = health.sources.get("webhook") or health.add(
            "webhook", _detail(len(self._digests), max_body_bytes)
        )
        self._max_body_bytes = max_body_bytes
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; websockets are not served
            return
        path, method = scope["path"], scope["method"]
        if path == HOOK_PATH and method == "POST":
            started = time.perf_counter()
            status, body, headers = await self._hook(scope, receive)
            metrics.WEBHOOK_REQUESTS.labels(str(status)).inc()
            log.debug(
                "webhook_request",
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            await _respond(send, status, body, headers=headers)
        elif path == HOOK_PATH and method == "HEAD":
            # MinIO probes a webhook target with HEAD before it registers it as online.
            await _respond(send, 200, b"", content_type=None)
        elif path == HOOK_PATH:
            await _respond(send, 405, _error(405, "use POST"), headers=[(b"allow", b"POST")])
        elif path == "/healthz" and method == "GET":
            await _respond(send, 200, b'{"status":"ok"}')
        elif path == "/readyz" and method == "GET":
            checks = await database_checks(self._pool)
            ready = all(v == "ok" for v in checks.values())
            document = {
                "status": "ready" if ready else "not_ready",
                "checks": checks,
                **self._health.as_dict(),
            }
            await _respond(send, 200 if ready else 503, _json(document))
        elif path == "/metrics" and method == "GET":
            await _respond(send, 200, generate_latest(), content_type=CONTENT_TYPE_LATEST)
        else:
            await _respond(send, 404, _error(404, "no such route"))

    async def _hook(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[Header]]:
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        presented = presented_token(
            authorization.decode("latin-1") if authorization is not None else None,
            (query.get("token") or [None])[0],
        )
        if not token_accepted(presented, self._digests):
            client = scope.get("client")
            log.warning(
                "webhook_unauthorized",
                reason="no token configured" if not self._digests else "missing or wrong token",
                client=client[0] if client else None,
            )
            detail = NO_TOKEN_DETAIL if not self._digests else "missing or wrong bearer token"
            return 401, _error(401, detail), [(b"www-authenticate", b"Bearer")]
        declared = headers.get(b"content-length", b"")
        body, oversize = await _read_body(receive, declared, self._max_body_bytes)
        received_at = self._clock()
        if oversize:
            error = f"body exceeds {self._max_body_bytes} bytes"
            events = [invalid_event(body, error, received_at, origin="webhook")]
        else:
            events = body_events(body, received_at, origin="webhook")
        try:
            results = await self._admitter.submit(events, hold=True)
        except HeldBack as held:
            metrics.NOTIFICATIONS.labels("webhook", "held").inc()
            log.info("webhook_held_back", trigger=held.hold.trigger, reason=held.hold.reason)
            retry = str(held.retry_after_s).encode()
            return 503, _error(503, str(held)), [(b"retry-after", retry)]
        except Exception as exc:
            self._state.failed(f"{type(exc).__name__}: {exc}", self._clock())
            log.error("webhook_admission_failed", error=str(exc), error_type=type(exc).__name__)
            failure = _error(503, "the event could not be recorded; retry")
            return 503, failure, [(b"retry-after", b"1")]
        self._state.ok(self._clock())
        invalid = any(e.error for e in events)
        metrics.NOTIFICATIONS.labels(
            "webhook", "invalid" if invalid else ("records" if events else "empty")
        ).inc()
        flat = [r for per_event in results for r in per_event]
        document = {
            "events": len(events),
            "invalid": invalid,
            "event_ids": [r.event_id for r in flat],
            "instance_ids": [i for r in flat for i in r.instance_ids],
        }
        return 200, _json(document), []


def create_app(
    *,
    pool: Executor,
    admitter: Admitter,
    tokens: Sequence[str],
    health: Health,
    max_body_bytes: int = 1 << 20,
    clock: Clock = _utcnow,
) -> WebhookApp:
    """The listener's HTTP app (see `WebhookApp`)."""
    return WebhookApp(
        pool=pool,
        admitter=admitter,
        tokens=tokens,
        health=health,
        max_body_bytes=max_body_bytes,
        clock=clock,
    )


def _detail(token_count: int, max_body_bytes: int) -> str:
    if token_count == 0:
        return NO_TOKEN_DETAIL
    return f"POST {HOOK_PATH}: {token_count} token(s) accepted, bodies up to {max_body_bytes} bytes"


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


# The API's error shape, so a client reads every sluice error the same way.
_ERROR_CODES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    503: "unavailable",
}


def _error(status: int, message: str) -> bytes:
    return _json({"error": {"code": _ERROR_CODES.get(status, "error"), "message": message}})


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: str | None = "application/json",
    headers: list[Header] | None = None,
) -> None:
    raw: list[Header] = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        raw.append((b"content-type", content_type.encode()))
    raw.extend(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, declared: bytes, limit: int) -> tuple[bytes, bool]:
    """The body, or its first `limit` bytes and True when it is longer than `limit`."""
    if declared.isdigit() and int(declared) > limit:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # The client went away; what arrived is all there is.
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; binding before serving turns a taken port into a clear OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on accepted sockets whose `proto`
    # says TCP, and accepted sockets copy it from this one. Without it every response waits for
    # the client's delayed ACK (~40 ms), which stores sending notifications back to back on one
    # keep-alive connection pay for each event.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Linux also copies the option itself to accepted connections.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen on {host}:{port} (SLUICE_WEBHOOK_PORT): {exc.strerror}"
        ) from None
    sock.setblocking(False)
    return sock


async def serve(
    app: WebhookApp, sock: socket.socket, stop: asyncio.Event, *, drain_timeout_s: float
) -> None:
    """Serve `app` on `sock` until `stop`; in-flight requests get `drain_timeout_s` to finish."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=max(int(drain_timeout_s), 1),
    )
    server = QuietServer(config, name="webhook")
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    finally:
        stopping.cancel()
        server.should_exit = True
        if not serving.done():  # cancelled at the drain deadline
            serving.cancel()
            await asyncio.wait({serving})
        # Requests abandoned at the drain deadline leave their connections open: close them so
        # their stores see the failure now (and redeliver) rather than at a client timeout.
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()
    if not stop.is_set():
        raise RuntimeError("the webhook server stopped on its own")
