"""A small synchronous client of the sluice HTTP API, used by the `sluice` client commands."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
API_PREFIX = "/api/v1"
# Pauses between the attempts of a request sent with an Idempotency-Key (about 8 s in all):
# enough to ride out an API restart or a dropped connection, short enough for a person waiting.
RETRY_DELAYS_S: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


class ClientError(Exception):
    """A request the API refused or could not answer; `str()` is the one-line reason."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        errors: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        # Every problem the API found, one line each; a single one is the message itself.
        self.errors: tuple[str, ...] = tuple(errors) or (message,)


class Unreachable(ClientError):
    """No answer at all: wrong URL, server down, network trouble."""


def _error_of(response: httpx.Response) -> ClientError:
    try:
        info = response.json().get("error") or {}
    except (ValueError, AttributeError):
        info = {}
    message = info.get("message") if isinstance(info, dict) else None
    if not message:
        message = f"HTTP {response.status_code} from {response.request.url}"
    listed = info.get("errors") if isinstance(info, dict) else None
    errors = [
        f"{e['field']}: {e.get('message')}" if e.get("field") else str(e.get("message"))
        for e in listed or []
        if isinstance(e, dict)
    ]
    return ClientError(
        str(message),
        status=response.status_code,
        code=info.get("code") if isinstance(info, dict) else None,
        field=info.get("field") if isinstance(info, dict) else None,
        errors=errors,
    )


class Client:
    """Calls /api/v1 of one server with one token, in one workspace."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        workspace: str = "default",
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retry_delays: Sequence[float] = RETRY_DELAYS_S,
    ) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.workspace = workspace
        self.retry_delays = tuple(retry_delays)
        self._http = httpx.Client(
            base_url=self.url + API_PREFIX, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def ws(self, path: str = "") -> str:
        """A path inside the client's workspace."""
        return f"/workspaces/{quote(self.workspace, safe='')}{path}"

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the sluice API at {self.url} ({type(exc).__name__}: {exc}); "
                "is it running, and is SLUICE_API_URL right?"
            ) from None
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a request; the decoded JSON answer, or None for 204."""
        kw: dict[str, Any] = {}
        if json is not None:
            kw["json"] = json
        if headers:
            kw["headers"] = dict(headers)
        if params:
            kw["params"] = {k: v for k, v in params.items() if v is not None}
        response = self._send(method, path, **kw)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json=body, params=params)

    def post_once(self, path: str, body: Any) -> Any:
        """POST a request that must take effect once (a run, a backfill), retrying network errors.

        One fresh `Idempotency-Key` goes with every attempt, so when an answer is lost after the
        server acted, the retry gets that first answer back instead of creating a second run.
        """
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        for delay in (*self.retry_delays, None):
            try:
                return self.request("POST", path, json=body, headers=headers)
            except Unreachable:
                if delay is None:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def put(self, path: str, body: Any, **params: Any) -> Any:
        return self.request("PUT", path, json=body, params=params)

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list, following `next_cursor`."""
        cursor = None
        while True:
            page = self.get(path, **params, cursor=cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def log(
        self, instance_id: int, node: str, attempt: int | None = None
    ) -> tuple[str, dict[str, str]]:
        """An attempt's output so far and the response's X-Sluice-* headers."""
        path = self.ws(f"/instances/{instance_id}/nodes/{quote(node, safe='')}/log")
        params = {"attempt": attempt} if attempt is not None else {}
        response = self._send("GET", path, params=params, headers={"Accept": "text/plain"})
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-")}
        return response.text, headers

    def follow_log(self, instance_id: int, node: str, attempt: int | None = None) -> Iterator[str]:
        """Stream an attempt's output until it ends."""
        path = self.ws(f"/instances/{instance_id}/nodes/{quote(node, safe='')}/log")
        params: dict[str, Any] = {"follow": "true"}
        if attempt is not None:
            params["attempt"] = attempt
        try:
            with self._http.stream(
                "GET", path, params=params, headers={"Accept": "text/plain"}, timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                yield from response.iter_text()
        except httpx.TransportError as exc:
            raise Unreachable(
                f"lost the log stream from {self.url} ({type(exc).__name__}: {exc})"
            ) from None
