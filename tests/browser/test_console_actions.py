"""What an operator does on the console beyond running a workflow: rerun an instance's failed
nodes and then all of them, page through older instances, see a run waiting as purple Queuing,
and zoom and pan a DAG."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import FloatRect, Locator, Page, Response, expect

from tests.browser.conftest import Console
from tests.browser.test_console import RUN_WAIT_MS, SUCCESS_GREEN, WS, api_post, manual_workflow
from tests.factories import shell_node
from tests.support.api import Pool
from tests.support.executor import (
    enqueue,
    executor_process,
    flow,
    save,
    wait_instance,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
QUEUING_PURPLE = "rgb(123, 63, 228)"  # --queuing: #7b3fe4 in console.css
PAGE_SIZE = 50  # services/api/console/routes.py
NODE_W = 180  # services/api/console/layout.py: a node's width in graph units
# Fails its first attempt, succeeds on any later one (a rerun is a new attempt).
FLAKY = 'echo "attempt $SLUICE_ATTEMPT"; test "$SLUICE_ATTEMPT" -gt 1'
LIVE_WAIT_MS = 10_000  # ten of the instance page's one-second polls


def flaky_nodes() -> list[dict[str, object]]:
    return [
        shell_node("prep", code="echo prep"),
        shell_node("flaky", upstream=["prep"], code=FLAKY),
        shell_node("report", upstream=["flaky"], code="echo report"),
    ]


async def started_run(console: Console, name: str, nodes: list[dict[str, object]]) -> int:
    """A published manual workflow `name` and one run of it: the run's instance id."""
    await manual_workflow(console, name, list(nodes))
    run = await api_post(console, f"{WS}/workflows/{name}/runs", {})
    return int(run.json()["instance_id"])


def attempts(page: Page, node: str) -> Locator:
    return page.locator(f'#attempts tr[data-node="{node}"]')


async def rerun(page: Page, button: str) -> None:
    """Click a rerun button: the console asks the API, then loads the instance page again."""
    async with page.expect_navigation():
        await page.click(button)
    await page.evaluate("window.stillTheSamePage = true")


async def test_operator_reruns_the_failed_node_then_all_nodes(console: Console, pool: Pool) -> None:
    instance = await started_run(console, "flaky", flaky_nodes())
    await console.sign_in(console.server.token)
    page = await console.visit(f"/instances/{instance}", "instance-first-run")
    state = page.locator("#instance-state")
    await expect(state).to_have_text("failed", timeout=RUN_WAIT_MS)
    await expect(page.locator('svg.dag .node[data-node="flaky"]')).to_have_class("node st-failed")
    await expect(page.locator('svg.dag .node[data-node="report"]')).to_have_class(
        "node st-upstream_failed"
    )
    await expect(attempts(page, "flaky").locator(".exit-code")).to_have_text("1")
    await expect(attempts(page, "report")).to_contain_text("not started")
    await expect(page.locator("#rerun-all")).to_be_enabled()
    await console.shots.take(page, "instance-before-rerun")

    # Rerun failed: only the failed node and the one it held back run again.
    await rerun(page, "#rerun-failed")
    await expect(attempts(page, "flaky")).to_have_count(2, timeout=RUN_WAIT_MS)
    await expect(state).to_have_text("succeeded", timeout=RUN_WAIT_MS)
    assert await page.evaluate("window.stillTheSamePage") is True  # updated without a reload
    await expect(attempts(page, "flaky").locator(".exit-code")).to_have_text(["1", "0"])
    await expect(attempts(page, "prep")).to_have_count(1)  # its success was kept
    await expect(attempts(page, "report").locator(".exit-code")).to_have_text(["0"])
    await expect(page.locator('svg.dag .node[data-node="report"]')).to_have_class(
        "node st-succeeded"
    )
    await expect(page.locator("#gantt .bar")).to_have_count(4)  # prep #1, flaky #1, #2; report #1
    await console.shots.take(page, "instance-rerun-failed")

    # Rerun all: every node gets one more attempt, the succeeded ones too.
    await expect(page.locator("#rerun-all")).to_be_visible()
    await rerun(page, "#rerun-all")
    await expect(attempts(page, "prep")).to_have_count(2, timeout=RUN_WAIT_MS)
    await expect(attempts(page, "flaky")).to_have_count(3, timeout=RUN_WAIT_MS)
    await expect(attempts(page, "report")).to_have_count(2, timeout=RUN_WAIT_MS)
    await expect(state).to_have_text("succeeded", timeout=RUN_WAIT_MS)
    await expect(attempts(page, "flaky").locator(".exit-code")).to_have_text(["1", "0", "0"])
    assert await page.evaluate("window.stillTheSamePage") is True
    await console.shots.take(page, "instance-rerun-all")
    counts = await pool.fetch(
        "SELECT n.name, count(a.id) AS n FROM node_instances n "
        "LEFT JOIN attempts a ON a.node_instance_id = n.id WHERE n.instance_id = $1 "
        "GROUP BY n.name",
        instance,
    )
    assert {r["name"]: r["n"] for r in counts} == {"prep": 2, "flaky": 3, "report": 2}
    modes = await pool.fetch(
        "SELECT mode, state FROM instance_requests WHERE instance_id = $1 ORDER BY id", instance
    )
    assert [(r["mode"], r["state"]) for r in modes] == [("failed", "done"), ("all", "done")]


