"""Access control per API key: which servers, tools and models a key may use, and its own limits.

A key comes from `BRIDGE_API_KEYS` (full access) or from the keys file (`BRIDGE_KEYS_FILE`, YAML or
JSON, a top-level `keys` list). Keys are held as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.config_files import ConfigFileError, entry_label, read_yaml, validated
from services.errors import ForbiddenError
from services.key_limits import KeyLimits, LocalKeyLimits
from services.mcp.tools import SEPARATOR, qualified_name

log = logging.getLogger("lmstudio_bridge.access")

ANY = ("*",)
RELOAD_TIMEOUT_S = 5.0  # a keys file not read within this keeps the previous keys


@dataclass(frozen=True, slots=True)
class Access:
    """What one key may use. Globs (`*`, `?`, `[...]`); `tools` are globs over `<server>__<tool>`."""

    name: str
    servers: tuple[str, ...] = ANY
    tools: tuple[str, ...] = ANY
    models: tuple[str, ...] = ANY
    max_concurrent_runs: int | None = None
    requests_per_minute: int | None = None
    admin: bool = False  # sees every run, may load and unload models

    def server_allowed(self, server: str) -> bool:
        return any(fnmatchcase(server, p) for p in self.servers)

    def reaches(self, server: str) -> bool:
        """The key may use the server and some of its `tools` globs can name a tool of it (the glob's part
        before `__` matches the server): a key scoped by tools alone does not see or start other servers."""
        return self.server_allowed(server) and any(fnmatchcase(server, p.split(SEPARATOR, 1)[0]) for p in self.tools)

    def tool_allowed(self, server: str, tool: str) -> bool:
        name = qualified_name(server, tool)
        return self.server_allowed(server) and any(fnmatchcase(name, p) for p in self.tools)

    def model_allowed(self, model_id: str, aliases: Mapping[str, str] | None = None) -> bool:
        """By id or glob, or by an alias (BRIDGE_MODEL_ALIASES) that names the model."""
        names = [model_id, *(alias for alias, target in (aliases or {}).items() if target == model_id)]
        return any(fnmatchcase(name, p) for p in self.models for name in names)

    def check_servers(self, servers: Iterable[str]) -> None:
        refused = [s for s in servers if not self.server_allowed(s)]
        if refused:
            raise ForbiddenError(
                f"The API key {self.name!r} may not use the MCP server(s) {', '.join(refused)}; "
                f"it may use: {', '.join(self.servers)}",
                refused_servers=refused,
                allowed_servers=list(self.servers),
            )

    def check_tools(self, names: Iterable[tuple[str, str]]) -> None:
        refused = [qualified_name(server, tool) for server, tool in names if not self.tool_allowed(server, tool)]
        if refused:
            raise ForbiddenError(
                f"The API key {self.name!r} may not use the tool(s) {', '.join(refused)}; "
                f"it may use: {', '.join(self.tools)} on servers {', '.join(self.servers)}",
                refused_tools=refused,
                allowed_tools=list(self.tools),
            )

    def check_model(self, model_id: str, aliases: Mapping[str, str] | None = None) -> None:
        if not self.model_allowed(model_id, aliases):
            raise ForbiddenError(
                f"The API key {self.name!r} may not use the model {model_id!r}; it may use: {', '.join(self.models)}",
                refused_model=model_id,
                allowed_models=list(self.models),
            )

    def check_admin(self, what: str) -> None:
        if not self.admin:
            raise ForbiddenError(f"Only an admin key may {what}; the API key {self.name!r} is not one")


def full_access(name: str) -> Access:
    """A key of BRIDGE_API_KEYS: everything."""
    return Access(name=name, admin=True)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


# --- the keys file ---------------------------------------------------------------------------------------


class KeysFileError(ConfigFileError):
    """The keys file cannot be used; the message names the file, the entry and the field."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    key: str | None = Field(None, min_length=16)
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    servers: list[str] = Field(default_factory=lambda: ["*"])
    tools: list[str] = Field(default_factory=lambda: ["*"])
    models: list[str] = Field(default_factory=lambda: ["*"])
    max_concurrent_runs: int | None = Field(None, ge=1)
    requests_per_minute: int | None = Field(None, ge=1)
    admin: bool = False

    @model_validator(mode="after")
    def _one_key(self) -> _Entry:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of `key` and `key_sha256`")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    keys: list[Any]


def load_keys_file(path: Path) -> list[tuple[bytes, Access, str | None]]:
    """The keys of a YAML or JSON keys file (digest, access, the key when written in clear); anything
    wrong raises KeysFileError naming the entry and the field."""
    try:
        raw = read_yaml(path)
    except ConfigFileError as exc:
        raise KeysFileError(str(exc)) from None
    try:
        document = _File.model_validate(raw)
    except ValidationError:
        raise KeysFileError(f'{path}: expected an object with a "keys" list') from None
    keys: list[tuple[bytes, Access, str | None]] = []
    names: set[str] = set()
    secrets: set[bytes] = set()
    for index, item in enumerate(document.keys):
        if not isinstance(item, dict):
            raise KeysFileError(f"{path}: entry {index + 1}: must be an object with name, key or key_sha256, ...")
        label = entry_label(index, item)
        try:
            entry = validated(_Entry, item, f"{path}: {label}")
        except ConfigFileError as exc:
            raise KeysFileError(str(exc)) from None
        if entry.name in names:
            raise KeysFileError(f'{path}: {label}: field "name": {entry.name!r} is used by another entry')
        names.add(entry.name)
        secret = bytes.fromhex(entry.key_sha256) if entry.key_sha256 else digest(entry.key or "")
        if secret in secrets:
            raise KeysFileError(f'{path}: {label}: field "key": the same key as another entry')
        secrets.add(secret)
        keys.append(
            (
                secret,
                Access(
                    name=entry.name,
                    servers=tuple(entry.servers),
                    tools=tuple(entry.tools),
                    models=tuple(entry.models),
                    max_concurrent_runs=entry.max_concurrent_runs,
                    requests_per_minute=entry.requests_per_minute,
                    admin=entry.admin,
                ),
                entry.key,
            )
        )
    return keys


