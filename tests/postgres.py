"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, a server on 127.0.0.1 only, removed on stop.

    with PostgresCluster() as pg:
        url = pg.new_database("t1")  # postgresql+asyncpg://bridge@127.0.0.1:<port>/t1, empty

The binaries come from PATH or Debian's /usr/lib/postgresql/<version>/bin (the `postgresql` package).
initdb and postgres refuse to run as root: as root the cluster runs as the `postgres` system user (or
`nobody`), through `runuser`, and its temp dir is chowned to that user.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType

import asyncpg
import psutil

from tests.processes import free_port

USER = "bridge"
DATABASE = "bridge"
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
START_ATTEMPTS = 3  # a new free port each time: another process may take the port between pick and bind
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresNotFound(RuntimeError):
    """initdb, pg_ctl or postgres is not installed."""


def find_pg_bin(name: str) -> str | None:
    """The path of PostgreSQL binary `name` (initdb, pg_ctl, postgres...): PATH first, then Debian's
    /usr/lib/postgresql/<version>/bin, newest version first; None when absent."""
    found = shutil.which(name)
    if found:
        return found

    def version(bin_dir: str) -> tuple[int, ...]:
        parts = Path(bin_dir).parent.name.split(".")
        return tuple(int(p) for p in parts if p.isdigit())

    for bin_dir in sorted(glob.glob(DEBIAN_BIN_GLOB), key=version, reverse=True):
        candidate = Path(bin_dir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _unprivileged_user() -> str | None:
    """The user to run the server as: None when not root, else `postgres` if it exists, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as")


class PostgresCluster:
    """A PostgreSQL cluster in a temp dir, listening on 127.0.0.1:<free port> only, owner `bridge` (trust
    auth), with an empty database `bridge`. A context manager, or call start() and stop() (stop is safe to
    call more than once, and always leaves no server process and no temp dir behind)."""

    def __init__(self) -> None:
        self.port: int = 0
        self.pid: int | None = None  # the postmaster's, while it runs
        self.tmp_dir: Path | None = None
        self.os_user: str | None = _unprivileged_user()
        self._lock = threading.Lock()

    # --- public -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the `bridge` database: postgresql+asyncpg://bridge@127.0.0.1:<port>/bridge."""
        return self.url_for(DATABASE)

    @property
    def data_dir(self) -> Path:
        assert self.tmp_dir is not None, "the cluster is not started"
        return self.tmp_dir / "data"

    def url_for(self, database: str) -> str:
        """SQLAlchemy (asyncpg driver) URL of `database` on this cluster."""
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{database}"

    def dsn_for(self, database: str) -> str:
        """Plain libpq/asyncpg DSN of `database` on this cluster."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresCluster:
        """initdb, start the server, create the `bridge` database; on any failure, clean up and raise."""
        if self.pid is not None:
            raise RuntimeError("the cluster is already started")
        bins = {name: find_pg_bin(name) for name in ("initdb", "pg_ctl", "postgres")}
        missing = [name for name, path in bins.items() if path is None]
        if missing:
            raise PostgresNotFound(
                f"PostgreSQL binaries not found ({', '.join(missing)}) on PATH or in {DEBIAN_BIN_GLOB}: "
                "install Debian's `postgresql` package (apt-get install -y --no-install-recommends postgresql)"
            )
        self._initdb, self._pg_ctl = str(bins["initdb"]), str(bins["pg_ctl"])
        atexit.register(self.stop)
        try:
            self._create_tmp_dir()
            options = ["-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
            self._run([self._initdb, "-D", str(self.data_dir), *options], "initdb")
            self._start_server()
            self._sql("postgres", f'CREATE DATABASE "{DATABASE}"')
        except BaseException:
            self.stop()
            raise
        return self

    def new_database(self, name: str) -> str:
        """Create an empty database `name` (lowercase letters, digits, _) and return its SQLAlchemy URL."""
        if not _NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        self._sql("postgres", f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def stop(self) -> None:
        """Stop the server (immediate mode; SIGKILL if it will not go) and remove the temp dir."""
        with self._lock:
            if self.pid is not None:
                self._stop_server()
            if self.tmp_dir is not None:
                shutil.rmtree(self.tmp_dir, ignore_errors=True)
                self.tmp_dir = None
            atexit.unregister(self.stop)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- internals ----------------------------------------------------------------------------------

    def _create_tmp_dir(self) -> None:
        # as root, the parent must be traversable by the unprivileged user: /tmp is, a private TMPDIR may not be
        parent = "/tmp" if self.os_user is not None and os.path.isdir("/tmp") else None
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="bridge-pg-", dir=parent))
        (self.tmp_dir / "socket").mkdir()
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            for path in (self.tmp_dir, self.tmp_dir / "socket"):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def _command(self, argv: list[str]) -> list[str]:
        return argv if self.os_user is None else ["runuser", "-u", self.os_user, "--", *argv]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self.os_user is not None:
            env["HOME"] = str(self.tmp_dir)
        return env

    def _run(self, argv: list[str], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Run a PostgreSQL tool (as the unprivileged user when root); RuntimeError with its output on failure.
        Output goes to a file, not a pipe: a server started by pg_ctl must not hold our pipe open."""
        assert self.tmp_dir is not None
        with tempfile.TemporaryFile() as out:
            result = subprocess.run(
                self._command(argv),
                cwd=self.tmp_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
            if result.returncode != 0:
                out.seek(0)
                text = out.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"{what} failed with exit code {result.returncode}:\n{text}")

    def _start_server(self) -> None:
        assert self.tmp_dir is not None
        conf = self.data_dir / "postgresql.conf"
        base_conf = conf.read_text()
        log = self.tmp_dir / "server.log"
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            conf.write_text(
                base_conf
                + "\n# tests/postgres.py\n"
                + "listen_addresses = '127.0.0.1'\n"
                + f"port = {self.port}\n"
                + f"unix_socket_directories = '{self.tmp_dir / 'socket'}'\n"
                + "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                + "max_connections = 200\nshared_buffers = 32MB\n"
            )
            try:
                self._run(
                    [self._pg_ctl, "-D", str(self.data_dir), "-l", str(log), "-w", "-t", str(START_TIMEOUT_S), "start"],
                    "pg_ctl start",
                )
            except RuntimeError as error:
                self._read_pid()  # pg_ctl may have timed out with the server half up: stop() must find it
                if self.pid is not None:
                    self._stop_server()
                if attempt == START_ATTEMPTS:
                    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                    raise RuntimeError(f"{error}\nserver log:\n{tail}") from None
                continue
            self._read_pid()
            if self.pid is None:
                raise RuntimeError("pg_ctl started the server but left no postmaster.pid")
            return

    def _read_pid(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])

    def _stop_server(self) -> None:
        pid, self.pid = self.pid, None
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(
                [self._pg_ctl, "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", str(STOP_TIMEOUT_S), "stop"],
                "pg_ctl stop",
                timeout_s=STOP_TIMEOUT_S + 5,
            )
        if pid is not None and _alive(pid):
            _kill_tree(pid)  # pg_ctl could not stop it: SIGKILL the postmaster and its backends

    def _sql(self, database: str, statement: str) -> None:
        """Run one statement over asyncpg, in a thread of its own (safe whether or not a loop is running)."""
        errors: list[BaseException] = []

        async def run() -> None:
            connection = await asyncpg.connect(self.dsn_for(database), timeout=START_TIMEOUT_S)
            try:
                await connection.execute(statement)
            finally:
                await connection.close()

        def target() -> None:
            try:
                asyncio.run(run())
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=target, name="postgres-sql", daemon=True)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _kill_tree(pid: int) -> None:
    """SIGKILL `pid` and its descendants; wait until they are gone."""
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=STOP_TIMEOUT_S)
