"""The run store and the runs that outlive their request.

`RunStore` records every run (SQLite by default, PostgreSQL at scale) without holding the run up;
`RunService` starts background runs (`POST /v1/runs`, the MCP front door's `start_task`), queues,
cancels, approves and reads them back. Several gateway processes may share one store: each holds a lease
(`lease.py`), and a run executed by one is read, followed, cancelled and decided on through any other
(`relay.py`).
"""

from services.runs.engines import sqlite_path
from services.runs.instance import InstanceInUseError, hold_instance, instance_heartbeat_moves
from services.runs.records import RunPage, RunRecord, StoredEvent, page_json, record_json
from services.runs.service import RunService
from services.runs.store import RunFilter, RunStore

__all__ = [
    "InstanceInUseError",
    "RunFilter",
    "RunPage",
    "RunRecord",
    "RunService",
    "RunStore",
    "StoredEvent",
    "hold_instance",
    "instance_heartbeat_moves",
    "page_json",
    "record_json",
    "sqlite_path",
]
