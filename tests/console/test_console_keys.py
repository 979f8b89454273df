"""The run console (/ui) with API keys: it asks for a key once, keeps it for the tab only, sends it as the
bearer token, and a scoped key sees only its runs and what its scope allows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.async_api import Browser, Page, expect

from tests.console.conftest import console_url
from tests.helpers import TIME_CALL, finished, script, start_run
from tests.mock_lmstudio.fixture import MockLMStudio

ALICE_KEY = "alice-console-key-0000001"
BOSS_KEY = "boss-console-key-00000002"
KEYS = {
    "keys": [
        {"name": "alice", "key": ALICE_KEY, "servers": ["time"]},
        {"name": "boss", "key": BOSS_KEY, "admin": True},
    ]
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def gateway_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path: Path = tmp_path_factory.mktemp("console-keys") / "keys.yaml"
    path.write_text(yaml.safe_dump(KEYS))
    return {"keys_file": str(path)}


async def give_key(page: Page, key: str) -> None:
    dialog = page.locator("#key-dialog")
    await expect(dialog).to_be_visible()
    await page.fill("#key-input", key)
    await page.click("#key-form button[type=submit]")
    await expect(dialog).not_to_be_visible()


async def test_a_scoped_key_sees_only_its_runs(
    live: httpx.AsyncClient, mock: MockLMStudio, page: Page, browser: Browser
) -> None:
    task = "Time " + script(calls=[[TIME_CALL]])
    mine = await start_run(live, auth(ALICE_KEY), task=task, mcp_servers=["time"])
    theirs = await start_run(live, auth(BOSS_KEY), task=task, mcp_servers=["time"])
    for run_id in (mine, theirs):
        await finished(live, run_id, headers=auth(BOSS_KEY))
    page_html = await live.get("/ui/")
    assert page_html.status_code == 200 and ALICE_KEY not in page_html.text  # the page itself needs no key

    await page.goto(console_url(live))
    await give_key(page, ALICE_KEY)  # asked once, on the API's 401
    await expect(page.locator(f'tr[data-run-id="{mine}"]')).to_have_attribute("data-status", "completed")
    await expect(page.locator("tbody tr")).to_have_count(1)  # the boss's run is not listed for alice
    stored = await page.evaluate("[sessionStorage.length, localStorage.length, document.cookie]")
    assert stored == [1, 0, ""], stored  # the tab's session only: no localStorage, no cookie

    # the key goes along as the bearer token, also on the event stream of a run
    await page.click(f'tr[data-run-id="{mine}"] a')
    await expect(page.locator(".call .call-state.done")).to_have_count(1)
    await expect(page.locator(".final-output")).to_be_visible()
    # another key's run is the API's 404, shown as such
    await page.goto(console_url(live, f"#/runs/{theirs}"))
    await expect(page.locator(".error")).to_contain_text("run_not_found")
    # the scope shows in the other screens too: only the time server, and load/unload is an admin's
    await page.goto(console_url(live, "#/models"))
    await expect(page.locator("table.servers tbody tr")).to_have_count(1)
    await expect(page.locator("table.servers tbody")).to_contain_text("time")
    await page.locator("table.models button.small").first.click()
    await expect(page.locator(".error")).to_contain_text("forbidden")

    # a new tab (another session) asks again; the boss sees both runs
    other = await browser.new_context()
    try:
        boss = await other.new_page()
        await boss.goto(console_url(live))
        await give_key(boss, BOSS_KEY)
        await expect(boss.locator(f'tr[data-run-id="{theirs}"]')).to_be_visible()
        await expect(boss.locator(f'tr[data-run-id="{mine}"]')).to_be_visible()
    finally:
        await other.close()


async def test_a_wrong_key_is_asked_for_again(live: httpx.AsyncClient, page: Page) -> None:
    await page.goto(console_url(live))
    await expect(page.locator("#key-why")).to_contain_text("An API key is required")
    await page.fill("#key-input", "not-a-key-of-this-gateway")
    await page.click("#key-form button[type=submit]")
    await expect(page.locator("#key-why")).to_have_text("The API key is not valid")  # asked again, saying why
    await give_key(page, BOSS_KEY)
    await expect(page.locator("tbody tr").first).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('lmstudio-bridge.key')") == BOSS_KEY
