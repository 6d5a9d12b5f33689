"""The console in a real Chromium against real sluice processes: what an operator, a viewer and a
newcomer without internet do with it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Dialog, Route, expect

from services.dev.servers.kafka import EmbeddedKafka
from tests.browser.conftest import Console
from tests.factories import shell_node
from tests.integration.kafka_support import TopicFactory
from tests.support.api import Pool, make_token
from tests.support.kafka_listener import bind, running_listener, send, wait_events

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]
WS = "/workspaces/default"
SUCCESS_GREEN = "rgb(31, 157, 85)"
RUNNING_BLUE = "rgb(30, 111, 217)"
FAILED_RED = "rgb(214, 69, 69)"
RUN_WAIT_MS = 40_000


async def api_post(console: Console, path: str, body: dict[str, Any]) -> httpx.Response:
    async with console.server.client() as api:
        answer = await api.post(path, json=body)
    assert answer.status_code < 300, answer.text
    return answer


async def manual_workflow(console: Console, name: str, nodes: list[dict[str, Any]]) -> None:
    spec = {"name": name, "type": "manual", "nodes": nodes}
    await api_post(console, f"{WS}/workflows?publish=true", spec)


async def test_operator_runs_a_workflow_and_watches_it_turn_green(console: Console) -> None:
    greet = shell_node("greet", code='echo "hello ${workflow.triggerMessage.user}"')
    nodes = [
        greet,
        shell_node("load", upstream=["greet"]),
        shell_node("check", upstream=["greet"]),
        shell_node("report", upstream=["load", "check"]),
    ]
    await manual_workflow(console, "hello", nodes)
    await manual_workflow(console, "broken", [shell_node("fail", code="exit 3")])
    await manual_workflow(console, "never_run", [shell_node("idle")])
    daily = {
        "name": "daily",
        "type": "scheduled",
        "schedule": {"cron": "0 2 * * *"},
        "nodes": [shell_node("load")],
    }
    await api_post(console, f"{WS}/workflows?publish=true", daily)
    await api_post(console, f"{WS}/workflows/broken/runs", {})
    await console.sign_in(console.server.token)
    page = await console.visit("/workflows/hello", "workflow")
    await expect(page.locator('svg.dag .node[data-node="greet"]')).to_contain_text("shell")
    await expect(page.locator("svg.dag .edges path")).to_have_count(4)

    await page.click("#run-button")
    error = page.locator("#run-dialog [data-error]")
    await page.fill('#run-dialog textarea[name="trigger_message"]', '{"user": ')
    await page.click("#run-submit")
    await expect(error).to_contain_text("trigger_message: not valid JSON")
    await page.fill('#run-dialog textarea[name="trigger_message"]', '{"user": "ada"}')
    await page.fill('#run-dialog input[name="bizdate"]', "2026-13-45")
    await page.click("#run-submit")
    await expect(error).to_contain_text("422")  # the API's answer, naming the field
    await expect(error).to_contain_text("bizdate")
    await page.fill('#run-dialog input[name="bizdate"]', "2026-12-04")
    await console.shots.take(page, "run-dialog")
    await page.click("#run-submit")
    await page.wait_for_url("**/instances/*")
    await page.evaluate("window.stillTheSamePage = true")
    await expect(page.locator("main")).to_contain_text("bizdate 2026-12-04")
    state = page.locator("#instance-state")
    await expect(state).to_have_text("succeeded", timeout=RUN_WAIT_MS)
    assert await page.evaluate("window.stillTheSamePage") is True  # updated without a reload
    node = page.locator('svg.dag .node[data-node="greet"]')
    await expect(node).to_have_class("node st-succeeded")
    await expect(page.locator("#gantt .bar")).to_have_count(4)
    await expect(page.locator('#attempts tr[data-node="greet"] .exit-code')).to_have_text("0")
    await node.click()
    await expect(page.locator("#log")).to_contain_text("hello ada")
    await console.shots.take(page, "instance")

    page = await console.visit("/", "workflows")
    status = page.locator('tr[data-workflow="hello"] .status')
    await expect(status).to_have_text("Success")
    assert await status.evaluate("e => getComputedStyle(e).backgroundColor") == SUCCESS_GREEN
    failed = page.locator('tr[data-workflow="broken"] .status')
    await expect(failed).to_have_text("Failed")
    assert await failed.evaluate("e => getComputedStyle(e).backgroundColor") == FAILED_RED
    page = await console.visit("/workflows/daily", "workflow-scheduled")
    await page.click("#backfill-button")
    await page.fill('#backfill-dialog input[name="start"]', "2026-11-01T00:00:00Z")
    await page.fill('#backfill-dialog input[name="end"]', "2026-11-03T23:00:00Z")
    await page.click("#backfill-dialog button[type=submit]")
    await page.wait_for_url("**/instances?backfill=*")  # the new group, one run per day
    rows = page.locator("#instances tbody tr[data-instance]")
    await expect(rows).to_have_count(3)
    await expect(rows.first).to_contain_text("backfill")
    await console.shots.take(page, "instances-backfill")
    page = await console.visit("/instances?workflow=hello&state=succeeded", "instances")
    await expect(page.locator("#instances tbody tr[data-instance]")).to_have_count(1)
    page = await console.visit("/instances?state=failed", "instances-failed")
    await page.locator("#instances tbody tr[data-instance] a").first.click()
    await expect(page.locator('#attempts tr[data-node="fail"] .exit-code')).to_have_text("3")
    await console.shots.take(page, "instance-failed")


async def test_operator_terminates_a_sleeping_run(console: Console, pool: Pool) -> None:
    await manual_workflow(console, "sleepy", [shell_node("nap", code="echo napping; sleep 60")])
    await console.sign_in(console.server.token)
    page = console.page
    status = page.locator('tr[data-workflow="sleepy"] .status')
    await expect(status).to_have_text("Not run")
    await page.evaluate("window.stillTheSamePage = true")
    answer = await api_post(console, f"{WS}/workflows/sleepy/runs", {})
    instance = answer.json()["instance_id"]
    await expect(status).to_have_text("Running", timeout=RUN_WAIT_MS)  # the list refreshes itself
    assert await page.evaluate("window.stillTheSamePage") is True
    page = await console.visit(f"/instances/{instance}", "instance-waiting")
    await expect(page.locator('svg.dag .node[data-node="nap"]')).to_have_class(
        "node st-running", timeout=RUN_WAIT_MS
    )
    await page.locator('svg.dag .node[data-node="nap"]').click()
    await expect(page.locator("#log")).to_contain_text("napping")  # tail of a running attempt
    await console.shots.take(page, "instance-running")

    page = await console.visit("/", "workflows-running")
    status = page.locator('tr[data-workflow="sleepy"] .status')
    await expect(status).to_have_text("Running")
    assert await status.evaluate("e => getComputedStyle(e).backgroundColor") == RUNNING_BLUE
    page = await console.visit("/resource-groups", "resource-groups")
    await expect(page.locator('tr[data-group="default"] .in-use')).to_have_text("1")
    await expect(page.locator('tr[data-group="default"]')).to_contain_text("nap")

    page = await console.visit(f"/instances/{instance}", "instance-before-terminate")

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)
    await page.click("#terminate")
    await expect(page.locator("#instance-state")).to_have_text("terminated", timeout=RUN_WAIT_MS)
    await console.shots.take(page, "instance-terminated")
    attempt = await pool.fetchval(
        "SELECT a.state FROM attempts a JOIN node_instances n ON n.id = a.node_instance_id "
        "WHERE n.instance_id = $1",
        instance,
    )
    assert attempt == "terminated"


def layered(count: int, width: int = 20) -> list[dict[str, Any]]:
    """`count` nodes in layers of `width`, each fed by one or two nodes of the layer above."""
    nodes = []
    for i in range(count):
        layer, pos = divmod(i, width)
        ups = [f"n{i - width}"] if layer else []
        if layer and pos % 3 == 0:
            ups.append(f"n{(layer - 1) * width + (pos + 7) % width}")
        nodes.append(shell_node(f"n{i}", upstream=ups))
    return nodes


async def test_viewer_sees_no_buttons_and_a_forged_post_gets_403(
    console: Console, pool: Pool
) -> None:
    await manual_workflow(console, "hello", [shell_node("greet", code="echo hi")])
    await manual_workflow(console, "big", layered(400))
    answer = await api_post(console, f"{WS}/workflows/hello/runs", {})
    instance = answer.json()["instance_id"]
    await console.sign_in(await make_token(pool, "default", "viewer"))
    page = await console.visit("/workflows/hello", "workflow-as-viewer")
    await expect(page.locator("#role")).to_have_text("viewer")
    await expect(page.locator("#actions button")).to_have_count(0)
    page = await console.visit("/workflows/big", "dag-400")
    await expect(page.locator("svg.dag .node")).to_have_count(400)
    # Readable as it opens: node names at least 10 px tall on screen.
    name = page.locator('svg.dag .node[data-node="n0"] text.name')
    assert (await name.bounding_box() or {"height": 0})["height"] >= 10
    await page.fill("[data-dag-find]", "n399")
    await page.press("[data-dag-find]", "Enter")
    await expect(page.locator("svg.dag .node.found")).to_have_count(1)
    frame = await page.locator("svg.dag").bounding_box()
    found = await page.locator('svg.dag .node[data-node="n399"]').bounding_box()
    assert frame is not None and found is not None
    assert frame["x"] <= found["x"] and found["x"] + found["width"] <= frame["x"] + frame["width"]
    assert frame["y"] <= found["y"] and found["y"] + found["height"] <= frame["y"] + frame["height"]
    await console.shots.take(page, "dag-400-found")
    page = await console.visit(f"/instances/{instance}", "instance-as-viewer")
    await expect(page.locator("#terminate")).to_have_count(0)
    await expect(page.locator("#rerun-all")).to_have_count(0)

    forged = await page.evaluate(
        """async (path) => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const post = async (headers) => {
                const r = await fetch(path, {method: "POST", body: "{}",
                    headers: {"Content-Type": "application/json", ...headers}});
                return [r.status, (await r.json()).error.message];
            };
            return [await post({"X-CSRF-Token": csrf}), await post({})];
        }""",
        f"/console/api{WS}/instances/{instance}/terminate",
    )
    assert forged[0][0] == 403 and "needs 'operator'" in forged[0][1]
    assert forged[1][0] == 403 and "csrf" in forged[1][1]
    state = await pool.fetchval("SELECT state FROM instances WHERE id = $1", instance)
    assert state != "terminated"
    await page.click("#signout")
    await page.wait_for_url("**/signin")
    await console.shots.take(page, "signed-out")


async def test_a_filtered_kafka_message_says_why_it_started_nothing(
    console: Console, pool: Pool, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name, trigger="logins", filter="value.action_type == 'login'")
    async with running_listener(console.server.db_url, kafka_broker):
        await send(kafka_broker, topic.name, [b'{"action_type": "logout", "user": "bob"}'])
        await wait_events(pool, 1, topic.name)
    await console.sign_in(console.server.token)
    page = await console.visit("/events", "events")
    outcome = page.locator("#events tbody tr[data-event] .outcome").first
    await expect(outcome).to_have_attribute("data-outcome", "filtered")
    await expect(outcome).to_contain_text("logins")
    await page.locator("#events tbody tr[data-event] a").first.click()
    await expect(page.locator("#payload")).to_contain_text("logout")
    await expect(page.locator(".outcome .reason")).to_contain_text("filter")
    await console.shots.take(page, "event")
    page = await console.visit("/triggers", "triggers")
    row = page.locator('tr[data-trigger="logins"]')
    await expect(row).to_contain_text("value.action_type == 'login'")
    await expect(row).to_contain_text("filtered 1")
    assert await pool.fetchval("SELECT count(*) FROM instances") == 0


async def test_docs_render_with_the_outside_network_blocked(console: Console) -> None:
    outside: list[str] = []

    async def only_local(route: Route) -> None:
        if route.request.url.startswith(console.url + "/"):
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await console.page.route("**/*", only_local)
    page = await console.visit("/docs", "docs-loading")
    await expect(page.locator(".opblock").first).to_be_visible()
    assert await page.locator(".opblock").count() > 20
    await console.shots.take(page, "docs")
    page = await console.visit("/redoc", "redoc-loading")
    await expect(
        page.get_by_text("/api/v1/workspaces/{ws}/workflows/{name}/runs").first
    ).to_be_attached()
    await console.shots.take(page, "redoc")
    assert outside == []
