"""The run console's approvals (/ui): a call approved from the inbox and its run completes; a call denied in the
run's timeline, whose reason reaches the model."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.console.conftest import console_url, screenshot
from tests.helpers import call, finished, script, start_run
from tests.mock_lmstudio.fixture import MockLMStudio

TIME = "time__get_current_time"


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    """The time server's calls wait for a person's decision."""
    return {"approval_tools": ["time__*"]}


async def test_an_approval_granted_from_the_inbox_and_the_run_completes(
    live: httpx.AsyncClient, mock: MockLMStudio, page: Page
) -> None:
    arguments = {"timezone": "Asia/Tokyo"}
    task = "What time is it in Tokyo? " + script(calls=[[call(TIME, arguments)]], final="It is evening in Tokyo.")
    run_id = await start_run(live, task=task, mcp_servers=["time"])
    await page.goto(console_url(live, "#/inbox"))
    card = page.locator(f'.card[data-run-id="{run_id}"]')
    await expect(card.locator(".arguments")).to_contain_text('"timezone": "Asia/Tokyo"')  # the exact arguments
    await expect(card).to_contain_text("get_current_time")
    await expect(page.locator("#inbox-count")).to_have_text("1")
    assert (await live.get(f"/v1/runs/{run_id}")).json()["status"] == "awaiting_approval"
    await screenshot(page, "inbox")
    await card.locator("button.approve").click()
    # the card moves under "Decided here" and follows the run to its end
    decided = page.locator(f'.decided .card[data-run-id="{run_id}"]')
    await expect(decided.locator(".outcome .status")).to_have_attribute("data-status", "completed")
    await expect(page.locator(".empty")).to_be_visible()
    record = await finished(live, run_id)
    assert record["status"] == "completed" and record["output"] == "It is evening in Tokyo."
    [step] = record["steps"]
    assert step["approval"] == "approved" and step["arguments"] == arguments and not step["is_error"]


async def test_a_denied_calls_reason_reaches_the_model(live: httpx.AsyncClient, mock: MockLMStudio, page: Page) -> None:
    run_id = await start_run(
        live, task="Time? " + script(calls=[[call(TIME, {"timezone": "UTC"})]]), mcp_servers=["time"]
    )
    await page.goto(console_url(live, f"#/runs/{run_id}"))
    waiting = page.locator(".call .call-state.waiting")
    await expect(waiting).to_have_text("awaiting approval")
    await expect(page.locator(".run-head .status")).to_have_attribute("data-status", "awaiting_approval")
    await page.fill(".approval-controls .reason", "not on a Monday")
    await page.click(".approval-controls button.deny")
    await expect(page.locator(".verdict")).to_have_text("denied: not on a Monday")
    await expect(page.locator(".call .call-state.failed")).to_have_text("error")
    await expect(page.locator(".run-head .status")).to_have_attribute("data-status", "completed")
    await expect(page.locator(".call .output")).to_contain_text("not on a Monday")
    record = await finished(live, run_id)
    [step] = record["steps"]
    assert step["approval"] == "denied" and "not on a Monday" in step["output"]
    tool_messages = [m for r in await mock.chat_requests() for m in r["body"]["messages"] if m.get("role") == "tool"]
    assert tool_messages and "not on a Monday" in tool_messages[-1]["content"]  # what the model read
