"""The protocol's tasks at the MCP front door: a run tool called as a task starts a background run (the run store's,
as `start_task` does) and answers at once with the task; the task id is the run id, so a task outlives the client's
session and is read on any gateway process sharing the store.

- 2025-11-25 (core tasks): a `tools/call` with a `task` field answers a `CreateTaskResult`; `tasks/get`,
  `tasks/result` (waits for the end), `tasks/cancel` and `tasks/list` (the API key's runs); the server declares the
  `tasks` capability and the run tools `execution.taskSupport: "optional"`.
- 2026-07-28 (the extension `io.modelcontextprotocol/tasks`): a client that declares the extension on a `tools/call`
  of a run tool gets a task (`resultType: "task"`); `tasks/get` (the result inline once it ended), `tasks/cancel`,
  `tasks/update`.

The SDK (mcp 2.3) carries the 2025-11-25 task types but dispatches none of it: its runner checks every 2025-11-25
`tools/call` answer against `CallToolResult` and drops the `task` field. So the run tools mark the result of a call
they started as a task (`_meta` related-task), and a server middleware, which the runner trusts with its own result,
turns it into the `CreateTaskResult`; on 2026-07-28 the extension's `tools/call` interceptor does (the runner passes
a `resultType` an extension claims through). The `tasks/*` methods are the extension's methods on both revisions.

This module imports the MCP SDK: only the front door (routers.mcp_front) imports it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import Context, require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    CancelTaskRequestParams,
    CancelTaskResult,
    CreateTaskResult,
    EmptyResult,
    GetTaskPayloadRequestParams,
    GetTaskRequestParams,
    GetTaskResult,
    ListTasksResult,
    PaginatedRequestParams,
    RequestParams,
    Result,
    ServerTasksCapability,
    ServerTasksRequestsCapability,
    Task,
    TasksCallCapability,
    TasksCancelCapability,
    TasksListCapability,
    TaskStatus,
    TasksToolsCapability,
    ToolExecution,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from app.gateway import BridgeState
from routers.mcp_answers import record_result
from routers.mcp_resources import request_access
from services.access import Access
from services.agent import FINISHED_STATUSES, UNFINISHED_STATUSES
from services.errors import BridgeError, RunFinishedError, RunNotFoundError
from services.runs import RunRecord
from services.runs.store import RunFilter

log = logging.getLogger("lmstudio_bridge.mcp")

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
RELATED_TASK = "io.modelcontextprotocol/related-task"  # `_meta` key of a result that belongs to a task
CORE_TASK_REVISIONS = frozenset({"2025-11-25"})  # the revisions with tasks in the core protocol
POLL_INTERVAL_MS = 1000
LIST_PAGE = 50
RESULT_WAIT_S = 30.0  # tasks/result waits for the run's end in steps of this long
CANCEL_WAIT_S = 10.0  # tasks/cancel waits this long for the run to record its end
MAX_CURSOR = 2**63 - 1

# The server's `tasks` capability (2025-11-25): tool calls as tasks, listed and cancelled
TASKS_CAPABILITY = ServerTasksCapability(
    list=TasksListCapability(),
    cancel=TasksCancelCapability(),
    requests=ServerTasksRequestsCapability(tools=TasksToolsCapability(call=TasksCallCapability())),
)
OPTIONAL = ToolExecution(task_support="optional")

T = TypeVar("T")


class ModernTask(Result):
    """A task as the 2026-07-28 extension gives it (`DetailedTask`; the SDK has no type for it): `resultType` is
    "task" when it answers a `tools/call`, else "complete"; `result` (or `error`) once it ended."""

    result_type: str = "complete"
    task_id: str
    status: TaskStatus
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class UpdateTaskRequestParams(RequestParams):
    """`tasks/update` (2026-07-28): input responses for a task that asked for input (the SDK has no type for it)."""

    task_id: str
    input_responses: dict[str, Any] | None = None


def task_requested(ctx: Context[Any, Any]) -> bool:
    """Whether this `tools/call` asks for a task: on 2025-11-25 it carries a `task` field; on 2026-07-28 its client
    declared the tasks extension (the server decides: the run tools always answer a task then)."""
    try:
        version = ctx.protocol_version
        request = ctx.request_context
    except ValueError:  # no request context
        return False
    if version in CORE_TASK_REVISIONS:
        return CallToolRequestParams.model_validate(request.params or {}, by_name=False).task is not None
    if version in MODERN_PROTOCOL_VERSIONS:
        capabilities = ctx.client_capabilities
        return bool(capabilities is not None and capabilities.extensions and TASKS_EXTENSION in capabilities.extensions)
    return False


def task_status(status: str, version: str | None) -> TaskStatus:
    """A run's status as a task's. A run that failed answers an `is_error` tool result: `failed` on 2025-11-25,
    whose tasks count such a result as failed, `completed` on 2026-07-28 (`failed` is for JSON-RPC errors there)."""
    if status in UNFINISHED_STATUSES:
        return "working"
    if status == "cancelled":
        return "cancelled"
    if status in ("failed", "interrupted"):
        return "failed" if version in CORE_TASK_REVISIONS else "completed"
    return "completed"


def status_message(record: RunRecord) -> str:
    """What the task's `statusMessage` says of where the run stands."""
    calls = f"{record.rounds} round(s), {len(record.steps)} tool call(s)"
    if record.status == "awaiting_approval":
        return f"waiting for a person to approve a tool call (POST /v1/runs/{record.run_id}/approvals/<call>); {calls}"
    if record.status == "failed" and record.error:
        return f"run failed: {record.error.get('code')}: {record.error.get('detail')}"
    return f"run {record.status}: {calls}"