async def test_a_rerun_carried_out_after_the_pages_first_poll_still_shows(
    console_without_executor: Console, pool: Pool, db_url: str, tmp_path: Path
) -> None:
    console = console_without_executor
    instance = await started_run(console, "flaky", flaky_nodes())
    async with executor_process(db_url, tmp_path / "executor-1.log"):
        assert await wait_instance(pool, instance) == "failed"
    await console.sign_in(console.server.token)

    def live(response: Response) -> bool:
        return response.url.endswith(f"/instances/{instance}/live")

    async with console.page.expect_response(live):
        page = await console.visit(f"/instances/{instance}", "instance-failed")
    state = page.locator("#instance-state")
    await expect(state).to_have_text("failed")
    # No executor yet: the request waits, and the reloaded page reads the instance as failed;
    # it keeps polling while the request is pending, so the rerun shows once carried out.
    async with page.expect_response(live):
        await rerun(page, "#rerun-failed")
    await console.shots.take(page, "instance-rerun-pending")
    pending = "SELECT state FROM instance_requests WHERE instance_id = $1"
    assert await pool.fetchval(pending, instance) == "pending"
    async with executor_process(db_url, tmp_path / "executor-2.log"):
        assert await wait_instance(pool, instance, "succeeded") == "succeeded"
        await expect(state).to_have_text("succeeded", timeout=LIVE_WAIT_MS)
    await console.shots.take(page, "instance-rerun-done")


async def test_instance_list_pages_to_older_instances_by_cursor(
    console_without_executor: Console, pool: Pool
) -> None:
    console = console_without_executor
    many = await save(pool, flow("many", [shell_node("n")]))
    other = await save(pool, flow("other", [shell_node("n")]))
    made = await enqueue(pool, many, 30) + await enqueue(pool, other, 5)
    made += await enqueue(pool, many, 30)
    await console.sign_in(console.server.token)

    async def shown(page: Page) -> list[int]:
        ids = await page.locator("#instances tbody tr[data-instance]").evaluate_all(
            "rows => rows.map(r => Number(r.dataset.instance))"
        )
        return [int(i) for i in ids]

    page = await console.visit("/instances", "instances-page-1")
    first = await shown(page)
    assert first == sorted(made, reverse=True)[:PAGE_SIZE]  # newest first, one page
    assert await page.locator("#instances").get_attribute("data-refresh") == "3000"
    next_link = page.locator("#next-page")
    await expect(next_link).to_have_text("Older →")
    await next_link.click()
    await page.wait_for_url("**/instances?*cursor=*")
    await console.shots.take(page, "instances-page-2")
    second = await shown(page)
    assert second == sorted(made, reverse=True)[PAGE_SIZE:]  # the 15 oldest
    assert max(second) < min(first) and not set(first) & set(second)
    await expect(page.locator("#next-page")).to_have_count(0)  # nothing older
    assert await page.locator("#instances").get_attribute("data-refresh") is None

    # A filter survives the cursor: page 2 of `many` holds only `many`'s oldest instances.
    page = await console.visit("/instances?workflow=many", "instances-many-page-1")
    first = await shown(page)
    assert len(first) == PAGE_SIZE
    await page.click("#next-page")
    await page.wait_for_url("**/instances?*workflow=many*cursor=*")
    await console.shots.take(page, "instances-many-page-2")
    second = await shown(page)
    many_ids = sorted(made[:30] + made[35:], reverse=True)
    assert first + second == many_ids and len(second) == 10
    cells = page.locator("#instances tbody tr[data-instance] td:nth-child(2)")
    await expect(cells).to_have_text(["many"] * 10)
    await expect(page.locator('#filters input[name="workflow"]')).to_have_value("many")


