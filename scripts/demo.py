"""`make demo` (`python -m scripts.demo`): the mock LM Studio, real MCP servers and the gateway, until Ctrl-C.

The mock LM Studio is not a model: it follows `[[mock {...}]]` scripts inside the task (see
tests/mock_lmstudio/__init__.py), so the README's curl makes it call a real MCP tool and then
answer from the tool's output. A few runs are started in the background at once, so the run console
(`/ui/`, docs/console.md) has something to show.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx

from tests.helpers import REPO, call, script
from tests.processes import free_port, wait_healthy


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    """Until `url` answers 200; exits the demo if the process stops first or it takes over a minute."""
    try:
        asyncio.run(wait_healthy(url, process))
    except RuntimeError as exc:
        raise SystemExit(f"{process.args!r}: {exc}") from None


# background runs the demo starts, so the console opens on the demo's runs (each as POST /v1/runs takes it)
DEMO_RUNS = (
    {
        "mcp_servers": ["filesystem"],
        "task": "What does hello.txt say? "
        + script(calls=[[call("filesystem__read_text_file", {"path": "hello.txt"})]]),
    },
    {
        "mcp_servers": ["time"],
        "task": "What time is it in Tokyo and in Paris? "
        + script(
            reasoning="Two time zones: one call each, in the same round.",
            calls=[
                [
                    call("time__get_current_time", {"timezone": "Asia/Tokyo"}),
                    call("time__get_current_time", {"timezone": "Europe/Paris"}),
                ]
            ],
        ),
    },
)


def start_demo_runs(url: str) -> None:
    """Start the demo's background runs; a failure is said, never fatal (the demo works without them)."""
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for body in DEMO_RUNS:
                client.post("/v1/runs", json=body).raise_for_status()
    except httpx.HTTPError as exc:
        print(f"  (the demo's sample runs were not started: {exc})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="gateway port")
    parser.add_argument("--mock-port", type=int, default=0, help="mock LM Studio port (0 = any free port)")
    args = parser.parse_args()
    mock_port = args.mock_port or free_port()
    demo_dir = REPO / ".demo"  # the filesystem server may read (and write) only here
    demo_dir.mkdir(exist_ok=True)
    (demo_dir / "hello.txt").write_text("Hello from a real MCP filesystem server!\n")
    env = {
        **os.environ,
        "LMSTUDIO_BASE_URL": f"http://127.0.0.1:{mock_port}",
        "MCP_CONFIG": str(REPO / "examples" / "demo-mcp.json"),
        "DEMO_DIR": str(demo_dir),
        "DEMO_REPO": str(REPO),  # examples/demo-mcp.json's paths are absolute: it works from any folder
        "BRIDGE_PYTHON": sys.executable,
    }
    # the children get process groups of their own: a terminal's Ctrl-C reaches only this script, which then
    # stops each child once (a second SIGINT would make uvicorn skip its graceful shutdown)
    mock = subprocess.Popen(
        [sys.executable, "-m", "tests.mock_lmstudio", "--port", str(mock_port)], cwd=REPO, process_group=0
    )
    gateway = None
    try:
        wait_until_up(f"http://127.0.0.1:{mock_port}/_mock/health", mock)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(args.port)],
            cwd=REPO,
            env=env,
            process_group=0,
        )
        wait_until_up(f"http://127.0.0.1:{args.port}/healthz", gateway)
        start_demo_runs(f"http://127.0.0.1:{args.port}")
        print(
            f"\n  mock LM Studio: http://127.0.0.1:{mock_port}\n  gateway:        http://127.0.0.1:{args.port}"
            f"\n  run console:    http://127.0.0.1:{args.port}/ui/"
            f"\n  demo files:     {demo_dir}\n\n  try:  curl localhost:{args.port}/v1/models\n"
            "  (the README shows a whole run)   Ctrl-C stops everything.\n",
            flush=True,
        )
        while gateway.poll() is None and mock.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not abandon the children
            signal.signal(sig, signal.SIG_IGN)
        for process in (gateway, mock):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in (gateway, mock):
            if process is not None:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
    print("demo stopped")
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
