"""Each HTTP server of a sluice process logs one `server_started` line under sluice's name,
not uvicorn's three or four."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from services.dev.servers.process import free_port
from tests.support.api import ROOT, SLUICE, sluice_env, stop_process, wait_ready


async def test_sluice_run_api_logs_one_line_per_server(db_url: str, tmp_path: Path) -> None:
    api_port, metrics_port = free_port(), free_port()
    env = sluice_env(
        db_url,
        SLUICE_API_PORT=str(api_port),
        SLUICE_METRICS_PORT=str(metrics_port),
        SLUICE_HOST="127.0.0.1",
        SLUICE_LOG_FORMAT="json",
    )
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            SLUICE, "run", "api", env=env, cwd=ROOT, stdout=log, stderr=log
        )
        try:
            await wait_ready(f"http://127.0.0.1:{api_port}", proc)
        finally:
            await stop_process(proc)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    started = [line for line in lines if line.get("event") == "server_started"]
    assert sorted((s["server"], s["url"]) for s in started) == [
        ("api", f"http://127.0.0.1:{api_port}"),
        ("probes", f"http://127.0.0.1:{metrics_port}"),
    ]
    assert all(s["logger"].startswith("sluice.") for s in started)
    uvicorn_lines = [line for line in lines if "uvicorn" in str(line.get("logger"))]
    assert uvicorn_lines == []