async def test_a_waiting_run_shows_purple_queuing_until_an_executor_runs_it(
    console_without_executor: Console, db_url: str, tmp_path: Path
) -> None:
    console = console_without_executor
    instance = await started_run(console, "queued", [shell_node("load", code="echo loaded")])
    await manual_workflow(console, "idle", [shell_node("load")])
    await console.sign_in(console.server.token)
    page = await console.visit("/", "workflows-queuing")
    row = page.locator('tr[data-workflow="queued"]')
    status = row.locator(".status")
    await expect(status).to_have_text("Queuing")
    await expect(status).to_have_attribute("data-status", "queuing")
    assert await status.evaluate("e => getComputedStyle(e).backgroundColor") == QUEUING_PURPLE
    legend = page.locator(".legend .st-queuing")
    assert await legend.evaluate("e => getComputedStyle(e).backgroundColor") == QUEUING_PURPLE
    await expect(row.locator("td").nth(7)).to_have_text("1")  # Queuing count
    await expect(row.locator("td").nth(8)).to_have_text("0")  # Running count
    await expect(page.locator('tr[data-workflow="idle"] .status')).to_have_text("Not run")
    page = await console.visit(f"/instances/{instance}", "instance-waiting")
    await expect(page.locator("#instance-state")).to_have_text("waiting")
    assert (
        await page.locator("#instance-state").evaluate("e => getComputedStyle(e).backgroundColor")
        == QUEUING_PURPLE
    )

    page = await console.visit("/", "workflows-before-executor")
    await page.evaluate("window.stillTheSamePage = true")
    status = page.locator('tr[data-workflow="queued"] .status')
    await expect(status).to_have_text("Queuing")
    async with executor_process(db_url, tmp_path / "executor.log"):
        await expect(status).to_have_text("Success", timeout=RUN_WAIT_MS)  # the list re-reads
    assert await page.evaluate("window.stillTheSamePage") is True
    assert await status.evaluate("e => getComputedStyle(e).backgroundColor") == SUCCESS_GREEN
    await console.shots.take(page, "workflows-queued-ran")


def dag_nodes(count: int) -> list[dict[str, object]]:
    """A chain of `count` nodes with a side branch: wider than the frame at 1:1."""
    nodes = [shell_node(f"n{i}", upstream=[f"n{i - 1}"] if i else []) for i in range(count)]
    nodes.append(shell_node("side", upstream=["n0"]))
    return nodes


async def view_box(page: Page) -> list[float]:
    box = await page.locator("svg.dag").get_attribute("viewBox")
    assert box is not None
    return [float(v) for v in box.split()]


async def screen_box(locator: Locator) -> FloatRect:
    box = await locator.bounding_box()
    assert box is not None
    return box


