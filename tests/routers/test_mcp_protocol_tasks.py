"""The protocol's tasks at the MCP front door (2025-11-25 core tasks; the 2026-07-28 extension
`io.modelcontextprotocol/tasks`): task-augmented run tools, `tasks/get`, `tasks/result`, `tasks/cancel`,
`tasks/list`, with the SDK's client against `/mcp` (real uvicorn), within the API key's scope."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import httpx2
import mcp_types as mtypes
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from app.settings import Settings
from tests.conftest import own_gateway, served, store_url
from tests.helpers import REPO, TIME_CALL, eventually, script
from tests.helpers import mcp_http_session as http_session
from tests.mock_lmstudio.fixture import MockLMStudio
from tests.routers.front_door import ALICE, BOB, TIME_TASK, alice_and_bob, time_only

pytestmark = pytest.mark.timeout(120)

RUN_TOOLS = {"autonomous_with_mcp", "autonomous_with_multiple_mcps", "autonomous_discover_and_execute"}
RELATED_TASK = "io.modelcontextprotocol/related-task"


@pytest.fixture(scope="module")
def mcp_json(files: Path) -> Path:
    return time_only(files)


@pytest.fixture(scope="module")
def gateway_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return alice_and_bob(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def shared(settings: Settings, fresh_store: Callable[[], str]) -> Settings:
    """The settings of the module's first gateway; a second one shares its run store (`replica`)."""
    return own_gateway(settings, fresh_store, "first")


