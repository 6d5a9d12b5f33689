"""structlog configuration: JSON in production, console on a terminal.

`merge_contextvars` runs first so `bound_contextvars(event_id=..., instance_id=...)` reaches every
line; standard-library loggers (aiokafka, asyncpg, uvicorn) go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_SECRET_KEYS = ("password", "secret", "token", "authorization", "sasl_plain_password")


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # Defence in depth: a secret passed by mistake as a log field never reaches the output.
    for key in list(event_dict):
        lowered = key.lower()
        if any(s in lowered for s in _SECRET_KEYS) and event_dict[key] is not None:
            event_dict[key] = "***"
    return event_dict


def configure(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog and route stdlib logging through it. Safe to call more than once."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            # Which part of sluice speaks (`sluice.api`, `sluice.probes`), as for library lines.
            structlog.stdlib.add_logger_name,
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # Chatty libraries: their warnings matter, their info lines do not.
    # uvicorn.error holds uvicorn's start/stop chatter too; sluice logs one server_started line.
    for name in (
        "aiokafka",
        "botocore",
        "aiobotocore",
        "uvicorn.access",
        "uvicorn.error",
        "pgserver",
        "httpx",
    ):
        logging.getLogger(name).setLevel(max(_LEVELS[level], logging.WARNING))