async def test_dag_zooms_with_its_buttons_and_the_wheel_and_pans_by_dragging(
    console_without_executor: Console,
) -> None:
    console = console_without_executor
    instance = await started_run(console, "chain", dag_nodes(12))
    await console.sign_in(console.server.token)
    page = await console.visit("/workflows/chain", "dag-chain")
    svg = page.locator("svg.dag")
    node = page.locator('svg.dag .node[data-node="n0"]')
    await expect(page.locator("svg.dag .node")).to_have_count(13)

    # 1:1 shows about one graph unit per pixel: the view is the frame's size, a node 180 px
    # wide. (About: the view is measured with the frame's 1 px border, so it is drawn at 98.6%.)
    await page.click('[data-dag-zoom="reset"]')
    frame = await screen_box(svg)
    x, y, w, h = await view_box(page)
    assert (x, y) == (0, 0) and w == pytest.approx(frame["width"], abs=1)
    base = (await screen_box(node))["width"]
    assert base == pytest.approx(NODE_W, rel=0.02)

    await page.click('[data-dag-zoom="in"]')
    zoomed = await view_box(page)
    assert zoomed[2] == pytest.approx(w / 1.3, rel=0.01)
    assert zoomed[3] == pytest.approx(h / 1.3, rel=0.01)
    assert (await screen_box(node))["width"] == pytest.approx(base * 1.3, rel=0.01)
    await console.shots.take(page, "dag-zoomed-in")
    await page.click('[data-dag-zoom="out"]')
    await page.click('[data-dag-zoom="out"]')
    out = await view_box(page)
    assert out[2] == pytest.approx(w * 1.3, rel=0.01)
    assert (await screen_box(node))["width"] == pytest.approx(base / 1.3, rel=0.01)

    # Fit shows the whole graph: its last node is inside the frame, unlike at 1:1.
    last = page.locator('svg.dag .node[data-node="n11"]')
    await page.click('[data-dag-zoom="reset"]')
    assert (await screen_box(last))["x"] > frame["x"] + frame["width"]
    await page.click('[data-dag-zoom="fit"]')
    fitted = await screen_box(last)
    assert fitted["x"] + fitted["width"] <= frame["x"] + frame["width"] + 1
    assert (await view_box(page))[2] > w
    await console.shots.take(page, "dag-fit")

    # The wheel zooms about the pointer: the node under it stays where it is.
    await page.click('[data-dag-zoom="reset"]')
    before = await screen_box(node)
    one_to_one = await svg.get_attribute("viewBox")
    await page.mouse.move(before["x"] + 20, before["y"] + 10)
    await page.mouse.wheel(0, -100)
    await page.wait_for_function(
        "old => document.querySelector('svg.dag').getAttribute('viewBox') !== old",
        arg=one_to_one,
    )
    after = await screen_box(node)
    assert after["width"] == pytest.approx(base * 1.15, rel=0.01)
    assert after["x"] == pytest.approx(before["x"] + 20 - 20 * 1.15, abs=2)

    # Dragging pans: at 1:1 the drawing follows the pointer (within the 1.4% above).
    await page.click('[data-dag-zoom="reset"]')
    before = await screen_box(node)
    start_x, start_y = frame["x"] + frame["width"] - 40, frame["y"] + 20  # empty background
    await page.mouse.move(start_x, start_y)
    await page.mouse.down()
    await page.mouse.move(start_x - 150, start_y + 30, steps=5)
    await expect(svg).to_have_class(re.compile(r"\bpanning\b"))
    await page.mouse.up()
    await expect(svg).not_to_have_class(re.compile(r"\bpanning\b"))
    moved = await screen_box(node)
    assert moved["x"] == pytest.approx(before["x"] - 150, abs=3)
    assert moved["y"] == pytest.approx(before["y"] + 30, abs=1)
    assert await view_box(page) == pytest.approx([150, -30, w, h], abs=1)
    await console.shots.take(page, "dag-panned")

    # On an instance page a drag that starts on a node pans; only a click opens the node's log.
    page = await console.visit(f"/instances/{instance}", "instance-dag")
    node = page.locator('svg.dag .node[data-node="n0"]')
    await page.click('[data-dag-zoom="reset"]')
    box = await screen_box(node)
    await page.mouse.move(box["x"] + 30, box["y"] + 20)
    await page.mouse.down()
    await page.mouse.move(box["x"] + 130, box["y"] + 60, steps=5)
    await page.mouse.up()
    moved = await screen_box(node)
    assert moved["x"] == pytest.approx(box["x"] + 100, abs=3)
    await expect(page.locator("#log-node")).to_have_text("click a node")
    await page.click('[data-dag-zoom="reset"]')
    await node.click()
    await expect(page.locator("#log-node")).to_have_text("n0 (latest)")
    await console.shots.take(page, "instance-dag-panned")
