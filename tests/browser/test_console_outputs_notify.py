"""Node outputs and notifications in a real Chromium: a node's hostile outputs arrive as text, a
failing node's alert reaches a local HTTP receiver and shows as `sent`, and a developer's test
message goes out from the Notifications page."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.browser.conftest import Console
from tests.browser.test_console import RUN_WAIT_MS, WS, api_post
from tests.support.api import Pool
from tests.support.notifier import running_notifier
from tests.support.receivers import http_receiver

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]
EMIT = """
import json, os
value = {"html": "<script>window.owned = 1</script>", "attr": '"><img src=x onerror=alert(1)>'}
with open(os.environ["SLUICE_OUTPUT_FILE"], "w") as out:
    json.dump(value, out)
"""


async def test_outputs_show_as_text_and_a_failure_alert_shows_sent(
    console: Console, pool: Pool, db_url: str
) -> None:
    async with http_receiver() as hook, running_notifier(db_url):
        spec = {
            "name": "alerting",
            "type": "manual",
            "policy": {"notify": [{"on": ["failure"], "channel": "webhook", "url": hook.url}]},
            "nodes": [
                {"name": "emit", "type": "python", "code": EMIT},
                {"name": "fail", "type": "shell", "code": "exit 3", "upstream": ["emit"]},
            ],
        }
        await api_post(console, f"{WS}/workflows?publish=true", spec)
        run = await api_post(console, f"{WS}/workflows/alerting/runs", {})
        instance = run.json()["instance_id"]
        await console.sign_in(console.server.token)
        page = await console.visit(f"/instances/{instance}", "instance-outputs")
        await expect(page.locator("#instance-state")).to_have_text("failed", timeout=RUN_WAIT_MS)
        current = page.locator('#outputs tr[data-outputs-node="emit"]')
        await expect(current).to_contain_text("<script>window.owned = 1</script>")
        await expect(current).to_contain_text('"><img src=x onerror=alert(1)>')
        await expect(page.locator("#live img, #outputs script")).to_have_count(0)
        assert await page.evaluate("window.owned") is None
        await page.click('#attempts tr[data-node="emit"] td.attempt-outputs summary')
        await expect(page.locator('#attempts tr[data-node="emit"] pre.outputs')).to_be_visible()
        # The alert is sent after the run ended; the table re-reads itself every 3 s.
        alert = page.locator("#notifications tr[data-notification]")
        await expect(alert).to_have_count(1, timeout=RUN_WAIT_MS)
        await expect(alert.locator(".state")).to_have_text("sent", timeout=RUN_WAIT_MS)
        await expect(alert).to_contain_text("failure")
        await console.shots.take(page, "instance-notified")
        assert len(hook.requests) == 1

        page = await console.visit("/notifications", "notifications")
        await page.click("#notify-test-button")
        textarea = page.locator('#notify-test-dialog textarea[name="rule"]')
        await textarea.fill('{"on": ["failure"], "channel": "fax"}')
        await page.click("#notify-test-submit")
        error = page.locator("#notify-test-dialog [data-error]")
        await expect(error).to_contain_text("422")  # the API's answer, naming the field
        await expect(error).to_contain_text("rule.channel")
        rule = f'{{"on": ["failure"], "channel": "webhook", "url": "{hook.url}"}}'
        await textarea.fill(rule)
        await console.shots.take(page, "notify-test-dialog")
        await page.click("#notify-test-submit")
        test_row = page.locator("#notifications tr[data-notification]").first
        await expect(test_row).to_contain_text("test", timeout=RUN_WAIT_MS)
        await expect(test_row.locator(".state")).to_have_text("sent", timeout=RUN_WAIT_MS)
        await expect(test_row.locator("td").nth(4)).to_have_text("test")
        page = await console.visit("/notifications?state=sent", "notifications-sent")
        await expect(page.locator("#notifications tr[data-notification]")).to_have_count(2)
        await hook.wait(2)
