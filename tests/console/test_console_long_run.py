"""The run console (/ui) draws a long run: 200 rounds (a pipeline of two 100-round steps) with a 1 MB tool output
in each step. The time it takes is logged, not asserted (docs/console.md)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.console.conftest import console_url
from tests.helpers import call, finished, script, start_run
from tests.mock_lmstudio.fixture import MockLMStudio

pytestmark = pytest.mark.timeout(300)

ROUNDS_PER_STEP = 100  # the cap of max_rounds: two steps make 200 rounds
HUGE = 1_000_000
WINDOW = 1_048_576  # the model lists a 1M-token window: 200 rounds of history fit without compaction


@pytest.fixture(scope="module")
def gateway_settings() -> dict[str, Any]:
    return {"model_cache_ttl_s": 0}  # the model list the test configures is read at once


async def test_a_run_of_200_rounds_with_a_1_mb_output_renders(
    live: httpx.AsyncClient, mock: MockLMStudio, page: Page, capsys: pytest.CaptureFixture[str]
) -> None:
    qwen = {"id": "qwen/qwen3-4b", "type": "llm", "loaded": True, "max_context_length": WINDOW, "tool_use": True}
    await mock.configure(models=[{**qwen, "listed_context": WINDOW}])
    try:
        await render_a_long_run(live, page, capsys)
    finally:  # the next module's gateway may read the shared mock's model list before its first test resets it
        await mock.reset()


async def render_a_long_run(live: httpx.AsyncClient, page: Page, capsys: pytest.CaptureFixture[str]) -> None:
    rounds = [[call("fault__echo", {"text": f"round {i}"})] for i in range(1, ROUNDS_PER_STEP)]
    rounds.append([call("fault__huge", {"chars": HUGE})])
    task = "Work through it " + script(calls=rounds, final="All done.")
    step = {"instruction": "{task}", "mcp_servers": ["fault"], "max_rounds": ROUNDS_PER_STEP}
    run_id = await start_run(live, task=task, steps=[{**step, "name": "first"}, {**step, "name": "second"}])
    record = await finished(live, run_id, within_s=240)
    assert record["rounds"] == 2 * ROUNDS_PER_STEP, record["status"]
    assert max(len(s["output"]) for s in record["steps"]) >= HUGE

    started = time.monotonic()
    await page.goto(console_url(live, f"#/runs/{run_id}"))
    await expect(page.locator(".final-output")).to_be_visible(timeout=120_000)
    await expect(page.locator(".call .call-state.done")).to_have_count(2 * ROUNDS_PER_STEP, timeout=120_000)
    elapsed = time.monotonic() - started
    rounds_drawn = await page.locator(".round").count()
    assert rounds_drawn >= 2 * ROUNDS_PER_STEP
    await expect(page.locator(".stage h3")).to_have_text(
        ["Step 1: first · qwen/qwen3-4b", "Step 2: second · qwen/qwen3-4b"]
    )
    # the 1 MB outputs are folded: 4,000 characters drawn until "Show all" is pressed
    huge = page.locator(".call-output .more")
    await expect(huge).to_have_count(2)
    await page.locator(".call-output details:has(.more)").first.locator("summary").click()  # folded: open it
    await huge.first.click()
    longest = await page.evaluate(
        "Math.max(...[...document.querySelectorAll('.call-output pre')].map(p => p.textContent.length))"
    )
    assert longest >= HUGE
    with capsys.disabled():
        print(f"\n  console: a run of {rounds_drawn} rounds with two 1 MB outputs rendered in {elapsed:.2f} s")
