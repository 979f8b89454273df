"""Where the run store goes, checked before anything starts: the stdio mode's default location, a SQLite
folder that cannot be made (a clear line naming BRIDGE_DATABASE_URL, exit 2, no traceback), and this
process's claim on its instance id (a second `serve` with the same id refuses to start)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from app.settings import Settings
from services.runs import InstanceInUseError, hold_instance, instance_heartbeat_moves, sqlite_path

STDIO_STORE = "lmstudio-bridge/runs.db"  # under the user's data directory


def user_data_dir() -> Path:
    """The user's data directory: %LOCALAPPDATA% on Windows, else $XDG_DATA_HOME or ~/.local/share."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"])
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"


def stdio_store(settings: Settings) -> Settings:
    """The stdio mode's settings: without BRIDGE_DATABASE_URL its store is in the user's data directory, not in
    the working directory its MCP client happens to start it in (often `/`, or the user's project)."""
    if "database_url" in settings.model_fields_set:
        return settings
    path = (user_data_dir() / STDIO_STORE).absolute()
    return settings.model_copy(update={"database_url": f"sqlite+aiosqlite:///{path}"})


def check_store_location(settings: Settings) -> None:
    """A SQLite store's folder exists (made when missing) and its file can be opened for writing; otherwise a
    one-line message naming BRIDGE_DATABASE_URL on stderr and exit 2."""
    path = sqlite_path(settings.database_url)
    if path is None:
        return
    file = Path(path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with file.open("ab"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        example = (user_data_dir() / STDIO_STORE).absolute()
        where = "/<a writable folder>/runs.db" if example == file.absolute() else str(example)
        print(
            f"Cannot create the run store at {file.absolute()} ({reason}): set BRIDGE_DATABASE_URL to a writable "
            f"place, e.g. BRIDGE_DATABASE_URL=sqlite+aiosqlite:///{where}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def claim_instance(settings: Settings) -> None:
    """Take this process's instance id before anything touches the store's runs; another live process with
    the same id: a one-line message on stderr and exit 2. SQLite: a lock held until the process exits (exact).
    PostgreSQL: the id's heartbeat is watched for one heartbeat period; a heartbeat that moves is another
    live process."""
    try:
        if sqlite_path(settings.database_url) is not None:
            hold_instance(settings.database_url, settings.instance_id)
        elif asyncio.run(instance_heartbeat_moves(settings.database_url, settings.instance_id, settings.lease_s)):
            raise InstanceInUseError(settings.instance_id)
    except InstanceInUseError as exc:
        print(f"lmstudio-bridge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
