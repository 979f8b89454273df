"""services/access.py: scopes (globs, aliases), the keys file and its errors, key resolution (constant
time), reloading, and the per-key rate and concurrency limits."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.gateway import load_keys
from services.access import Access, KeyRing, KeysFileError, digest, full_access, load_keys_file
from services.config_files import MAX_FILE_BYTES
from services.errors import ForbiddenError, KeyRateLimitedError
from services.key_limits import LocalKeyLimits
from services.lmstudio.hosts import HostsFileError, load_hosts_file
from services.text import Redactor
from tests.conftest import make_settings
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(120)

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
KEY_C = "key-c-0123456789abcdef"
ALIASES = {"quick": "qwen/qwen3-4b", "coder": "qwen/qwen3-coder-30b"}


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write(path: Path, document: Any, *, as_json: bool = False, mtime: float | None = None) -> Path:
    path.write_text(json.dumps(document) if as_json else yaml.safe_dump(document, sort_keys=False))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def entry(name: str, key: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"name": name, **({"key": key} if key is not None else {}), **fields}


def error_of(path: Path, document: Any) -> str:
    if isinstance(document, str):
        path.write_text(document)
    else:
        write(path, document)
    with pytest.raises(KeysFileError) as caught:
        load_keys_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    return message


# --- scopes -------------------------------------------------------------------------------------------


def test_an_access_without_scopes_allows_everything_but_is_no_admin() -> None:
    access = Access(name="plain")
    assert access.server_allowed("anything") and access.tool_allowed("a", "b") and access.model_allowed("m")
    assert not access.admin and access.max_concurrent_runs is None and access.requests_per_minute is None
    with pytest.raises(ForbiddenError, match="Only an admin key may load models"):
        access.check_admin("load models")
    full = full_access("env")
    assert full.admin and full.server_allowed("x") and full.tool_allowed("x", "y") and full.model_allowed("z")
    full.check_admin("load models")


def test_server_globs() -> None:
    access = Access(name="k", servers=("time", "file*", "mem?ry", "[xy]-server"))
    for name in ("time", "filesystem", "files", "memory", "memary", "x-server", "y-server"):
        assert access.server_allowed(name), name
    for name in ("Time", "times", "atime", "memoory", "z-server", "everything", ""):
        assert not access.server_allowed(name), name


def test_tool_globs_are_over_server__tool_and_need_the_server() -> None:
    access = Access(
        name="k", servers=("filesystem", "time"), tools=("filesystem__read_*", "filesystem__list_*", "time__*")
    )
    assert access.tool_allowed("filesystem", "read_text_file")
    assert access.tool_allowed("filesystem", "list_directory")
    assert access.tool_allowed("time", "convert_time")
    assert not access.tool_allowed("filesystem", "write_file")
    assert not access.tool_allowed("filesystem", "xread_file")
    only_tools = Access(name="k", servers=("time",), tools=("*",))
    assert not only_tools.tool_allowed("memory", "read_graph")  # a tool glob never opens another server
    assert not Access(name="k", servers=("time",), tools=("memory__*",)).tool_allowed("memory", "read_graph")


def test_model_globs_ids_and_aliases() -> None:
    by_glob = Access(name="k", models=("qwen/*",))
    assert by_glob.model_allowed("qwen/qwen3-4b") and by_glob.model_allowed("qwen/qwen3-coder-30b")
    assert not by_glob.model_allowed("mistralai/magistral-small-2509")
    by_id = Access(name="k", models=("qwen/qwen3-4b",))
    assert by_id.model_allowed("qwen/qwen3-4b") and not by_id.model_allowed("qwen/qwen3-4b-2")
    by_alias = Access(name="k", models=("quick",))
    assert by_alias.model_allowed("qwen/qwen3-4b", ALIASES)  # the alias names the model
    assert not by_alias.model_allowed("qwen/qwen3-4b")  # without the aliases it is just another name
    assert not by_alias.model_allowed("qwen/qwen3-coder-30b", ALIASES)
    assert Access(name="k", models=("cod*",)).model_allowed("qwen/qwen3-coder-30b", ALIASES)


def test_checks_raise_forbidden_naming_what_is_allowed() -> None:
    access = Access(name="clock", servers=("time",), tools=("time__get_*",), models=("qwen/*",))
    access.check_servers(["time"])
    access.check_tools([("time", "get_current_time")])
    access.check_model("qwen/qwen3-4b")

    with pytest.raises(ForbiddenError) as caught:
        access.check_servers(["time", "filesystem", "memory"])
    problem = caught.value.problem()
    assert problem["status"] == 403 and problem["code"] == "forbidden"
    assert problem["refused_servers"] == ["filesystem", "memory"] and problem["allowed_servers"] == ["time"]
    assert "'clock'" in problem["detail"] and "filesystem, memory" in problem["detail"] and "time" in problem["detail"]

    with pytest.raises(ForbiddenError) as caught:
        access.check_tools([("time", "get_current_time"), ("time", "convert_time"), ("memory", "read_graph")])
    problem = caught.value.problem()
    assert problem["refused_tools"] == ["time__convert_time", "memory__read_graph"]
    assert problem["allowed_tools"] == ["time__get_*"] and "time__get_*" in problem["detail"]

    with pytest.raises(ForbiddenError) as caught:
        access.check_model("mistralai/magistral-small-2509", ALIASES)
    problem = caught.value.problem()
    assert problem["refused_model"] == "mistralai/magistral-small-2509" and problem["allowed_models"] == ["qwen/*"]


# --- the keys file ------------------------------------------------------------------------------------


def test_a_full_keys_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "keys.yaml",
        {
            "keys": [
                entry("clock", KEY_A, servers=["time"], models=["qwen/*"], max_concurrent_runs=1),
                {
                    "name": "files-ro",
                    "key_sha256": sha(KEY_B),
                    "servers": ["filesystem"],
                    "tools": ["filesystem__read_*"],
                },
                entry("boss", KEY_C, admin=True, requests_per_minute=60),
            ]
        },
    )
    keys = load_keys_file(path)
    assert [item[0] for item in keys] == [digest(KEY_A), digest(KEY_B), digest(KEY_C)]
    clock, files, boss = (item[1] for item in keys)
    assert clock == Access("clock", servers=("time",), models=("qwen/*",), max_concurrent_runs=1)
    assert files == Access("files-ro", servers=("filesystem",), tools=("filesystem__read_*",))
    assert boss == Access("boss", admin=True, requests_per_minute=60)


def test_json_is_accepted_too(tmp_path: Path) -> None:
    path = write(tmp_path / "keys.json", {"keys": [entry("a", KEY_A, servers=["time"])]}, as_json=True)
    [item] = load_keys_file(path)
    assert item[0] == digest(KEY_A) and item[1].servers == ("time",)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"keys": [entry("a", servers=["time"])]}, ["entry 1 ('a')", "`key` and `key_sha256`"]),
        (
            {"keys": [entry("ok", KEY_B), {**entry("a", KEY_A), "key_sha256": sha(KEY_A)}]},
            ["entry 2 ('a')", "`key` and `key_sha256`"],
        ),
        ({"keys": [{"name": "a", "key_sha256": "not-hex"}]}, ["entry 1 ('a')", 'field "key_sha256"']),
        ({"keys": [{"name": "a", "key_sha256": sha(KEY_A)[:-1]}]}, ["entry 1 ('a')", 'field "key_sha256"']),
        ({"keys": [{**entry("a", KEY_A), "sever": ["time"]}]}, ["entry 1 ('a')", 'field "sever"', "Extra inputs"]),
        ({"keys": [entry("a", KEY_A), entry("a", KEY_B)]}, ["entry 2 ('a')", 'field "name"', "another entry"]),
        ({"keys": [entry("a", "short")]}, ["entry 1 ('a')", 'field "key"', "16 characters"]),
        ({"keys": [entry("a", KEY_A, servers="time")]}, ["entry 1 ('a')", 'field "servers"', "list"]),
        ({"keys": [entry("a", KEY_A, max_concurrent_runs=0)]}, ["entry 1 ('a')", 'field "max_concurrent_runs"']),
        ({"keys": [entry("a", KEY_A, requests_per_minute="5")]}, ["entry 1 ('a')", 'field "requests_per_minute"']),
        ({"keys": [entry("a", KEY_A, admin="yes please")]}, ["entry 1 ('a')", 'field "admin"']),
        ({"keys": [{"key": KEY_A}]}, ["entry 1", 'field "name"', "required"]),
        ({"keys": [entry("bad name!", KEY_A)]}, ["entry 1 ('bad name!')", 'field "name"']),
    ],
    ids=[
        "missing-key",
        "both-key-and-sha",
        "bad-sha256",
        "short-sha256",
        "unknown-field",
        "duplicate-name",
        "short-key",
        "servers-not-a-list",
        "zero-concurrency",
        "rpm-not-an-integer",
        "admin-not-a-bool",
        "no-name",
        "bad-name",
    ],
)
def test_errors_name_the_entry_and_the_field(tmp_path: Path, document: Any, expected: list[str]) -> None:
    message = error_of(tmp_path / "keys.yaml", document)
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize(
    "document",
    [{"keys": {"name": "a", "key": KEY_A}}, {"keys": "a"}, {"key": []}, [entry("a", KEY_A)], "", "just text\n"],
    ids=["keys-a-mapping", "keys-a-string", "no-keys", "top-level-list", "empty", "scalar"],
)
def test_a_file_without_a_keys_list(tmp_path: Path, document: Any) -> None:
    assert 'expected an object with a "keys" list' in error_of(tmp_path / "keys.yaml", document)


def test_an_entry_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    message = error_of(tmp_path / "keys.yaml", {"keys": [entry("a", KEY_A), "b-key-0123456789abcdef"]})
    assert "entry 2" in message and "must be an object" in message, message
    assert "b-key-0123456789abcdef" not in message  # a key written by mistake as the entry is not echoed


def test_the_same_key_twice_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path / "keys.yaml", {"keys": [entry("a", KEY_A), entry("b", KEY_A)]})
    assert "entry 2 ('b')" in message and 'field "key"' in message, message
    message = error_of(tmp_path / "keys.yaml", {"keys": [entry("a", KEY_A), {"name": "b", "key_sha256": sha(KEY_A)}]})
    assert "entry 2 ('b')" in message, message  # the same key in clear and as its hash


def test_yaml_syntax_errors_and_unreadable_files(tmp_path: Path) -> None:
    message = error_of(tmp_path / "keys.yaml", f"keys:\n  - name: a\n   key: [{KEY_A}\n")
    assert "not valid YAML or JSON" in message and "line 3" in message, message
    assert KEY_A not in message  # the offending line may hold a key: not quoted
    message = error_of(tmp_path / "keys.json", '{"keys": [{"name": "a",}')
    assert "not valid YAML or JSON" in message, message
    with pytest.raises(KeysFileError, match="cannot be read"):
        load_keys_file(tmp_path / "missing.yaml")


def test_load_keys_stops_start_up_naming_entry_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "keys.yaml", {"keys": [entry("ok", KEY_A), {**entry("broken", KEY_B), "tols": []}]})
    settings = make_settings(keys_file=str(path))
    with pytest.raises(SystemExit) as caught:
        load_keys(settings)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "Invalid keys file (BRIDGE_KEYS_FILE)" in err and "entry 2 ('broken')" in err and 'field "tols"' in err
    with pytest.raises(KeysFileError):
        load_keys(settings, exit_on_error=False)


# --- resolving keys -----------------------------------------------------------------------------------


def test_keys_resolve_to_their_access(tmp_path: Path) -> None:
    path = write(
        tmp_path / "keys.yaml",
        {
            "keys": [
                entry("plain", KEY_A, servers=["time"]),
                {"name": "hashed", "key_sha256": sha(KEY_B)},
                {"name": "upper", "key_sha256": sha(KEY_C).upper()},
            ]
        },
    )
    ring = KeyRing.build(["env-key-0123456789"], str(path))
    assert ring.enabled and ring.names() == [f"api-key-{sha('env-key-0123456789')[:8]}", "plain", "hashed", "upper"]
    assert getattr(ring.resolve(KEY_A), "name", None) == "plain"
    assert getattr(ring.resolve(KEY_B), "name", None) == "hashed"
    assert getattr(ring.resolve(KEY_C), "name", None) == "upper"
    env = ring.resolve("env-key-0123456789")
    assert env is not None and env.admin and env.name.startswith("api-key-")
    assert ring.resolve(sha(KEY_B)) is None  # the digest in the file is not itself a key
    assert ring.resolve(KEY_A + " ") is None and ring.resolve("") is None
    assert ring.clear_keys == [KEY_A]  # kept out of logs and records; the hashed ones are not known
    assert not KeyRing.build([], None).enabled and KeyRing.build([], None).resolve(KEY_A) is None


def test_resolve_compares_against_every_key_in_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path / "keys.yaml",
        {"keys": [entry("a", KEY_A), {"name": "b", "key_sha256": sha(KEY_B)}, entry("c", KEY_C)]},
    )
    ring = KeyRing.build(["env-one-0123456789", "env-two-0123456789"], str(path))
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # services.access calls hmac.compare_digest
    for presented, name in (("env-one-0123456789", None), (KEY_A, "a"), (KEY_B, "b"), (KEY_C, "c"), ("nope", None)):
        calls.clear()
        found = ring.resolve(presented)
        assert len(calls) == 5, presented  # every key, whichever matched (no early exit)
        assert all(len(a) == len(b) == 32 for a, b in calls)  # digests: the time does not depend on lengths
        assert all(a == digest(presented) for a, _ in calls)
        if name is not None:
            assert found is not None and found.name == name


# --- reloading ----------------------------------------------------------------------------------------


def test_a_changed_file_takes_effect(tmp_path: Path) -> None:
    path = write(tmp_path / "keys.yaml", {"keys": [entry("a", KEY_A)]}, mtime=1_000_000)
    ring = KeyRing.build([], str(path))
    assert ring.resolve(KEY_A) is not None and ring.resolve(KEY_B) is None
    write(path, {"keys": [entry("b", KEY_B, servers=["time"])]}, mtime=1_000_010)
    assert ring.reload() is True
    assert ring.resolve(KEY_A) is None
    b = ring.resolve(KEY_B)
    assert b is not None and b.servers == ("time",)
    assert ring.reload() is False  # nothing changed since


def test_a_redactor_over_the_ring_hides_the_keys_a_reload_brings(tmp_path: Path) -> None:
    path = write(tmp_path / "keys.yaml", {"keys": [entry("a", KEY_A)]}, mtime=1_000_000)
    ring = KeyRing.build([], str(path))
    redact = Redactor(["other-secret"], more=ring.secrets)  # built after the ring; the ring tells it nothing
    assert redact(f"{KEY_A} {KEY_B} other-secret") == f"[REDACTED] {KEY_B} [REDACTED]"
    write(path, {"keys": [entry("b", KEY_B)]}, mtime=1_000_010)
    assert ring.reload() is True
    assert redact(f"{KEY_A} {KEY_B}") == "[REDACTED] [REDACTED]"  # a key it no longer accepts stays hidden


def test_an_unchanged_mtime_does_nothing_unless_forced(tmp_path: Path) -> None:
    path = write(tmp_path / "keys.yaml", {"keys": [entry("a", KEY_A)]}, mtime=1_000_000)
    ring = KeyRing.build([], str(path))
    write(path, {"keys": [entry("b", KEY_B)]}, mtime=1_000_000)
    assert ring.reload() is False
    assert ring.resolve(KEY_A) is not None and ring.resolve(KEY_B) is None
    assert ring.reload(force=True) is True  # SIGHUP
    assert ring.resolve(KEY_A) is None and ring.resolve(KEY_B) is not None


def test_a_broken_file_keeps_the_previous_keys_and_logs_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lmstudio_bridge.access")
    path = write(tmp_path / "keys.yaml", {"keys": [entry("a", KEY_A)]}, mtime=1_000_000)
    ring = KeyRing.build(["env-key-0123456789"], str(path))
    write(path, {"keys": [entry("a", KEY_A), {**entry("b", KEY_B), "admn": True}]}, mtime=1_000_010)
    assert ring.reload() is False
    assert ring.resolve(KEY_A) is not None and ring.resolve(KEY_B) is None
    assert ring.resolve("env-key-0123456789") is not None
    [record] = [r for r in caplog.records if r.name == "lmstudio_bridge.access"]
    assert record.levelno == logging.ERROR
    assert "previous keys stay in force" in record.message
    assert "entry 2 ('b')" in record.message and 'field "admn"' in record.message
    assert KEY_B not in caplog.text  # the key itself is never logged

    caplog.clear()  # a forced reload of the broken file: the same
    assert ring.reload(force=True) is False
    assert ring.resolve(KEY_A) is not None
    assert [r.levelno for r in caplog.records] == [logging.ERROR]

    caplog.clear()  # the file deleted: the same
    path.unlink()
    assert ring.reload() is False
    assert ring.resolve(KEY_A) is not None and "cannot be read" in caplog.text

    caplog.clear()  # mended: takes effect, logged
    write(path, {"keys": [entry("b", KEY_B)]}, mtime=1_000_020)
    assert ring.reload() is True
    assert ring.resolve(KEY_B) is not None and ring.resolve(KEY_A) is None
    assert "keys file reloaded: 1 key(s)" in caplog.text


def test_a_broken_file_at_build_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "keys.yaml", {"keys": [entry("a")]})
    with pytest.raises(KeysFileError, match=r"entry 1 \('a'\)"):
        KeyRing.build(["env-key-0123456789"], str(path))


def test_no_file_no_reload() -> None:
    ring = KeyRing.build(["env-key-0123456789"], None)
    assert ring.reload() is False and ring.reload(force=True) is False
    assert ring.resolve("env-key-0123456789") is not None


# --- what is read: a regular file of bounded size, off the event loop (issue 29, item 5) ----------------


def unreadable(path: Path, kind: str) -> Path:
    """What is at `path` instead of a keys or hosts file: a FIFO, a device, a directory, or a file over the limit."""
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes to it: opening it for reading used to wait for a writer
    elif kind == "device":
        return Path("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_text(json.dumps({"keys": [entry("a", KEY_A)]}) + "\n#" + "x" * MAX_FILE_BYTES)
    return path


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("fifo", "is a FIFO, not a regular file: refused"),
        ("device", "is a character device, not a regular file: refused"),
        ("directory", "is a directory, not a regular file: refused"),
        ("too-big", f"over the limit of {MAX_FILE_BYTES} bytes: refused"),
    ],
)
def test_only_a_regular_file_within_the_limit_is_read(tmp_path: Path, kind: str, said: str) -> None:
    with pytest.raises(KeysFileError, match=said):
        KeyRing.build([], str(unreadable(tmp_path / "keys.yaml", kind)))
    with pytest.raises(HostsFileError, match=said):  # the hosts file is read the same way
        load_hosts_file(unreadable(tmp_path / "hosts.yaml", kind))


async def test_a_reload_that_does_not_end_in_time_keeps_the_old_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="lmstudio_bridge.access")
    path = write(tmp_path / "keys.yaml", {"keys": [entry("a", KEY_A)]}, mtime=1_000_000)
    ring = KeyRing.build([], str(path))
    write(path, {"keys": [entry("b", KEY_B)]}, mtime=1_000_010)
    stuck = threading.Event()  # a file system that does not answer: the worker thread waits here
    read = ring._read

    def slow_read(force: bool) -> Any:
        stuck.wait(10)
        return read(force)

    monkeypatch.setattr(ring, "_read", slow_read)
    assert await ring.reload_off_loop(timeout_s=0.05) is False
    assert ring.resolve(KEY_A) is not None and ring.resolve(KEY_B) is None
    assert "not read within 0.05 s" in caplog.text
    assert await ring.reload_off_loop(force=True, timeout_s=0.05) is False  # one read at a time
    assert "an earlier read has not ended" in caplog.text
    stuck.set()
    monkeypatch.undo()
    await eventually(lambda: ring._reading is not None and ring._reading.done(), 5, "the stuck read ended")
    assert ring.resolve(KEY_A) is not None  # the late read changed nothing
    assert await ring.reload_off_loop(force=True) is True
    assert ring.resolve(KEY_B) is not None and ring.resolve(KEY_A) is None


# --- per-key limits -----------------------------------------------------------------------------------


def test_token_bucket_per_key() -> None:
    ring = LocalKeyLimits()
    six = Access(name="six", requests_per_minute=6)  # a token every 10 s, at most 6
    for _ in range(6):
        ring.take(six, now=100.0)
    with pytest.raises(KeyRateLimitedError) as caught:
        ring.take(six, now=100.0)
    problem = caught.value.problem()
    assert problem["status"] == 429 and problem["code"] == "key_rate_limited" and "'six'" in problem["detail"]
    assert caught.value.retry_after == 10
    with pytest.raises(KeyRateLimitedError) as caught:
        ring.take(six, now=105.0)  # half a token
    assert caught.value.retry_after == 5
    ring.take(six, now=110.0)  # one token again
    with pytest.raises(KeyRateLimitedError):
        ring.take(six, now=110.0)
    # a refused request takes no token: 10 s later there is exactly one
    ring.take(six, now=120.0)
    with pytest.raises(KeyRateLimitedError):
        ring.take(six, now=120.5)

    ring.take(Access(name="other", requests_per_minute=1), now=120.5)  # buckets are per key
    for _ in range(1000):
        ring.take(Access(name="free"), now=120.5)  # no limit

    # after a long idle time the bucket holds at most `requests_per_minute`
    for _ in range(6):
        ring.take(six, now=10_000.0)
    with pytest.raises(KeyRateLimitedError):
        ring.take(six, now=10_000.0)


def test_retry_after_is_at_least_one_second() -> None:
    ring = LocalKeyLimits()
    fast = Access(name="fast", requests_per_minute=600)
    for _ in range(600):
        ring.take(fast, now=0.0)
    with pytest.raises(KeyRateLimitedError) as caught:
        ring.take(fast, now=0.05)  # half a token: 0.05 s to wait
    assert caught.value.retry_after == 1


def test_concurrent_runs_per_key() -> None:
    ring = LocalKeyLimits()
    two = Access(name="two", max_concurrent_runs=2)
    ring.enter(two)
    ring.enter(two)
    with pytest.raises(KeyRateLimitedError) as caught:
        ring.enter(two)
    assert caught.value.retry_after == 5 and "'two'" in caught.value.detail and caught.value.status == 429
    ring.enter(Access(name="one", max_concurrent_runs=1))  # counted per key
    ring.leave_run(two)
    ring.enter(two)
    with pytest.raises(KeyRateLimitedError):
        ring.enter(two)
    for _ in range(5):
        ring.leave_run(two)  # never below zero
    ring.enter(two)
    ring.enter(two)
    with pytest.raises(KeyRateLimitedError):
        ring.enter(two)
    unlimited = Access(name="unlimited")
    for _ in range(100):
        ring.enter(unlimited)


def test_a_key_scoped_by_tools_reaches_only_the_servers_they_can_name() -> None:
    access = Access(name="k", tools=("filesystem__read_*", "time__*"))
    assert access.reaches("filesystem") and access.reaches("time")
    assert not access.reaches("memory")  # allowed by `servers: ["*"]`, but no tool glob can name its tools
    assert Access(name="all").reaches("memory")  # `*` names every server's tools
    assert Access(name="t", tools=("t*",)).reaches("time")  # a glob without `__` reaches what it can start with
    assert not Access(name="s", servers=("time",), tools=("*",)).reaches("memory")
