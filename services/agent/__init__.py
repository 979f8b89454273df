"""The agent: a model in LM Studio carries out a task by calling MCP tools.

`AgentService.open(spec)` checks everything that can fail before a run starts (model, servers,
tools, a free run slot) and returns a `Run`; `Run.execute(emit)` carries it out. The split lets
the HTTP layer answer early failures with a problem document and stream everything after.
"""

from services.agent.approvals import ApprovalPolicy, Decision
from services.agent.context import RunContext
from services.agent.defaults import RunDefaults
from services.agent.options import MAX_ROUNDS_CAP, RUN_OPTION_NAMES, RunOptions, run_spec
from services.agent.pipeline import STEP_OPTIONS, Pipeline, StageSpec
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
from services.agent.run import Run
from services.agent.scope import resolve_model, scoped_tools
from services.agent.service import AgentService
from services.agent.state import RunState

__all__ = [
    "FINISHED_STATUSES",
    "MAX_ROUNDS_CAP",
    "PROGRESS_EVENTS",
    "RUN_OPTION_NAMES",
    "RUN_STATUSES",
    "STEP_OPTIONS",
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
    "RunContext",
    "RunDefaults",
    "RunEvent",
    "RunOptions",
    "RunResult",
    "RunSpec",
    "RunState",
    "RunStatus",
    "StageRecord",
    "StageSpec",
    "Step",
    "ToolChoice",
    "resolve_model",
    "result_data",
    "result_json",
    "run_spec",
    "scoped_tools",
    "step_data",
]
