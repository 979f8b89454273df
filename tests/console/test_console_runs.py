"""The run console (/ui) in a real browser: the page and its headers, the runs list, a run followed live,
and a run started from the form."""

from __future__ import annotations

import json
import re
import tomllib
from html.parser import HTMLParser

import httpx
from playwright.async_api import Page, Route, expect

from routers.console import ASSETS, CSP, UI_DIR
from tests.console.conftest import console_url, screenshot
from tests.helpers import REPO, TIME_CALL, call, events_of, finished, script, start_run
from tests.mock_lmstudio.fixture import MockLMStudio

TIME = "time__get_current_time"


# --- the page ----------------------------------------------------------------------------------------------


class Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" or any(name.startswith("on") or name == "style" for name, _ in attrs):
            self.tags.append({"tag": tag, **dict(attrs)})


async def test_the_console_is_served_from_the_package_with_a_strict_csp(live: httpx.AsyncClient) -> None:
    page = await live.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in CSP
    assert "unsafe" not in CSP and "http" not in CSP  # nothing inline, nothing from elsewhere
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["referrer-policy"] == "no-referrer"
    redirect = await live.get("/ui")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/ui/"
    for name, media_type in ASSETS.items():
        asset = await live.get(f"/ui/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"] == media_type, name
        assert asset.headers["content-security-policy"] == CSP
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", asset.text) or name.endswith(".svg"), name
    for missing in ("/ui/nope.js", "/ui/..%2fconsole.py", "/ui/index.htm"):
        unknown = await live.get(missing)
        assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("application/problem+json")
    # no inline script, no event-handler or style attribute: every script is a file of the package
    parser = Scripts()
    parser.feed(page.text)
    assert parser.tags and all(tag["tag"] == "script" and tag.get("src") for tag in parser.tags), parser.tags
    # every file of routers/ui is served, and `pip install` ships them (package data)
    assert {path.name for path in UI_DIR.iterdir()} == set(ASSETS)
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "ui/*" in package_data["routers"]


async def test_the_page_loads_without_a_key_when_none_is_configured(live: httpx.AsyncClient, page: Page) -> None:
    await page.goto(console_url(live))
    await expect(page.locator("nav a[aria-current]")).to_have_text("Runs")
    await expect(page.locator("#key-dialog")).not_to_be_visible()


async def test_keyboard_and_a_phone_screen(live: httpx.AsyncClient, page: Page) -> None:
    await page.goto(console_url(live))
    await expect(page.locator("nav a[aria-current]")).to_have_text("Runs")
    for _ in range(4):  # skip link, brand, Runs, Approvals: the menu is reached in reading order
        await page.keyboard.press("Tab")
    await expect(page.locator("nav a[data-nav=inbox]")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"#/inbox$"))
    await expect(page.locator("nav a[aria-current]")).to_contain_text("Approvals")
    await page.set_viewport_size({"width": 390, "height": 844})
    for fragment in ("#/runs", "#/start", "#/models"):
        await page.goto(console_url(live, fragment))
        await expect(page.locator("main h2").first).to_be_visible()
        # nothing wider than the phone's screen: tables scroll inside their own box
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), fragment


# --- the runs list -----------------------------------------------------------------------------------------


async def test_the_list_shows_a_run_created_through_the_api(
    live: httpx.AsyncClient, mock: MockLMStudio, page: Page
) -> None:
    first = await start_run(live, task="What time is it? " + script(calls=[[TIME_CALL]]), mcp_servers=["time"])
    await finished(live, first)
    await page.goto(console_url(live))
    row = page.locator(f'tr[data-run-id="{first}"]')
    await expect(row).to_have_attribute("data-status", "completed")
    await expect(row).to_contain_text("What time is it?")
    await expect(row).to_contain_text("time")
    # a run started while the list is open shows up without a reload, newest first
    second = await start_run(live, task="Another one " + script(answer="done"), mcp_servers=["time"])
    await expect(page.locator("tbody tr").first).to_have_attribute("data-run-id", second)
    await expect(page.locator(f'tr[data-run-id="{second}"]')).to_have_attribute("data-status", "completed")
    # filtered by status: a status none of them has leaves the list empty
    await page.select_option("select[name=status]", "failed")
    await expect(page.locator("td.empty")).to_be_visible()
    await page.select_option("select[name=status]", "completed")
    await expect(page.locator(f'tr[data-run-id="{first}"]')).to_be_visible()
    await expect(page).to_have_url(re.compile(r"#/runs\?status=completed$"))
    await page.select_option("select[name=status]", "")
    await expect(page.locator(f'tr[data-run-id="{second}"]')).to_be_visible()
    await screenshot(page, "runs")
    await page.click(f'tr[data-run-id="{first}"] a')
    await expect(page.locator(".run .call .tool")).to_have_text(re.compile(r"^time\W+get_current_time$"))
    await expect(page.locator(".final-output")).to_be_visible()