def _when(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


class TaskViews:
    """The run store's runs as tasks, in the shape of the request's revision."""

    def __init__(self, state: Callable[[], BridgeState]) -> None:
        self._state = state

    def ttl_ms(self) -> int:
        """How long a task is kept: the run store's retention."""
        return int(self._state().settings.run_retention_days * 86_400_000)

    def core(self, record: RunRecord) -> Task:
        """The 2025-11-25 task of a run."""
        return Task(
            task_id=record.run_id,
            status=task_status(record.status, "2025-11-25"),
            status_message=status_message(record),
            created_at=_when(record.created_at),
            last_updated_at=_when(record.finished_at or record.started_at or record.created_at),
            ttl=self.ttl_ms(),
            poll_interval=POLL_INTERVAL_MS,
        )

    def modern(self, record: RunRecord, result_type: str = "complete") -> ModernTask:
        """The 2026-07-28 task of a run, its tool result inline once it ended."""
        status = task_status(record.status, None)
        result = None
        if record.status in FINISHED_STATUSES:
            result = record_result(record).model_dump(by_alias=True, mode="json", exclude_none=True)
        return ModernTask(
            result_type=result_type,
            task_id=record.run_id,
            status=status,
            status_message=status_message(record),
            created_at=_when(record.created_at),
            last_updated_at=_when(record.finished_at or record.started_at or record.created_at),
            ttl_ms=self.ttl_ms(),
            poll_interval_ms=POLL_INTERVAL_MS,
            result=result,
        )

    def started(self, record: RunRecord, version: str | None) -> dict[str, Any]:
        """What a run tool that started a task puts in its result's structured content: the task, in the shape
        of the revision (the middleware or the interceptor turns the result into the `CreateTaskResult`)."""
        task = self.core(record) if version in CORE_TASK_REVISIONS else self.modern(record, "task")
        return task.model_dump(by_alias=True, mode="json", exclude_none=True)


def marked(result: CallToolResult | dict[str, Any]) -> dict[str, Any] | None:
    """The related-task mark of a run tool's result that started a task (None: an ordinary result)."""
    meta = result.get("_meta") if isinstance(result, dict) else result.meta
    mark = meta.get(RELATED_TASK) if isinstance(meta, dict) else None
    return mark if isinstance(mark, dict) else None


class FrontDoorTasks(Extension):
    """The tasks of the front door: the `tasks/*` methods (both revisions) and, on 2026-07-28, the `tools/call`
    interceptor that answers a started task as `resultType: "task"`."""

    identifier = TASKS_EXTENSION

    def __init__(self, state: Callable[[], BridgeState], views: TaskViews) -> None:
        self._state = state
        self.views = views

    def methods(self) -> Sequence[MethodBinding]:
        core = CORE_TASK_REVISIONS
        modern = frozenset(MODERN_PROTOCOL_VERSIONS)
        return (
            MethodBinding("tasks/get", GetTaskRequestParams, self.get, core | modern),
            MethodBinding("tasks/cancel", CancelTaskRequestParams, self.cancel, core | modern),
            MethodBinding("tasks/result", GetTaskPayloadRequestParams, self.result, core),
            MethodBinding("tasks/list", PaginatedRequestParams, self.list, core),
            MethodBinding("tasks/update", UpdateTaskRequestParams, self.update, modern),
        )

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and isinstance(result, CallToolResult) and marked(result):
            return ModernTask.model_validate(result.structured_content, by_name=False)
        return result

    async def get(self, ctx: ServerRequestContext[Any, Any], params: GetTaskRequestParams) -> Result:
        record = await self._record(ctx, params.task_id)
        if ctx.protocol_version in CORE_TASK_REVISIONS:
            return GetTaskResult(**dict(self.views.core(record)))
        return self.views.modern(record)

    async def result(self, ctx: ServerRequestContext[Any, Any], params: GetTaskPayloadRequestParams) -> CallToolResult:
        """The task's tool result, once the run ended (waits for it, as 2025-11-25 asks)."""
        access = self._access(ctx)
        record = await self._record(ctx, params.task_id)
        while record.status not in FINISHED_STATUSES:
            record = await _mapped(self._state().runs.wait(params.task_id, RESULT_WAIT_S, access))
        result = record_result(record)
        return result.model_copy(update={"meta": {**(result.meta or {}), RELATED_TASK: {"taskId": record.run_id}}})

    async def cancel(self, ctx: ServerRequestContext[Any, Any], params: CancelTaskRequestParams) -> Result:
        access = self._access(ctx)
        runs = self._state().runs
        try:
            await runs.cancel(params.task_id, access)
        except RunFinishedError as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"Cannot cancel task: {exc.detail}") from None
        except RunNotFoundError as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: {exc.detail}") from None
        # the run records its end when it stops (at once here; on its own gateway process within a poll)
        record = await _mapped(runs.wait(params.task_id, CANCEL_WAIT_S, access))
        if ctx.protocol_version in CORE_TASK_REVISIONS:
            return CancelTaskResult(**dict(self.views.core(record)))
        return self.views.modern(record)

    async def list(self, ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams) -> ListTasksResult:
        """The API key's runs as tasks (an admin key's: every run), newest first."""
        cursor = params.cursor
        if cursor is not None and (not cursor.isdigit() or int(cursor) > MAX_CURSOR):
            raise MCPError(code=INVALID_PARAMS, message=f"Invalid cursor {cursor!r}")
        page = await _mapped(self._state().runs.page(RunFilter(), LIST_PAGE, cursor, self._access(ctx)))
        return ListTasksResult(tasks=[self.views.core(record) for record in page.data], next_cursor=page.next_cursor)

    async def update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskRequestParams) -> EmptyResult:
        """Input responses: the front door's tasks never ask for input (approvals go through the REST route), so
        responses are ignored, as the extension allows for requests it does not know."""
        await self._record(ctx, params.task_id)
        return EmptyResult()

    def _access(self, ctx: ServerRequestContext[Any, Any]) -> Access | None:
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            require_client_extension(ctx, TASKS_EXTENSION)  # -32021 for a client that did not declare it
        return request_access(ctx.request)

    async def _record(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> RunRecord:
        return await _mapped(self._state().runs.get(task_id, self._access(ctx)))


async def _mapped(work: Awaitable[T]) -> T:
    """`work`'s value; the run store's errors as JSON-RPC errors (an unknown task, or another key's: invalid
    params, as the protocol asks)."""
    try:
        return await work
    except RunNotFoundError as exc:
        raise MCPError(code=INVALID_PARAMS, message=f"Failed to retrieve task: {exc.detail}") from None
    except BridgeError as exc:
        raise MCPError(code=INTERNAL_ERROR, message=f"{exc.code}: {exc.detail}", data=exc.problem()) from None


class CoreTasksMiddleware:
    """The 2025-11-25 half the SDK's runner leaves out: declares the `tasks` capability at `initialize`, marks the
    run tools `taskSupport: "optional"` in `tools/list`, and answers a run tool's started task as the
    `CreateTaskResult` (with the result's text `content` too: results may carry more fields, and SDK clients that
    check every `tools/call` answer against `CallToolResult` then accept it)."""

    def __init__(self, run_tools: frozenset[str]) -> None:
        self._run_tools = run_tools

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if not isinstance(result, dict):
            return result
        if ctx.method == "initialize" and result.get("protocolVersion") in CORE_TASK_REVISIONS:
            tasks = TASKS_CAPABILITY.model_dump(by_alias=True, mode="json", exclude_none=True)
            result["capabilities"] = {**(result.get("capabilities") or {}), "tasks": tasks}
        elif ctx.protocol_version not in CORE_TASK_REVISIONS:
            return result
        elif ctx.method == "tools/list":
            execution = OPTIONAL.model_dump(by_alias=True, mode="json", exclude_none=True)
            for tool in result.get("tools") or []:
                if isinstance(tool, dict) and tool.get("name") in self._run_tools:
                    tool["execution"] = execution
        elif ctx.method == "tools/call" and (mark := marked(result)) is not None:
            task = Task.model_validate(result.get("structuredContent"), by_name=False)
            created = CreateTaskResult(task=task, meta={RELATED_TASK: mark})
            return {**created.model_dump(by_alias=True, mode="json", exclude_none=True), "content": result["content"]}
        return result
