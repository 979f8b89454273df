"""Running the gateway under uvicorn with a graceful, run-aware shutdown."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import sys
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from app.gateway import BridgeState, load_keys, load_mcp
from app.header_timeout import header_timeout_protocol
from app.main import create_app
from app.settings import Settings
from app.store_setup import claim_instance

log = logging.getLogger("lmstudio_bridge")


class GracefulServer(uvicorn.Server):
    """On SIGTERM: stop accepting, let runs finish within the grace period, then stop them
    (streams get `run.failed`, JSON callers a 503 `shutting_down`), then the normal shutdown."""

    def __init__(self, app: FastAPI, config: uvicorn.Config, grace_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, but once the graceful stop is done the signal is not raised again: a drained
        shutdown on SIGTERM is a clean exit (status 0), not a death by signal."""
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """As uvicorn's, with sniffio told that this thread runs asyncio while it serves. anyio (the MCP SDK's
        streams, cancel scopes and checkpoints) asks on every such step; where sniffio is installed (the dev
        extra and SDKs such as openai's bring it; the runtime lock does not), it would otherwise sniff each
        time with asyncio.current_task(), Python code on 3.11 (docs/performance.md)."""
        with asyncio_in_this_thread():
            await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # serving: the socket accepts and the gateway's parts are built
            host, port = self.config.host, self.config.port
            log.info("lmstudio-bridge ready: serving on http://%s:%d", f"[{host}]" if ":" in host else host, port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        bridge: BridgeState | None = getattr(self.app.state, "bridge", None)  # absent if start-up failed
        if bridge is not None:
            log.info("draining: %d run(s) in flight, grace %.0f s", len(bridge.agent.active), self.grace_s)
            await bridge.agent.drain(self.grace_s)
        await super().shutdown(sockets)


@contextlib.contextmanager
def asyncio_in_this_thread() -> Iterator[None]:
    """sniffio's answer for this thread set to asyncio, and put back after (nothing without sniffio)."""
    try:
        import sniffio
    except ImportError:
        yield
        return
    previous, sniffio.thread_local.name = sniffio.thread_local.name, "asyncio"
    try:
        yield
    finally:
        sniffio.thread_local.name = previous


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening (connections wait in its backlog until the server accepts):
    no other process can take the port from here on. OSError when it is taken."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free; one in use is not
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_server(settings: Settings, host: str, port: int) -> int:
    """Serve until stopped. Start-up order: the configuration is read and checked, the port taken, then the
    instance id; only then does the lifespan open the run store and claim leftovers. A port or an instance id
    in use: a one-line message on stderr and 2."""
    if not (settings.api_keys or settings.keys_file) and not is_loopback(host):
        log.warning(
            "!!! lmstudio-bridge listens on %s with NO API KEYS: anyone who reaches this port can run tools "
            "on your MCP servers. Set BRIDGE_API_KEYS or BRIDGE_KEYS_FILE (and --require-auth) or bind to "
            "127.0.0.1. !!!",
            host,
        )
    settings = settings.model_copy(update={"host": host, "port": port})  # the recursion guard needs the real address
    app = create_app(settings, load_mcp(settings), configure_logs=True, keys=load_keys(settings))
    try:
        sock = listen(host, port)
    except OSError as exc:
        print(
            f"lmstudio-bridge: cannot listen on {host}:{port}: {exc.strerror or exc} (is another lmstudio-bridge "
            "running? choose another port with --port or BRIDGE_PORT)",
            file=sys.stderr,
        )
        return 2
    try:
        claim_instance(settings)
    except SystemExit:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=False,
        http=header_timeout_protocol(settings.header_timeout_s),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 10,
        log_config=None,  # our JSON logging, configured by create_app
    )
    GracefulServer(app, config, settings.shutdown_grace_s).run(sockets=[sock])
    return 0