# --- a run, live ---------------------------------------------------------------------------------------------


async def test_a_live_runs_steps_appear_while_it_runs(live: httpx.AsyncClient, mock: MockLMStudio, page: Page) -> None:
    plan = script(
        calls=[[TIME_CALL], [call(TIME, {"timezone": "Asia/Tokyo"}), call(TIME, {"timezone": "Europe/Paris"})]],
        reasoning="The user wants the time; the time server has a tool for it.",
        say="Let me look at the clock.",
        final="It is morning in Tokyo and night in Paris.",
        hold="live-run",
    )
    run_id = await start_run(live, task="What time is it in Tokyo and Paris? " + plan, mcp_servers=["time"])
    await mock.until_held("live-run")  # the run's first LM Studio call waits: nothing has been done yet
    await page.goto(console_url(live, f"#/runs/{run_id}"))
    head = page.locator(".run-head")
    await expect(head.locator(".status")).to_have_attribute("data-status", "running")
    await expect(page.locator(".round")).to_have_count(1)  # round 1 started, its answer not in yet
    await expect(page.locator(".call")).to_have_count(0)
    await mock.release("live-run")
    # the steps arrive on the open page (the event stream), then the answer, with no reload
    await expect(page.locator(".call .call-state.done")).to_have_count(3)
    await expect(page.locator(".final-output")).to_have_text("It is morning in Tokyo and night in Paris.")
    await expect(head.locator(".status")).to_have_attribute("data-status", "completed")
    await expect(page.locator(".round")).to_have_count(3)
    await expect(page.locator(".round").nth(1).locator(".call")).to_have_count(2)
    await expect(page.locator(".reasoning").first).to_contain_text("Reasoning")
    await expect(page.locator(".wf-row")).to_have_count(3)
    # each round's LM Studio call: model, tokens in and out, how it finished (the `model.answered` event)
    first_call = page.locator(".round").first.locator(".llm")
    await expect(first_call).to_contain_text("in → ")
    await expect(first_call).to_contain_text("finish: tool_calls")
    assert (await finished(live, run_id))["status"] == "completed"
    await page.locator(".reasoning").first.locator("summary").click()
    await screenshot(page, "run")


async def test_a_dropped_event_stream_resumes_with_last_event_id(
    live: httpx.AsyncClient, mock: MockLMStudio, page: Page
) -> None:
    plan = script(calls=[[TIME_CALL], [call(TIME, {"timezone": "Asia/Tokyo"})]], final="Two clocks read.")
    run_id = await start_run(live, task="Two clocks " + plan, mcp_servers=["time"])
    await finished(live, run_id)
    events = await events_of(live, run_id)
    cut = next(i for i, f in enumerate(events) if f.event == "tool_call.completed") + 1  # the first step, then a drop
    partial = "".join(f"id: {f.id}\nevent: {f.event}\ndata: {json.dumps(f.data)}\n\n" for f in events[:cut])
    resumed_after: list[str | None] = []

    async def drop_the_first_stream(route: Route) -> None:
        if not resumed_after and route.request.headers.get("last-event-id") is None:
            resumed_after.append(None)  # the first connection ends after `cut` events, with no terminal event
            await route.fulfill(status=200, content_type="text/event-stream", body=partial)
        else:
            resumed_after.append(route.request.headers.get("last-event-id"))
            await route.continue_()

    await page.route(f"**/v1/runs/{run_id}/events", drop_the_first_stream)
    await page.goto(console_url(live, f"#/runs/{run_id}"))
    await expect(page.locator(".call .call-state.done")).to_have_count(2)  # the second step came after the drop
    await expect(page.locator(".final-output")).to_have_text("Two clocks read.")
    assert resumed_after == [None, str(events[cut - 1].id)]  # reconnected once, after the last event it drew
    await expect(page.locator(".call")).to_have_count(2)  # nothing drawn twice, nothing missed


