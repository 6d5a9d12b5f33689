"""An embedded PostgreSQL (the `pgserver` package) for `sluice dev` and the test suite."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `datadir`, reachable over a Unix socket."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to an already running) server; return its DSN."""
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): give it one.
        if not os.environ.get("XDG_RUNTIME_DIR"):
            runtime = Path(tempfile.gettempdir()) / f"sluice-runtime-{os.getuid()}"
            runtime.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        from pgserver.postgres_server import get_server

        self.datadir.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.datadir, cleanup_mode="stop")
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