@pytest.fixture(scope="module")
async def live(shared: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with served(shared) as client:
        yield client


@pytest.fixture(scope="module")
async def replica(shared: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another gateway process on the same run store."""
    async with served(shared.model_copy(update={"instance_id": f"second-{uuid.uuid4().hex[:8]}"})) as client:
        yield client


async def call_as_task(session: ClientSession, name: str, **arguments: Any) -> mtypes.CreateTaskResult:
    """A task-augmented `tools/call` (2025-11-25: the request's `task` field)."""
    params = mtypes.CallToolRequestParams(name=name, arguments=arguments, task=mtypes.TaskMetadata(ttl=60_000))
    return await session.send_request(mtypes.CallToolRequest(params=params), mtypes.CreateTaskResult)


async def get_task(session: ClientSession, task_id: str) -> mtypes.GetTaskResult:
    params = mtypes.GetTaskRequestParams(task_id=task_id)
    return await session.send_request(mtypes.GetTaskRequest(params=params), mtypes.GetTaskResult)


async def task_result(session: ClientSession, task_id: str) -> mtypes.CallToolResult:
    params = mtypes.GetTaskPayloadRequestParams(task_id=task_id)
    return await session.send_request(mtypes.GetTaskPayloadRequest(params=params), mtypes.CallToolResult)


async def cancel_task(session: ClientSession, task_id: str) -> mtypes.CancelTaskResult:
    params = mtypes.CancelTaskRequestParams(task_id=task_id)
    return await session.send_request(mtypes.CancelTaskRequest(params=params), mtypes.CancelTaskResult)


async def list_tasks(session: ClientSession, cursor: str | None = None) -> mtypes.ListTasksResult:
    params = mtypes.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
    return await session.send_request(mtypes.ListTasksRequest(params=params), mtypes.ListTasksResult)


async def warm(live: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """The time server started: a task's run is checked (a cold server starts) before the task is answered."""
    answer = await live.post("/v1/autonomous", json={"task": TIME_TASK, "mcp_servers": ["time"]}, headers=headers)
    assert answer.status_code == 200, answer.text


async def test_tasks_capability_and_tool_support_are_declared(live: httpx.AsyncClient) -> None:
    async with http_session(live, **ALICE) as session:
        init = session.initialize_result
        assert init is not None and init.protocol_version == "2025-11-25"
        tasks = init.capabilities.tasks
        assert tasks is not None and tasks.list is not None and tasks.cancel is not None, tasks
        assert tasks.requests is not None and tasks.requests.tools is not None and tasks.requests.tools.call is not None
        listed = {t.name: t for t in (await session.list_tools()).tools}
    for name, tool in listed.items():
        support = tool.execution.task_support if tool.execution is not None else None
        assert support == ("optional" if name in RUN_TOOLS | {"autonomous_pipeline"} else None), (name, support)


async def test_a_task_outlives_its_session(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await warm(live, ALICE)
    held = "Slow time " + script(calls=[[TIME_CALL]], hold="task-session")
    async with http_session(live, **ALICE) as session:
        created = await call_as_task(session, "autonomous_with_mcp", mcp_name="time", task=held)
        task = created.task
        assert task.task_id.startswith("run_") and task.status == "working", task
        assert task.poll_interval and task.ttl and task.created_at, task
        assert created.meta is not None and created.meta[RELATED_TASK] == {"taskId": task.task_id}
        await mock.until_held("task-session")
        working = await get_task(session, task.task_id)
        assert working.status == "working" and working.status_message, working
    # the client has gone; the run goes on in the background and is the REST API's run
    assert (await live.get(f"/v1/runs/{task.task_id}", headers=ALICE)).json()["status"] == "running"
    await mock.release("task-session")

    async with http_session(live, **ALICE) as session:  # a new session: the task's result arrives
        result = await task_result(session, task.task_id)  # waits for the run's end
        done = await get_task(session, task.task_id)
    assert not result.is_error and result.structured_content is not None, result
    record = result.structured_content
    assert record["run_id"] == task.task_id and record["status"] == "completed", record
    assert [(s["server"], s["tool"]) for s in record["steps"]] == [("time", "get_current_time")]
    assert [b.text for b in result.content if isinstance(b, mtypes.TextContent)] == [record["output"]]
    assert result.meta is not None and result.meta[RELATED_TASK] == {"taskId": task.task_id}
    assert done.status == "completed" and done.task_id == task.task_id, done
    stored = (await live.get(f"/v1/runs/{task.task_id}", headers=ALICE)).json()
    assert (stored["status"], stored["output"]) == ("completed", record["output"])


async def test_a_task_is_read_on_another_gateway_process(
    live: httpx.AsyncClient, replica: httpx.AsyncClient, mock: MockLMStudio
) -> None:
    await warm(live, ALICE)
    held = "Slow time " + script(calls=[[TIME_CALL]], hold="task-replica")
    async with http_session(live, **ALICE) as session:
        created = await call_as_task(session, "autonomous_with_multiple_mcps", mcp_names=["time"], task=held)
    await mock.until_held("task-replica")
    async with http_session(replica, **ALICE) as session:
        assert (await get_task(session, created.task.task_id)).status == "working"
        await mock.release("task-replica")
        result = await task_result(session, created.task.task_id)
        assert result.structured_content is not None and result.structured_content["status"] == "completed"
        assert (await get_task(session, created.task.task_id)).status == "completed"


async def test_cancel_a_task(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await warm(live, ALICE)
    held = "Never answered " + script(calls=[[TIME_CALL]], hold="task-cancel")
    async with http_session(live, **ALICE) as session:
        created = await call_as_task(session, "autonomous_discover_and_execute", task=held)
        await mock.until_held("task-cancel")
        cancelled = await cancel_task(session, created.task.task_id)
        assert cancelled.task_id == created.task.task_id and cancelled.status == "cancelled", cancelled
        assert (await get_task(session, created.task.task_id)).status == "cancelled"
        result = await task_result(session, created.task.task_id)  # the run's record: ended cancelled
        assert result.structured_content is not None and result.structured_content["status"] == "cancelled"
        with pytest.raises(MCPError, match="Cannot cancel task") as again:  # it has ended
            await cancel_task(session, created.task.task_id)
        assert again.value.error.code == mtypes.INVALID_PARAMS
    assert (await live.get(f"/v1/runs/{created.task.task_id}", headers=ALICE)).json()["status"] == "cancelled"
    await mock.release("task-cancel")


async def test_tasks_are_the_keys_own(live: httpx.AsyncClient) -> None:
    await warm(live, BOB)
    async with http_session(live, **BOB) as session:
        bobs = await call_as_task(session, "autonomous_with_mcp", mcp_name="time", task=TIME_TASK)
        await task_result(session, bobs.task.task_id)
        listed = await list_tasks(session)
    async with http_session(live, **ALICE) as session:
        alices = await call_as_task(session, "autonomous_with_mcp", mcp_name="time", task=TIME_TASK)
        await task_result(session, alices.task.task_id)
        alice_listed = await list_tasks(session)
        for ask in (get_task, task_result, cancel_task):  # Bob's task is unknown to Alice, as over REST
            with pytest.raises(MCPError, match="No run with id") as refused:
                await ask(session, bobs.task.task_id)
            assert refused.value.error.code == mtypes.INVALID_PARAMS
        with pytest.raises(MCPError, match="Invalid cursor"):
            await list_tasks(session, "not-a-cursor")
    bob_ids = [t.task_id for t in listed.tasks]
    alice_ids = [t.task_id for t in alice_listed.tasks]
    assert bobs.task.task_id in bob_ids and alices.task.task_id not in bob_ids, bob_ids
    assert alices.task.task_id in alice_ids and bobs.task.task_id not in alice_ids, alice_ids
    assert alice_ids[0] == alices.task.task_id  # newest first
    assert {t.status for t in listed.tasks} == {"completed"}
    rest = (await live.get("/v1/runs", headers=BOB)).json()
    assert bob_ids == [run["run_id"] for run in rest["data"]]  # the key's runs, as GET /v1/runs lists them


async def test_a_failed_run_is_a_failed_task_with_its_problem(live: httpx.AsyncClient) -> None:
    async with http_session(live, **ALICE) as session:
        boom = "boom " + script(fault={"kind": "status", "status": 500})
        created = await call_as_task(session, "autonomous_with_mcp", mcp_name="time", task=boom)
        result = await task_result(session, created.task.task_id)
        failed = await get_task(session, created.task.task_id)
    assert result.is_error and result.structured_content is not None
    assert result.structured_content["code"] == "upstream_error", result.structured_content
    assert failed.status == "failed" and failed.status_message and "upstream_error" in failed.status_message


async def test_a_task_refused_at_the_start_is_an_error_result(live: httpx.AsyncClient) -> None:
    async with http_session(live, **ALICE) as session:
        arguments = {"mcp_name": "time", "task": "x", "model": "nope/nope"}
        params = mtypes.CallToolRequestParams(
            name="autonomous_with_mcp", arguments=arguments, task=mtypes.TaskMetadata()
        )
        result = await session.send_request(mtypes.CallToolRequest(params=params), mtypes.CallToolResult)
    assert result.is_error and result.structured_content is not None
    assert result.structured_content["code"] == "model_not_found", result.structured_content


async def test_a_client_without_tasks_gets_the_result(live: httpx.AsyncClient) -> None:
    async with http_session(live, **ALICE) as session:
        result = await session.call_tool("autonomous_with_mcp", {"mcp_name": "time", "task": TIME_TASK})
        with pytest.raises(MCPError, match="No run with id"):  # a task id that does not exist
            await get_task(session, "run_0000000000000000000nope")
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["status"] == "completed" and result.meta is None


# --- 2026-07-28: the extension io.modelcontextprotocol/tasks ---------------------------------------------

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"


class ExtensionTask(mtypes.Result):
    """A task as the extension gives it: as the answer of a `tools/call` (`TaskHandle`) and of `tasks/get`
    (`DetailedTask`)."""

    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None


class TaskHandle(ExtensionTask):
    result_type: Literal["task"] = "task"


class DetailedTask(ExtensionTask):
    result_type: Literal["complete"] = "complete"


class GetTask(mtypes.Request[mtypes.GetTaskRequestParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: mtypes.GetTaskRequestParams
    name_param = "taskId"  # the extension's Mcp-Name header


class CancelTask(mtypes.Request[mtypes.CancelTaskRequestParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: mtypes.CancelTaskRequestParams
    name_param = "taskId"


async def poll(session: ClientSession, task_id: str, until: set[str]) -> DetailedTask:
    async def reached() -> DetailedTask | None:
        params = mtypes.GetTaskRequestParams(task_id=task_id)
        task = await session.send_request(GetTask(params=params), DetailedTask)
        return task if task.status in until else None

    task: DetailedTask = await eventually(reached, 30, f"task {task_id} {until}")
    return task


class TasksClient(ClientExtension):
    """The client half of the extension: a task answer is polled (tasks/get) until it ends."""

    identifier = TASKS_EXTENSION

    def claims(self) -> list[ResultClaim[Any]]:
        async def resolve(handle: TaskHandle, ctx: ClaimContext) -> mtypes.CallToolResult:
            done = await poll(ctx.session, handle.task_id, {"completed", "failed", "cancelled"})
            return mtypes.CallToolResult.model_validate(done.result, by_name=False)

        return [ResultClaim(result_type="task", model=TaskHandle, resolve=resolve)]


@contextlib.asynccontextmanager
async def modern_client(
    gateway: httpx.AsyncClient, headers: dict[str, str], tasks: bool = True
) -> AsyncIterator[Client]:
    """The SDK's client on `/mcp` at the 2026-07-28 revision (no handshake), declaring the tasks extension."""
    async with (
        httpx2.AsyncClient(timeout=60, headers=headers) as http,
        Client(
            streamable_http_client(str(gateway.base_url.join("/mcp")), http_client=http),
            mode="2026-07-28",
            extensions=[TasksClient()] if tasks else None,
        ) as client,
    ):
        yield client


async def test_modern_tasks(live: httpx.AsyncClient, mock: MockLMStudio) -> None:
    await warm(live, ALICE)
    held = "Slow time " + script(calls=[[TIME_CALL]], hold="task-modern")
    async with modern_client(live, ALICE) as client:
        handle = await client.session.call_tool(
            "autonomous_with_mcp", {"mcp_name": "time", "task": held}, allow_claimed=True
        )
        assert isinstance(handle, TaskHandle) and handle.status == "working", handle
        assert handle.task_id.startswith("run_") and handle.poll_interval_ms and handle.ttl_ms, handle
    await mock.until_held("task-modern")
    async with modern_client(live, ALICE) as client:  # another connection reads it
        assert (await poll(client.session, handle.task_id, {"working"})).result is None
        await mock.release("task-modern")
        done = await poll(client.session, handle.task_id, {"completed"})
        assert done.result is not None and done.result["structuredContent"]["status"] == "completed", done
        # the SDK's client resolves a task by itself (the extension's claim): the tool's plain result
        resolved = await client.call_tool("autonomous_with_mcp", {"mcp_name": "time", "task": TIME_TASK})
        assert resolved.structured_content is not None and resolved.structured_content["status"] == "completed"

        held = "Never answered " + script(calls=[[TIME_CALL]], hold="task-modern-cancel")
        handle = await client.session.call_tool("autonomous_discover_and_execute", {"task": held}, allow_claimed=True)
        assert isinstance(handle, TaskHandle)
        await mock.until_held("task-modern-cancel")
        params = mtypes.CancelTaskRequestParams(task_id=handle.task_id)
        cancelled = await client.session.send_request(CancelTask(params=params), DetailedTask)
        assert cancelled.status == "cancelled" and cancelled.result is not None, cancelled
    await mock.release("task-modern-cancel")
    async with modern_client(live, BOB) as client:  # another key's task is not found
        with pytest.raises(MCPError, match="No run with id") as refused:
            await poll(client.session, done.task_id, {"completed"})
        assert refused.value.error.code == mtypes.INVALID_PARAMS


async def test_a_modern_client_without_the_extension_gets_the_result(live: httpx.AsyncClient) -> None:
    async with modern_client(live, ALICE, tasks=False) as client:
        result = await client.call_tool("autonomous_with_mcp", {"mcp_name": "time", "task": TIME_TASK})
        assert result.structured_content is not None and result.structured_content["status"] == "completed"
        with pytest.raises(MCPError) as refused:  # the extension's methods need the extension declared
            await poll(client.session, result.structured_content["run_id"], {"completed"})
    assert refused.value.error.code == mtypes.MISSING_REQUIRED_CLIENT_CAPABILITY


# --- stdio ------------------------------------------------------------------------------------------------


async def test_stdio_tasks(mock: MockLMStudio, mcp_json: Path) -> None:
    """`lmstudio-bridge mcp` serves tasks too; another stdio process on the same store reads them."""
    env = {"LMSTUDIO_BASE_URL": mock.base_url, "MCP_CONFIG": str(mcp_json), "BRIDGE_DATABASE_URL": store_url()}
    params = StdioServerParameters(command=sys.executable, args=["-m", "app.cli", "mcp"], env=env, cwd=str(REPO))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        assert init.capabilities.tasks is not None
        created = await call_as_task(session, "autonomous_with_mcp", mcp_name="time", task=TIME_TASK)
        result = await task_result(session, created.task.task_id)
        assert result.structured_content is not None and result.structured_content["status"] == "completed"
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert (await get_task(session, created.task.task_id)).status == "completed"
        [listed] = (await list_tasks(session)).tasks  # no API keys over stdio: every run of the store
        assert listed.task_id == created.task.task_id
