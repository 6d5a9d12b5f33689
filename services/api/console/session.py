"""The console's session cookie and its CSRF token.

The session cookie holds the API token itself, HttpOnly (page scripts never see it) and
SameSite=Strict (no other site's page can make the browser send it). Revoking the token ends
every session using it at once, with nothing else to keep in step. Mutating requests also carry
a CSRF token derived from the session by HMAC, which a page of another origin cannot read, and
must come from this origin when the browser says where they come from.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

COOKIE: Final = "sluice_session"
CSRF_HEADER: Final = "x-csrf-token"
CSRF_FIELD: Final = "csrf"
_CSRF_LABEL: Final = b"sluice console csrf v1"


def csrf_token(session: str) -> str:
    """The CSRF token of a session: stable for the session, useless for any other."""
    return hmac.new(session.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_ok(session: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(session), presented)


def same_origin(headers: Mapping[str, str]) -> bool:
    """False when the browser names an Origin (or, lacking it, a Referer) whose host differs
    from the Host it asked; requests that name neither (non-browser clients) pass."""
    source = headers.get("origin") or headers.get("referer")
    host = headers.get("host")
    if not source:
        return True
    if source == "null":  # sandboxed or privacy-stripped origin: never this console
        return False
    return host is not None and urlsplit(source).netloc == host
