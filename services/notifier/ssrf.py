"""SSRF guard for outbound webhook URLs.

The host is resolved at send time and every address it resolves to is checked; the request then
connects to the checked address (with the original Host header and TLS server name), so a DNS
answer that changes between check and connect (rebinding) cannot redirect it. Redirects are
never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The URL may not be called: it names or resolves to a non-public address."""


def refusal(address: IPAddress) -> str | None:
    """Why `address` is refused (None: it is a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped)
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    # Private ranges, carrier-grade NAT, documentation and reserved blocks are all not global.
    if not address.is_global:
        return "private"
    return None


@dataclass(frozen=True)
class Target:
    """Where to connect for a URL: the checked address, and the names the server expects."""

    url: str
    host_header: str
    server_name: str | None


def _pinned(url: str, address: IPAddress) -> Target:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port
    shown = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{shown}:{port}" if port else shown
    host_header = parts.netloc.rpartition("@")[2]
    target = parts._replace(netloc=netloc).geturl()
    return Target(target, host_header, host if parts.scheme == "https" else None)


async def resolve(url: str, *, allow_private: bool) -> list[Target]:
    """Resolve and check the URL's host: one target per address, in resolver order (all of
    them checked). Raises Refused naming the address and why."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise Refused(f"url: {url!r} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise OSError(f"cannot resolve {host!r}: {exc}") from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise OSError(f"cannot resolve {host!r}")
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why:
                raise Refused(
                    f"{host} resolves to {address}, a {why} address "
                    "(set SLUICE_NOTIFY_ALLOW_PRIVATE=true to allow it)"
                )
    return [_pinned(url, address) for address in addresses]
