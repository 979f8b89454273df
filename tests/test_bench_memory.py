"""bench/memory.py (`python -m bench memory`, docs/performance.md "Memory after start-up and one run"): the
gateway's RSS after start-up and one run, and the floor under it, the libraries it has loaded imported alone."""

from __future__ import annotations

from typing import cast

from bench import memory
from bench.common import Row

IMPORTTIME = """\
{"ts": 1.0, "level": "INFO", "msg": "a log line between the imports"}
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:      2044 |       5210 | mcp.client.session
import time:        35 |         35 |     services.mcp.stdio
import time:       120 |        120 |   _io
"""


def test_the_modules_are_read_from_the_importtime_lines_in_order_each_once() -> None:
    assert memory.imported(IMPORTTIME) == ["_io", "mcp.client.session", "services.mcp.stdio"]


async def test_the_floor_is_measured_under_the_gateway() -> None:
    result = await memory.run()
    rows = {name: value for name, value, _ in cast(list[Row], result["rows"])}
    after = float(rows["gateway RSS after start-up and one run (store on)"].split()[0])
    floor = float(rows["the libraries loaded by the end of the first run, imported alone (the floor)"].split()[0])
    at_start = float(rows["the libraries loaded at start-up, imported alone in a fresh interpreter"].split()[0])
    bare = float(rows["a bare interpreter (`python -c`, nothing imported)"].split()[0])
    assert bare < at_start < floor < after  # the run imports the MCP SDK; the gateway adds its own modules and data
    own = rows["those libraries and the gateway's own modules, imported alone"]
    assert int(own.split("(")[1].split()[0]) > 100  # the gateway's own modules were imported too
