"""One JSON error shape for every failure: `{"error": {"code", "message", "field"?}}`.

Repository errors map to HTTP statuses here (NotFound → 404, Conflict → 409, Invalid → 422), and
pydantic validation errors become 422 naming the offending field as a dotted path into the request
body (`nodes.1.upstream`) with the reason. Error bodies never echo the submitted input: it may hold
connection secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.db.errors import Conflict, Invalid, NotFound

log = structlog.get_logger("sluice.api")

CODES: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    500: "internal",
    501: "not_implemented",
    503: "unavailable",
}
# Keys whose value names the member of a discriminated union (node `type`, check `kind`, ...).
_DISCRIMINATORS: Final = ("type", "kind")
# "field.path: reason" as raised by model validators that know which field is wrong.
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*): (.+)$", re.DOTALL)


class ApiError(Exception):
    """An error the API answers with as is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_body(
    status: int,
    message: str,
    *,
    field: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON body of an error response."""
    info: dict[str, Any] = {"code": CODES.get(status, "error"), "message": message}
    if field is not None:
        info["field"] = field
    if errors:
        info["errors"] = list(errors)
    return {"error": info}


def error_response(
    status: int,
    message: str,
    *,
    field: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(status, message, field=field, errors=errors),
        status_code=status,
        headers=dict(headers or {}),
    )


def _field_path(loc: Sequence[int | str], body: Any) -> list[str]:
    """Turn a pydantic location into the path a user wrote in the request.

    Pydantic puts the tag of a discriminated union into the location (`nodes.0.shell.code`); the
    input itself tells which elements are tags: a tag equals the `type`/`kind` of the object it
    stands in. The element after a tag is always a field, even if it happens to share the tag's
    name (a `check` node has a `check` field).
    """
    parts: list[str] = []
    current: Any = body
    after_tag = False
    for element in loc:
        if (
            not after_tag
            and isinstance(element, str)
            and isinstance(current, Mapping)
            and any(current.get(key) == element for key in _DISCRIMINATORS)
        ):
            after_tag = True
            continue
        after_tag = False
        parts.append(str(element))
        if isinstance(current, Mapping):
            current = current.get(element)
        elif isinstance(current, list) and isinstance(element, int) and 0 <= element < len(current):
            current = current[element]
        else:
            current = None
    return parts


def describe_validation_error(error: Mapping[str, Any], body: Any) -> tuple[str | None, str]:
    """(dotted field, reason) of one pydantic error raised on a request."""
    loc = list(error.get("loc", ()))
    where = loc[0] if loc else None
    rest = loc[1:] if where in ("body", "query", "path", "header", "cookie") else loc
    message = str(error.get("msg", "invalid value"))
    kind = error.get("type")
    if kind == "json_invalid":
        ctx = error.get("ctx") or {}
        return "body", f"invalid JSON: {ctx.get('error', 'cannot be decoded')}"
    if where == "body" and not rest and isinstance(error.get("input"), bytes | bytearray):
        return "body", "the body must be JSON sent with Content-Type: application/json"
    if where == "body":
        parts = _field_path(rest, body)
    else:
        parts = [str(p) for p in rest]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    match = _FIELD_PREFIX.match(message)
    if match:
        parts.append(match.group(1))
        message = match.group(2)
    if kind == "missing" and where == "body" and not parts:
        return "body", "a JSON request body is required"
    if where == "header" and parts:
        parts = [parts[-1].lower()]
    return (".".join(parts) or None), message


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    described = [describe_validation_error(err, exc.body) for err in exc.errors()]
    field, reason = described[0] if described else (None, "invalid request")
    details = [{"field": f, "message": m} for f, m in described]
    return error_response(
        422,
        f"{field}: {reason}" if field else reason,
        field=field,
        errors=details if len(details) > 1 else None,
    )


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one JSON shape."""

    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message, field=exc.field, headers=exc.headers)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such route"
        return error_response(exc.status_code, message, headers=exc.headers)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_response(exc)

    async def on_not_found(_: Request, exc: Exception) -> JSONResponse:
        return error_response(404, str(exc))

    async def on_conflict(_: Request, exc: Exception) -> JSONResponse:
        return error_response(409, str(exc))

    async def on_invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Invalid)
        return error_response(422, str(exc), field=exc.field)

    async def on_integrity(_: Request, exc: Exception) -> JSONResponse:
        # Two writers raced past a repository's existence check; the constraint decided.
        if isinstance(exc, asyncpg.UniqueViolationError):
            return error_response(409, "an object with this name already exists")
        return error_response(409, "the request conflicts with stored data")

    async def on_data_error(_: Request, exc: Exception) -> JSONResponse:
        # Values pydantic accepted but PostgreSQL cannot store (e.g. a date beyond its range).
        # The database's text quotes the value, so it is not passed on.
        return error_response(422, "a value is outside what the database can store")

    async def on_database_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database_unavailable", error=type(exc).__name__)
        return error_response(503, "the database is unavailable; retry shortly")

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("api_unhandled_error", path=request.url.path, exc_info=exc)
        return error_response(500, "internal error")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(NotFound, on_not_found)
    app.add_exception_handler(Conflict, on_conflict)
    app.add_exception_handler(Invalid, on_invalid)
    app.add_exception_handler(asyncpg.IntegrityConstraintViolationError, on_integrity)
    app.add_exception_handler(asyncpg.DataError, on_data_error)
    for down in (
        ConnectionError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.OperatorInterventionError,
    ):
        app.add_exception_handler(down, on_database_down)
    app.add_exception_handler(Exception, on_unexpected)
