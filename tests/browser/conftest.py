"""Browser test fixtures: Debian's Chromium driven by Playwright against real `sluice run api` and
executor processes on a fresh database.

Without Chromium the tests skip with the reason, except in CI (`CI=true`), where they fail: CI
installs the `chromium` package, so a missing browser there is a broken pipeline, not a choice.
Every page a test visits is saved as a screenshot in the test's tmp dir (pytest keeps it). With
`SLUICE_CONSOLE_SCREENSHOTS=<dir>` the pictures the README shows are also written there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.support.api import ApiServer, api_subprocess
from tests.support.executor import executor_process

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_TIMEOUT_MS = 20_000
README_SHOTS = {"workflows": "console-workflows.png", "instance": "console-instance.png"}

pytestmark = pytest.mark.browser


def chromium_path() -> str:
    """The system Chromium, or skip (fail in CI) saying how to get it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "Chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must install it (.ci/run does as root)")
        pytest.skip(reason)
    return found


@dataclass
class Shots:
    """Saves a screenshot of each page visited, numbered in visiting order."""

    where: Path
    taken: list[Path] = field(default_factory=list)

    async def take(self, page: Page, name: str) -> Path:
        path = self.where / f"{len(self.taken) + 1:02d}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        extra = os.environ.get("SLUICE_CONSOLE_SCREENSHOTS")
        if extra and name in README_SHOTS:
            os.makedirs(extra, exist_ok=True)
            shutil.copyfile(path, os.path.join(extra, README_SHOTS[name]))
        return path


@dataclass
class Console:
    """A running sluice (API + executor) and a browser page to drive it."""

    server: ApiServer
    browser: Browser
    page: Page
    shots: Shots

    @property
    def url(self) -> str:
        return self.server.url

    async def visit(self, path: str, name: str) -> Page:
        await self.page.goto(self.url + path)
        await self.shots.take(self.page, name)
        return self.page

    async def sign_in(self, token: str) -> None:
        page = await self.visit("/signin", "signin")
        await page.fill("#token", token)
        await page.click("#signin")
        await page.wait_for_url(self.url + "/")
        await self.shots.take(page, "workflows-after-signin")


@asynccontextmanager
async def browser_console(
    server: ApiServer, executable: str, where: Path
) -> AsyncIterator[Console]:
    """A Chromium page on `server`, its screenshots saved in `where`."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            yield Console(server, browser, page, Shots(where))
        finally:
            await browser.close()


@pytest.fixture(name="console")
async def console_fixture(db_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    executable = chromium_path()
    async with (
        api_subprocess(db_url) as server,
        executor_process(db_url, tmp_path / "executor.log"),
        browser_console(server, executable, tmp_path) as console,
    ):
        yield console


@pytest.fixture(name="console_without_executor")
async def console_without_executor_fixture(db_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    """The API and a browser but no executor: runs wait (Queuing) until a test starts one."""
    executable = chromium_path()
    async with (
        api_subprocess(db_url) as server,
        browser_console(server, executable, tmp_path) as console,
    ):
        yield console
