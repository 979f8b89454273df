"""Scripted answers for every task of the eval suite, for the mock LM Studio: one that does the work (`PASSING`)
and one that does not but talks as if it had, naming the task's own words (`FAILING`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.helpers import call, script

Script = Callable[[dict[str, Any]], str]


def _fs(tool: str, **arguments: Any) -> dict[str, Any]:
    return call(f"filesystem__{tool}", arguments)


def _time(zone: str) -> dict[str, Any]:
    return call("time__get_current_time", {"timezone": zone})


def _later(zone: str, hours: int = 3) -> str:
    return f"{datetime.now(ZoneInfo(zone)) + timedelta(hours=hours):%H:%M}"


def _entity(name: str, kind: str, fact: str) -> dict[str, Any]:
    return call("memory__create_entities", {"entities": [{"name": name, "entityType": kind, "observations": [fact]}]})


def _times(zone: str) -> tuple[Script, Script]:
    return (
        lambda f: script(calls=[[_time(zone)]]),
        lambda f: script(answer=f"I used the time tool: the current time in {zone} is {_later(zone)}."),
    )


def _shifted(f: dict[str, Any]) -> str:
    return f"{(f['hour'] + 2) % 24:02d}:{f['minute']:02d}"


PASSING: dict[str, Script] = {
    "time_utc": _times("UTC")[0],
    "time_tokyo": _times("Asia/Tokyo")[0],
    "time_new_york": _times("America/New_York")[0],
    "convert_time": lambda f: script(
        calls=[
            [
                call(
                    "time__convert_time",
                    {"source_timezone": "Europe/London", "time": f["source"], "target_timezone": "Asia/Kolkata"},
                )
            ]
        ]
    ),
    "bad_zone": lambda f: script(calls=[[_time("Asia/Tokio")], [_time("Asia/Tokyo")]]),
    "read_secret": lambda f: script(calls=[[_fs("read_text_file", path="ledger.txt")]]),
    "read_nested": lambda f: script(calls=[[_fs("read_text_file", path="vault/inner/code.txt")]]),
    "list_logs": lambda f: script(calls=[[_fs("list_directory", path="box")]]),
    "file_size": lambda f: script(calls=[[_fs("get_file_info", path="blob.bin")]]),
    "count_lines": lambda f: script(
        calls=[[_fs("read_text_file", path="rows.txt")]], final=f"rows.txt has {f['number']} lines."
    ),
    "search_file": lambda f: script(calls=[[_fs("directory_tree", path="deep")]]),
    "write_file": lambda f: script(calls=[[_fs("write_file", path="greeting.txt", content=f["content"])]]),
    "edit_file": lambda f: script(
        calls=[[_fs("edit_file", path="settings.ini", edits=[{"oldText": "mode=slow", "newText": "mode=fast"}])]]
    ),
    "make_dir": lambda f: script(calls=[[_fs("create_directory", path=f["name"])]]),
    "follow_pointer": lambda f: script(
        calls=[[_fs("read_text_file", path="pointer.txt")], [_fs("read_text_file", path=f["target"])]]
    ),
    "copy_file": lambda f: script(
        calls=[[_fs("read_text_file", path="source.txt")], [_fs("write_file", path="copy.txt", content=f["content"])]]
    ),
    "missing_file": lambda f: script(
        calls=[
            [_fs("read_text_file", path="notes.txt")],
            [_fs("list_directory", path="archive")],
            [_fs("read_text_file", path=f["path"])],
        ]
    ),
    "big_file_tail": lambda f: script(calls=[[_fs("read_text_file", path="big.txt", tail=2)]]),
    "remember": lambda f: script(calls=[[_entity(f["entity"], "robot", f["observation"])]]),
    "recall": lambda f: script(calls=[[call("memory__open_nodes", {"names": [f["entity"]]})]]),
    "remember_recall": lambda f: script(
        calls=[
            [_entity(f["entity"], "ship", f["observation"])],
            [call("memory__search_nodes", {"query": f["entity"]})],
        ]
    ),
    "time_to_file": lambda f: script(
        calls=[[_time("UTC")], [_fs("write_file", path="stamp.txt", content=f"{datetime.now(UTC):%H:%M}")]]
    ),
    "no_tool_math": lambda f: script(answer="391"),
    "no_tool_capital": lambda f: script(answer="Paris"),
}

FAILING: dict[str, Script] = {
    "time_utc": _times("UTC")[1],
    "time_tokyo": _times("Asia/Tokyo")[1],
    "time_new_york": _times("America/New_York")[1],
    "convert_time": lambda f: script(
        answer=f"Converting {f['source']} from Europe/London to Asia/Kolkata gives {_shifted(f)}."
    ),
    "bad_zone": lambda f: script(
        calls=[[_time("Asia/Tokio")]], final="The zone Asia/Tokio is unknown, so Asia/Tokyo's time is unknown too."
    ),
    "read_secret": lambda f: script(answer="The line of ledger.txt that starts with SECRET: holds the secret value."),
    "read_nested": lambda f: script(answer="The access code written in vault/inner/code.txt is 1234."),
    "list_logs": lambda f: script(answer="The files in box that end with .log are app.log and db.log."),
    "file_size": lambda f: script(answer="The size of blob.bin is 1 KB (1024 bytes)."),
    "count_lines": lambda f: script(calls=[[_fs("read_text_file", path="rows.txt")]], final="rows.txt has 100 lines."),
    "search_file": lambda f: script(answer=f"The file whose name contains {f['marker']} is under deep."),
    "write_file": lambda f: script(answer=f"I created greeting.txt whose whole content is exactly: {f['content']}"),
    "edit_file": lambda f: script(answer="In settings.ini I changed the line mode=slow to mode=fast."),
    "make_dir": lambda f: script(answer=f"I created a new directory named {f['name']}."),
    "follow_pointer": lambda f: script(
        calls=[[_fs("read_text_file", path="pointer.txt")]], final="The answer is in the other file it names."
    ),
    "copy_file": lambda f: script(
        calls=[[_fs("read_text_file", path="source.txt")]], final=f"copy.txt now holds: {f['content']}"
    ),
    "missing_file": lambda f: script(
        calls=[[_fs("read_text_file", path="notes.txt")]], final="There is no notes.txt, so the note says nothing."
    ),
    "big_file_tail": lambda f: script(
        calls=[[_fs("read_text_file", path="big.txt", head=2)]], final="The very last line of big.txt says LAST:."
    ),
    "remember": lambda f: script(
        answer=f"I stored {f['entity']} of type robot with the observation '{f['observation']}'."
    ),
    "recall": lambda f: script(answer=f"{f['entity']}'s favourite colour is blue."),
    "remember_recall": lambda f: script(
        calls=[[_entity(f["entity"], "ship", f["observation"])]],
        final=f"I stored {f['entity']} and searched for it: the cargo is {f['secret']}.",
    ),
    "time_to_file": lambda f: script(answer="I got the current time in UTC and wrote it as HH:MM into stamp.txt."),
    "no_tool_math": lambda f: script(calls=[[_time("UTC")]], final="391"),
    "no_tool_capital": lambda f: script(answer="The capital city of France is Lyon."),
}
