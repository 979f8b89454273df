"""The agent: a model in LM Studio carries out a task by calling MCP tools.

`AgentService.open(spec)` checks everything that can fail before a run starts (model, servers,
tools, a free run slot) and returns a `Run`; `Run.execute(emit)` carries it out. The split lets
the HTTP layer answer early failures with a problem document and stream everything after.
"""

from services.agent.approvals import ApprovalPolicy, Decision
from services.agent.loop import Run
from services.agent.pipeline import Pipeline, StageSpec
from services.agent.records import (
    FINISHED_STATUSES,
    PROGRESS_EVENTS,
    RUN_STATUSES,
    TERMINAL_EVENTS,
    UNFINISHED_STATUSES,
    Emit,
    Journal,
    RoundReasoning,
    RunEvent,
    RunResult,
    RunSpec,
    RunStatus,
    StageRecord,
    Step,
    ToolChoice,
    result_data,
    result_json,
    step_data,
)
from services.agent.service import MAX_ROUNDS_CAP, AgentService, RunDefaults

__all__ = [
    "FINISHED_STATUSES",
    "MAX_ROUNDS_CAP",
    "PROGRESS_EVENTS",
    "RUN_STATUSES",
    "TERMINAL_EVENTS",
    "UNFINISHED_STATUSES",
    "AgentService",
    "ApprovalPolicy",
    "Decision",
    "Emit",
    "Journal",
    "Pipeline",
    "RoundReasoning",
    "Run",
    "RunDefaults",
    "RunEvent",
    "RunResult",
    "RunSpec",
    "RunStatus",
    "StageRecord",
    "StageSpec",
    "Step",
    "ToolChoice",
    "result_data",
    "result_json",
    "step_data",
]
