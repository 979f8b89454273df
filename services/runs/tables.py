"""The run store's tables (SQLAlchemy Core), and a query over them. Changes of the tables go through a new
Alembic migration in `migrations/`."""

from __future__ import annotations

import json

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    or_,
)

metadata = MetaData()

# a row number that orders runs newest first and serves as the paging cursor
_ROW_NUMBER = BigInteger().with_variant(Integer(), "sqlite")

runs = Table(
    "runs",
    metadata,
    Column("num", _ROW_NUMBER, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, unique=True),
    Column("status", String(32), nullable=False),
    Column("model_requested", String(512)),
    Column("model", String(512), nullable=False),
    Column("mcp_servers", Text, nullable=False),  # JSON list
    Column("task", Text, nullable=False),
    Column("options", Text, nullable=False),  # JSON: the request's options (never a key)
    Column("output", Text, nullable=False),
    Column("rounds", Integer, nullable=False),
    Column("usage", Text),  # JSON
    Column("warnings", Text),  # JSON list
    Column("tool_calls", Text),  # JSON list
    Column("error", Text),  # JSON problem document of a run that failed or was interrupted
    Column("duration_ms", Float),
    Column("trace_id", String(64)),
    Column("key_name", String(256)),
    Column("instance", String(256), nullable=False),  # the gateway process that ran it
    Column("incomplete", Boolean, nullable=False),  # some of its writes were lost
    Column("created_at", Float, nullable=False),  # seconds since the epoch, UTC
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("cancel_requested_at", Float),  # another gateway process asked its owner to cancel it
)
Index("ix_runs_status_num", runs.c.status, runs.c.num)
Index("ix_runs_model_num", runs.c.model, runs.c.num)
Index("ix_runs_finished_at", runs.c.finished_at)

run_events = Table(
    "run_events",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("event", String(64), nullable=False),
    Column("data", Text, nullable=False),  # JSON
    Column("at", Float, nullable=False),
)

# the gateway processes sharing the store, each with its lease (`lease.py`): a row whose heartbeat is older
# than the lease belongs to a process that stopped answering, and another one marks its runs `interrupted`
instances = Table(
    "instances",
    metadata,
    Column("id", String(256), primary_key=True),  # BRIDGE_INSTANCE_ID
    Column("started_at", Float, nullable=False),  # seconds since the epoch, the database's clock
    Column("heartbeat_at", Float, nullable=False),
)

# decisions on tool calls awaiting approval, sent to a gateway process that does not execute the run; the one
# that does takes each (`relay.py`). One row per call: the first decision wins; the rows go with their run.
approvals = Table(
    "approvals",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("tool_call_id", String(256), primary_key=True),
    Column("verdict", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", Float, nullable=False),
)

# per-key limits counted across gateway processes (PostgreSQL only, `key_limits.py`): each process's runs in
# flight per key, and each key's token bucket of requests per minute
key_runs = Table(
    "key_runs",
    metadata,
    Column("key_name", String(256), primary_key=True),
    Column("instance", String(256), primary_key=True),
    Column("running", Integer, nullable=False),
)
key_buckets = Table(
    "key_buckets",
    metadata,
    Column("key_name", String(256), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("at", Float, nullable=False),  # seconds since the epoch, the database's clock
)

# evals (`services/evals/`): one row per eval of one model with one set of aids; its tasks' runs are in `runs`
evals = Table(
    "evals",
    metadata,
    Column("num", _ROW_NUMBER, primary_key=True, autoincrement=True),
    Column("eval_id", String(64), nullable=False, unique=True),
    Column("status", String(32), nullable=False),  # running, completed, failed, interrupted
    Column("model", String(512), nullable=False),  # the resolved model id
    Column("aids", Text, nullable=False),  # JSON list of aid names
    Column("seed", Integer, nullable=False),
    Column("temperature", Float, nullable=False),
    Column("tasks", Text, nullable=False),  # JSON: each task's outcome so far
    Column("summary", Text),  # JSON scorecard
    Column("error", Text),
    Column("key_name", String(256)),
    Column("instance", String(256), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
)
Index("ix_evals_model_num", evals.c.model, evals.c.num)

# OAuth tokens of remote MCP servers (`services/runs/oauth_tokens.py`): one row per server, its tokens and
# client registration encrypted (BRIDGE_TOKEN_KEY); nothing readable but the server's name and URL
oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    Column("server", String(256), primary_key=True),
    Column("url", Text, nullable=False),  # the server's URL without credentials or query: tokens are bound to it
    Column("sealed", Text, nullable=False),  # Fernet token of the JSON record
    Column("updated_at", Float, nullable=False),
)


def has_server(name: str) -> ColumnElement[bool]:
    """Whether the JSON list `["a", "b"]` in `mcp_servers` holds `name` as a whole element: the element's JSON
    string is preceded by `[` or `, ` and followed by `]` or `,` (inside a JSON string a quote is escaped)."""
    item, column = json.dumps(name), runs.c.mcp_servers
    return or_(
        column == f"[{item}]",
        column.startswith(f"[{item},", autoescape=True),
        column.endswith(f", {item}]", autoescape=True),
        column.contains(f", {item},", autoescape=True),
    )
