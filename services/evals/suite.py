"""The eval suite: tasks whose success a program checks (time, files, memory, chains, no tool, recovery, a big
output read in parts). `SUITE` is the whole suite in a fixed order; `select` picks tasks by name or kind."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.evals.checks import all_of, clock_times, near_now, no_tools, quotes, stored_observation, tells_time
from services.evals.suite_files import FILE_TASKS
from services.evals.tasks import WORDS, EvalTask, Evidence, Prepared, Scratch, Verdict, failed, passed, token

TIME = ("time",)
MEMORY = ("memory",)


def _ask_time(zone: str, words: str) -> EvalTask:
    def prepare(scratch: Scratch, rng: random.Random) -> Prepared:
        return Prepared(
            f"What is the current time in {words}? Use the time tool and give the time as HH:MM.", {"zone": zone}
        )

    return EvalTask(f"time_{zone.split('/')[-1].lower()}", "time", TIME, prepare, lambda e: tells_time(e, zone))


def _convert(scratch: Scratch, rng: random.Random) -> Prepared:
    hour, minute = rng.randint(8, 20), rng.choice((0, 15, 30, 45))
    today = datetime.now(ZoneInfo("Europe/London")).date()
    source = datetime(today.year, today.month, today.day, hour, minute, tzinfo=ZoneInfo("Europe/London"))
    target = source.astimezone(ZoneInfo("Asia/Kolkata"))
    return Prepared(
        f"Convert the time {hour:02d}:{minute:02d} today from Europe/London to Asia/Kolkata. Give the result as HH:MM.",
        {"hour": target.hour, "minute": target.minute, "source": f"{hour:02d}:{minute:02d}"},
    )


def _check_convert(evidence: Evidence) -> Verdict:
    expected = (evidence.facts["hour"], evidence.facts["minute"])
    if expected in clock_times(evidence.output):
        return passed("the converted time is right")
    return failed(f"the answer does not give {expected[0]:02d}:{expected[1]:02d}")


def _bad_zone(scratch: Scratch, rng: random.Random) -> Prepared:
    return Prepared(
        "What is the current time in the time zone 'Asia/Tokio'? If the tool rejects that name, correct the spelling "
        "of the zone and ask again. Give the time as HH:MM.",
        {"zone": "Asia/Tokyo"},
    )


def _remember(scratch: Scratch, rng: random.Random) -> Prepared:
    name, fact = f"Robot{rng.randint(100, 999)}", f"likes {token(rng)}"
    return Prepared(
        f"Store in the knowledge graph an entity named {name} of type robot with the observation '{fact}'.",
        {"entity": name, "observation": fact},
    )


def _recall(scratch: Scratch, rng: random.Random) -> Prepared:
    name, colour = f"Pilot{rng.randint(100, 999)}", f"{rng.choice(WORDS)}-{rng.randint(10, 99)}"
    entity = {"type": "entity", "name": name, "entityType": "person", "observations": [f"favourite colour {colour}"]}
    scratch.memory.write_text(json.dumps(entity) + "\n")
    return Prepared(
        f"Look up {name} in the knowledge graph. What is their favourite colour?", {"secret": colour, "entity": name}
    )


def _roundtrip(scratch: Scratch, rng: random.Random) -> Prepared:
    name, fact = f"Ship{rng.randint(100, 999)}", f"cargo {token(rng)}"
    return Prepared(
        f"First store an entity named {name} of type ship with the observation '{fact}' in the knowledge graph. "
        f"Then search the knowledge graph for {name} and tell me what it says about the cargo.",
        {"entity": name, "observation": fact, "secret": fact.split(" ", 1)[1]},
    )


def _check_roundtrip(evidence: Evidence) -> Verdict:
    reads = [s for s in evidence.ok_steps() if s.tool in ("search_nodes", "open_nodes", "read_graph")]
    read_back = passed("the graph was read back") if reads else failed("the graph was never read back")
    return all_of(
        stored_observation(evidence, evidence.facts["entity"], evidence.facts["observation"]),
        read_back,
        quotes(evidence, evidence.facts["secret"], "the cargo"),
    )


def _stamp(scratch: Scratch, rng: random.Random) -> Prepared:
    return Prepared(
        "Get the current time in UTC with the time tool, then write it as HH:MM into a new file stamp.txt.", {}
    )


def _check_stamp(evidence: Evidence) -> Verdict:
    path = evidence.scratch.files / "stamp.txt"
    if not path.is_file():
        return failed("stamp.txt was not written")
    written = clock_times(path.read_text(errors="replace"))
    if written and near_now(written, "UTC", datetime.now(ZoneInfo("UTC")) - timedelta(seconds=30)):
        return passed("stamp.txt holds the current UTC time")
    return failed(f"stamp.txt holds no current UTC time: {path.read_text(errors='replace')[:60]!r}")


def _no_tool(question: str, expected: str, name: str) -> EvalTask:
    def prepare(scratch: Scratch, rng: random.Random) -> Prepared:
        return Prepared(question, {"expected": expected})

    def check(evidence: Evidence) -> Verdict:
        return no_tools(evidence) or quotes(evidence, expected, "the answer")

    return EvalTask(name, "no_tool", ("time", "filesystem"), prepare, check, max_rounds=2)


SUITE: list[EvalTask] = [
    _ask_time("UTC", "UTC"),
    _ask_time("Asia/Tokyo", "Tokyo (Asia/Tokyo)"),
    _ask_time("America/New_York", "New York (America/New_York)"),
    EvalTask("convert_time", "time", TIME, _convert, _check_convert),
    EvalTask("bad_zone", "recovery", TIME, _bad_zone, lambda e: tells_time(e, "Asia/Tokyo"), max_rounds=5),
    *FILE_TASKS,
    EvalTask(
        "remember",
        "memory",
        MEMORY,
        _remember,
        lambda e: stored_observation(e, e.facts["entity"], e.facts["observation"]),
    ),
    EvalTask("recall", "memory", MEMORY, _recall, lambda e: quotes(e, e.facts["secret"], "the colour")),
    EvalTask("remember_recall", "memory", MEMORY, _roundtrip, _check_roundtrip, max_rounds=5),
    EvalTask("time_to_file", "chain", ("time", "filesystem"), _stamp, _check_stamp, max_rounds=5),
    _no_tool("What is 17 multiplied by 23? Answer with the number only.", "391", "no_tool_math"),
    _no_tool("What is the capital city of France? Answer with one word.", "Paris", "no_tool_capital"),
]
TASKS_BY_NAME = {t.name: t for t in SUITE}


def select(names: list[str] | None) -> list[EvalTask]:
    """The suite's tasks named (by task name or kind), in suite order; None or [] = every task.
    KeyError naming the unknown ones."""
    if not names:
        return list(SUITE)
    kinds = {t.kind for t in SUITE}
    unknown = [n for n in names if n not in TASKS_BY_NAME and n not in kinds]
    if unknown:
        raise KeyError(", ".join(unknown))
    return [t for t in SUITE if t.name in names or t.kind in names]
