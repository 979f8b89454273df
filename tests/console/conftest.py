"""The run console's browser tests: Playwright (PyPI) driving Debian's chromium, never a browser of Playwright's
own (`apt-get install chromium`; .ci/run installs it). Each test gets a fresh browser context on the module's
gateway (`live`: a real socket), and fails on any script error or Content-Security-Policy violation."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, ViewportSize, async_playwright, expect

from tests.helpers import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# headless as root on a machine without outside network: no sandbox, no GPU, no background calls home
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# the screenshots docs/console.md and the README show: made by every test run, written into docs/console/ by
# `make screenshots` (UPDATE_SCREENSHOTS=1) only, so that `make test` leaves the working tree as it found it
SCREENSHOTS = (
    REPO / "docs" / "console"
    if os.environ.get("UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "lmstudio-bridge-console"
)
WAIT_MS = 30_000  # a busy 2-core machine: DOM conditions are waited for up to this long, never slept for
VIEWPORT: ViewportSize = {"width": 1280, "height": 860}

expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.fail("the console's browser tests need Debian's chromium: apt-get install chromium (.ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


class Problems(list[str]):
    """Script errors and CSP violations the page reported (a 401 the console answers with its key dialog is
    not one)."""

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.append(message.text)


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    problems = Problems()
    page.on("console", problems.console)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    yield page
    await context.close()
    assert not problems, problems


def console_url(gateway: httpx.AsyncClient, fragment: str = "") -> str:
    return f"{str(gateway.base_url).rstrip('/')}/ui/{fragment}"


async def screenshot(page: Page, name: str) -> Path:
    """<name>.png of the page as it is now, in SCREENSHOTS."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=path)
    return path