# --- the key ring ----------------------------------------------------------------------------------------


@dataclass
class KeyRing:
    """Every accepted key (as its digest) with its access; the file's keys can be swapped at run time."""

    env_keys: list[tuple[bytes, Access]] = field(default_factory=list)
    file_keys: list[tuple[bytes, Access]] = field(default_factory=list)
    # the file's keys written in clear, kept out of logs and the run store (their `Redactor`s read this list,
    # which only grows)
    clear_keys: list[str] = field(default_factory=list)
    path: Path | None = None
    _mtime: float | None = None
    _reading: asyncio.Future[Any] | None = None  # the reload whose file read (a worker thread's) is under way
    # what counts each key's requests and runs: this process (default), or the shared store (`app/gateway.py`)
    limits: KeyLimits = field(default_factory=LocalKeyLimits)

    @classmethod
    def build(cls, api_keys: Iterable[str], keys_file: str | None) -> KeyRing:
        """BRIDGE_API_KEYS (full access) and the keys file; a broken file raises KeysFileError."""
        env = [(digest(key), full_access(f"api-key-{digest(key).hex()[:8]}")) for key in api_keys]
        ring = cls(env_keys=env, path=Path(keys_file) if keys_file else None)
        if ring.path is not None:
            ring._mtime = _mtime(ring.path)
            ring._use(load_keys_file(ring.path))
        return ring

    def _use(self, loaded: list[tuple[bytes, Access, str | None]]) -> None:
        """Take the file's keys; a name that a BRIDGE_API_KEYS key has raises KeysFileError."""
        taken = {access.name for _, access in self.env_keys}
        clash = next((access.name for _, access, _ in loaded if access.name in taken), None)
        if clash is not None:
            raise KeysFileError(f'{self.path}: entry {clash!r}: field "name": the name of a BRIDGE_API_KEYS key')
        env = {secret for secret, _ in self.env_keys}  # one key, two scopes: refused rather than one silently lost
        same = next((access.name for secret, access, _ in loaded if secret in env), None)
        if same is not None:
            raise KeysFileError(
                f'{self.path}: entry {same!r}: field "key": the same key as one of BRIDGE_API_KEYS (which has full '
                "access); give the entry a key of its own, or take the key out of BRIDGE_API_KEYS"
            )
        self.file_keys = [(secret, access) for secret, access, _ in loaded]
        new = [clear for _, _, clear in loaded if clear and clear not in self.clear_keys]
        self.clear_keys += new

    def secrets(self) -> list[str]:
        """The keys written in clear so far (a reload adds to them): what a `Redactor` keeps out of its text."""
        return self.clear_keys

    @property
    def enabled(self) -> bool:
        return bool(self.env_keys or self.file_keys or self.path)

    def names(self) -> list[str]:
        return [access.name for _, access in self.env_keys + self.file_keys]

    def resolve(self, presented: str) -> Access | None:
        """The access of a presented key: its digest compared with every key's, without an early exit."""
        candidate = digest(presented)
        found: Access | None = None
        for secret, access in self.env_keys + self.file_keys:
            if hmac.compare_digest(candidate, secret):
                found = access
        return found

    def reload(self, *, force: bool = False) -> bool:
        """Read the keys file again when it changed (or when `force`); a broken file keeps the old keys."""
        return self._apply(self._read(force))

    async def reload_off_loop(self, *, force: bool = False, timeout_s: float = RELOAD_TIMEOUT_S) -> bool:
        """`reload` with the file read and parsed in a worker thread, so the event loop serves on meanwhile; a read
        that does not end within `timeout_s` (or is still running from before) keeps the old keys."""
        if self.path is None:
            return False
        if self._reading is not None and not self._reading.done():
            log.error("keys file not reloaded, the previous keys stay in force: an earlier read has not ended")
            return False
        self._reading = reading = asyncio.ensure_future(asyncio.to_thread(self._read, force))
        try:
            async with asyncio.timeout(timeout_s):
                outcome = await asyncio.shield(reading)
        except TimeoutError:
            log.error("keys file not reloaded, the previous keys stay in force: not read within %g s", timeout_s)
            return False
        return self._apply(outcome)

    def _read(self, force: bool) -> list[tuple[bytes, Access, str | None]] | KeysFileError | None:
        """The file's keys, the reason they cannot be used, or None when it has not changed (and not `force`)."""
        if self.path is None:
            return None
        mtime = _mtime(self.path)
        if not force and mtime == self._mtime:
            return None
        self._mtime = mtime
        try:
            return load_keys_file(self.path)
        except KeysFileError as exc:
            return exc

    def _apply(self, outcome: list[tuple[bytes, Access, str | None]] | KeysFileError | None) -> bool:
        if outcome is None:
            return False
        try:
            if isinstance(outcome, KeysFileError):
                raise outcome
            self._use(outcome)
        except KeysFileError as exc:
            log.error("keys file not reloaded, the previous keys stay in force: %s", exc)
            return False
        log.info("keys file reloaded: %d key(s)", len(outcome))
        return True


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
