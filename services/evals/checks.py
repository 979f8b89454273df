"""The program checks the suite's tasks share. Each looks for evidence a prose answer cannot fake: a value the
model could only have read through a tool (random per eval), the state of a file or of the memory server after
the run, the current time within a minute, or the absence of tool calls."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.evals.tasks import Evidence, Verdict, failed, passed

TIME_TOLERANCE = timedelta(minutes=1)
_CLOCK = re.compile(r"(?<!\d)([01]?\d|2[0-3]):([0-5]\d)(?::[0-5]\d)?(?!\d)")


def clock_times(text: str) -> list[tuple[int, int]]:
    """Every HH:MM (or H:MM, HH:MM:SS) written in `text`, as (hour, minute)."""
    return [(int(h), int(m)) for h, m in _CLOCK.findall(text)]


def near_now(times: list[tuple[int, int]], zone: str, now: datetime | None = None) -> bool:
    """True when one of `times` is within a minute of the time now in `zone` (across midnight too)."""
    current = (now or datetime.now(ZoneInfo(zone))).astimezone(ZoneInfo(zone))
    for hour, minute in times:
        for day in (-1, 0, 1):
            candidate = current.replace(hour=hour, minute=minute, second=0, microsecond=0) + timedelta(days=day)
            if abs(candidate - current) <= TIME_TOLERANCE + timedelta(seconds=59):
                return True
    return False


def tells_time(evidence: Evidence, zone: str) -> Verdict:
    times = clock_times(evidence.output)
    if not times:
        return failed("the answer gives no time of day (HH:MM)")
    if near_now(times, zone):
        return passed(f"a time within a minute of the time in {zone}")
    return failed(f"no time in the answer is within a minute of the time in {zone}: {times}")


def quotes(evidence: Evidence, secret: str, what: str) -> Verdict:
    """The answer quotes `secret` (random per eval: only a tool could have shown it)."""
    if secret.lower() in evidence.output.lower():
        return passed(f"the answer quotes {what}")
    return failed(f"the answer does not quote {what}")


def says_number(evidence: Evidence, number: int, what: str) -> Verdict:
    """The answer states `number` as a number of its own (not a part of a longer one)."""
    found = [int(n.replace(",", "")) for n in re.findall(r"(?<![\d.])\d[\d,]*(?![\d])", evidence.output)]
    if number in found:
        return passed(f"the answer gives {what}")
    return failed(f"the answer does not give {what} ({number}); numbers in it: {found[:8]}")


def file_holds(evidence: Evidence, relative: str, expected: str) -> Verdict:
    """The file exists after the run and holds exactly `expected` (surrounding whitespace aside)."""
    path = evidence.scratch.files / relative
    if not path.is_file():
        return failed(f"{relative} was not written")
    text = path.read_text(errors="replace")
    if text.strip() == expected.strip():
        return passed(f"{relative} holds the asked content")
    return failed(f"{relative} holds {text[:80]!r}, not {expected[:80]!r}")


def stored_observation(evidence: Evidence, entity: str, observation: str) -> Verdict:
    """The memory server's file has `entity` with `observation` (case aside)."""
    for item in evidence.scratch.memory_entities():
        if str(item.get("name", "")).lower() == entity.lower():
            observations = [str(o).lower() for o in item.get("observations", [])]
            if any(observation.lower() in o for o in observations):
                return passed(f"memory holds {entity} with the observation")
            return failed(f"memory holds {entity} without the observation: {observations}")
    return failed(f"memory holds no entity named {entity}")


def no_tools(evidence: Evidence) -> Verdict | None:
    """A failed verdict when the run called any tool; None when it called none."""
    if evidence.result.steps:
        names = sorted({s.name for s in evidence.result.steps})
        return failed(f"the task needs no tool, but the model called {names}")
    return None


def all_of(*verdicts: Verdict) -> Verdict:
    """Passed when every verdict passed; else the first failure."""
    for verdict in verdicts:
        if not verdict.passed:
            return verdict
    return passed("; ".join(v.reason for v in verdicts))
