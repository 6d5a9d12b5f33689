"""Real receivers for notification tests: an HTTP server and an SMTP server (aiosmtpd), both
in the test's event loop, recording everything they receive.

    async with http_receiver() as hook: ...   hook.url, hook.requests, await hook.wait(n)
    async with smtp_server() as smtp: ...     smtp.port, smtp.messages, await smtp.wait(n)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

WAIT_S = 30.0


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Answers every request with `status`; `before_answer` runs first (e.g. to kill a sender
    while it waits for the answer)."""

    port: int
    status: int = 200
    answer: bytes = b'{"errcode":0}'
    requests: list[Request] = field(default_factory=list)
    before_answer: Callable[[Request], Awaitable[None]] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def wait(self, count: int, timeout_s: float = WAIT_S) -> list[Request]:
        """Wait until at least `count` requests arrived; return them all."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, path, headers, body)
            async with self._changed:
                self.requests.append(request)
                self._changed.notify_all()
            if self.before_answer is not None:
                await self.before_answer(request)
            writer.write(
                f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.answer)}\r\nConnection: close\r\n\r\n".encode()
                + self.answer
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@asynccontextmanager
async def http_receiver(port: int = 0, **kw: Any) -> AsyncIterator[HttpReceiver]:
    """An HTTP receiver on 127.0.0.1 (`port` 0: a free one), closed on exit."""
    receiver = HttpReceiver(port=port, **kw)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", port, reuse_address=True)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class SmtpServer:
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        async with self._changed:
            self.messages.append(parsed)
            self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
            self._changed.notify_all()
        return "250 OK"

    async def wait(self, count: int, timeout_s: float = WAIT_S) -> list[EmailMessage]:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.messages) >= count)
        return list(self.messages)


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1 / localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


@asynccontextmanager
async def smtp_server(
    *,
    tls: str = "none",
    tls_context: ssl.SSLContext | None = None,
    login: tuple[str, str] | None = None,
) -> AsyncIterator[SmtpServer]:
    """An SMTP server (aiosmtpd) on 127.0.0.1 in this event loop.

    `tls`: `none`, `starttls` (required before MAIL) or `tls` (implicit, from the first byte);
    `login`: (user, password) required before MAIL.
    """
    handler = SmtpServer()
    loop = asyncio.get_running_loop()

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and login is not None
            and (
                data.login.decode(),
                data.password.decode(),
            )
            == login
        )
        return AuthResult(success=ok)

    def protocol() -> SMTP:
        return SMTP(
            handler,
            loop=loop,
            hostname="sluice-test",
            tls_context=tls_context if tls == "starttls" else None,
            require_starttls=tls == "starttls",
            authenticator=authenticate if login else None,
            auth_required=login is not None,
            auth_require_tls=tls != "none",
        )

    server = await loop.create_server(
        protocol, "127.0.0.1", 0, ssl=tls_context if tls == "tls" else None
    )
    handler.port = server.sockets[0].getsockname()[1]
    try:
        yield handler
    finally:
        server.close()
        await server.wait_closed()