async def test_start_a_run_from_the_form(live: httpx.AsyncClient, mock: MockLMStudio, page: Page) -> None:
    await page.goto(console_url(live, "#/start"))
    model = page.locator("#start-model")
    await expect(model.locator("option")).not_to_have_count(1)  # the models came in
    options = await model.locator("option").all_inner_texts()
    loaded = [i for i, text in enumerate(options) if "(loaded)" in text]
    assert loaded and loaded[0] == 1, options  # after "default model": loaded ones first
    assert not any("embed" in text for text in options), options  # embedding models are never chosen for chat
    await page.fill("#start-task", "Tell me the time " + script(calls=[[TIME_CALL]], final="It is noon."))
    await page.check("input[name=server][value=time]")
    await page.locator("details.options summary").click()
    await page.fill("#start-max_rounds", "3")
    await page.click("form.start button[type=submit]")
    await expect(page).to_have_url(re.compile(r"#/runs/run_[0-9a-f]+$"))
    await expect(page.locator(".final-output")).to_have_text("It is noon.")
    run_id = page.url.rsplit("/", 1)[1]
    record = await finished(live, run_id)
    assert record["mcp_servers"] == ["time"] and record["options"].get("max_rounds") == 3, record


# --- models and hosts ----------------------------------------------------------------------------------------


async def test_models_and_hosts_load_and_unload(live: httpx.AsyncClient, mock: MockLMStudio, page: Page) -> None:
    models = (await live.get("/v1/models")).json()["data"]
    idle = next((m for m in models if m["state"] == "not-loaded" and m["type"] == "llm"), None)
    assert idle is not None, [(m["id"], m["type"], m["state"]) for m in models]
    await page.goto(console_url(live, "#/models"))
    row = page.locator(f'tr[data-model="{idle["id"]}"]')
    await expect(row.locator(".host .status")).to_have_attribute("data-status", "available")  # on the host, idle
    await row.locator("button", has_text="Load").click()
    await expect(row.locator(".host .status")).to_have_attribute("data-status", "loaded")
    await expect(page.locator(".note .ok")).to_contain_text(f"Loaded {idle['id']}")
    assert next(m for m in (await live.get("/v1/models")).json()["data"] if m["id"] == idle["id"])["state"] == "loaded"
    await row.locator("button", has_text="Unload").click()
    await expect(row.locator(".host .status")).to_have_attribute("data-status", "available")
    await expect(page.locator("table.servers tbody tr")).not_to_have_count(0)  # the MCP servers, with status


# --- what a run may hold, and what a person may do to it ------------------------------------------------------

HOSTILE = '<img src="x" onerror="window.pwned = 1"><script>window.pwned = 2</script>'


async def test_hostile_text_is_shown_never_run(live: httpx.AsyncClient, mock: MockLMStudio, page: Page) -> None:
    plan = script(calls=[[call("fault__echo", {"text": HOSTILE})]], reasoning=HOSTILE, final=HOSTILE)
    run_id = await start_run(live, task=f"Echo {HOSTILE} " + plan, mcp_servers=["fault"])
    await finished(live, run_id)
    await page.goto(console_url(live, f"#/runs/{run_id}"))
    await expect(page.locator(".final-output")).to_have_text(HOSTILE)  # the text itself, as text
    await expect(page.locator(".call .output")).to_contain_text(HOSTILE)
    await page.goto(console_url(live))
    await expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_contain_text("<img")
    assert await page.evaluate("window.pwned === undefined && document.querySelectorAll('main img').length === 0")


async def test_cancel_and_delete_from_the_run(live: httpx.AsyncClient, mock: MockLMStudio, page: Page) -> None:
    run_id = await start_run(live, task="Slow " + script(hold="to-cancel"), mcp_servers=["time"])
    await mock.until_held("to-cancel")
    await page.goto(console_url(live, f"#/runs/{run_id}"))
    await page.click(".run-head button.cancel")
    await expect(page.locator(".run-head .status")).to_have_attribute("data-status", "cancelled")
    assert (await finished(live, run_id))["status"] == "cancelled"
    await page.click(".run-head button.delete")
    await expect(page).to_have_url(re.compile(r"#/runs$"))
    await expect(page.locator("tbody tr").first).to_be_visible()
    await expect(page.locator(f'tr[data-run-id="{run_id}"]')).to_have_count(0)
    assert (await live.get(f"/v1/runs/{run_id}")).status_code == 404
