"""Evals: which models can do the work. A suite of tool-use tasks checked by programs (`suite.py`), run on a model
through the agent loop of `/v1/autonomous` (`runner.py`), scored (`scorecard.py`), stored (`store.py`) and served
(`service.py`: `POST /v1/evals`, `GET /v1/evals`, `lmstudio-bridge eval`, `tool_score` in `/v1/models`)."""

from services.evals.records import EvalList, EvalRecord
from services.evals.runner import EvalPlan, EvalRunner
from services.evals.scorecard import Summary, TaskOutcome, summarise, table
from services.evals.service import EvalService
from services.evals.store import EvalStore
from services.evals.suite import SUITE, select

__all__ = [
    "SUITE",
    "EvalList",
    "EvalPlan",
    "EvalRecord",
    "EvalRunner",
    "EvalService",
    "EvalStore",
    "Summary",
    "TaskOutcome",
    "select",
    "summarise",
    "table",
]
