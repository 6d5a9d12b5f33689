"""The console's instance page says what a waiting instance waits for (dependencies between
workflows): the upstream workflow, its bizdate, the deciding instance and why."""

from __future__ import annotations

import httpx

from services.scheduler.service import Scheduler
from tests.integration.test_console_http import signed_in
from tests.support.api import ApiServer, Pool, make_token
from tests.support.scheduler import publish, scheduled, utc


async def test_a_waiting_instance_names_its_upstream(
    api_server: ApiServer, api: httpx.AsyncClient, pool: Pool
) -> None:
    await publish(pool, scheduled("ods", "0 0 2 * * ?"), at=utc("2026-12-03T12:00"))
    await publish(
        pool,
        scheduled("dwd", "0 0 2 * * ?", depends_on=[{"workflow": "ods"}]),
        at=utc("2026-12-03T12:00"),
    )
    await Scheduler(pool).tick(utc("2026-12-04T02:00:00.01"))
    ods, dwd = [int(r["id"]) for r in await pool.fetch("SELECT id FROM instances ORDER BY id")]
    async with signed_in(api_server, await make_token(pool, "default", "viewer")) as viewer:
        for path in (f"/instances/{dwd}", f"/instances/{dwd}/live"):
            page = (await viewer.get(path)).text
            table = page.split('id="waiting-for"', 1)[1].split("</table>", 1)[0]
            assert '<a href="/workflows/ods">ods</a>' in table
            assert f'<a href="/instances/{ods}">{ods}</a>' in table
            assert "2026-12-03" in table and "<td>waiting</td>" in table
            assert "upstream workflow ods for 20261203 not succeeded" in table
        page = (await viewer.get(f"/instances/{ods}")).text
        assert 'id="waiting-for"' not in page
