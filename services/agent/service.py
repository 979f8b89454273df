"""The agent service: checks a run spec and opens runs (see `run.py` for a run's life, `policy.py` for its loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.access import Access, KeyRing
from services.agent.approvals import ApprovalPolicy
from services.agent.context import RunContext
from services.agent.defaults import RunDefaults
from services.agent.lease import RunLease
from services.agent.options import run_spec
from services.agent.pipeline import Pipeline, StageSpec, check_instructions
from services.agent.ports import Engine, Models, Tools
from services.agent.records import RunSpec
from services.agent.run import Run
from services.agent.scope import resolve_model, scoped_tools
from services.agent.state import Journals
from services.errors import BridgeError, MCPServerError, ShuttingDownError
from services.limits import RunLimiter
from services.mcp import ToolSet
from services.metrics import Metrics

R = TypeVar("R", bound=Run)
# picks a model for a run that names none (its key's scope): (model id, tool_score), or None for the default
PickModel = Callable[[Access | None], Awaitable[tuple[str, float] | None]]


class AgentService:
    """Opens agent runs over one LM Studio client, model catalog and MCP pool."""

    def __init__(
        self,
        lmstudio: Engine,
        catalog: Models,
        pool: Tools,
        limiter: RunLimiter,
        defaults: RunDefaults,
        metrics: Metrics,
        approvals: ApprovalPolicy | None = None,
        keys: KeyRing | None = None,
        journals: Journals | None = None,
        pick_model: PickModel | None = None,
    ) -> None:
        self.ctx = RunContext(
            lmstudio,
            catalog,
            pool,
            limiter,
            defaults,
            metrics,
            approvals or ApprovalPolicy(),
            keys or KeyRing(),
            journals,
        )
        self.limiter = limiter
        self.pick_model = pick_model  # routing by score (BRIDGE_ROUTE_BY_SCORE): a run that names no model
        self.accepting = True
        self.active: set[Run] = set()  # top-level runs executing now

    def over(self, pool: Tools) -> AgentService:
        """An agent service sharing this one's LM Studio, catalog, run slots, settings, keys and run store, over
        other MCP servers (the eval's own)."""
        c = self.ctx
        return AgentService(c.lmstudio, c.catalog, pool, self.limiter, c.defaults, c.metrics, None, c.keys, c.journals)

    async def drain(self, grace_s: float) -> None:
        """Refuse new runs, give runs in flight `grace_s` to finish, then stop them."""
        self.accepting = False
        tasks = {run.task for run in self.active if run.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for run in list(self.active):
            run.stop_for_shutdown()
        tasks = {run.task for run in self.active if run.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    async def open(self, spec: RunSpec) -> Run:
        """Validate the spec and take a run slot (waiting at most the queue timeout); raises before anything runs."""
        return await self._with_slot(await self.prepare(spec))

    async def open_pipeline(self, spec: RunSpec, stages: list[StageSpec]) -> Pipeline:
        """`prepare_pipeline`, then one run slot for the whole pipeline."""
        return await self._with_slot(await self.prepare_pipeline(spec, stages))

    async def _with_slot(self, run: R) -> R:
        try:
            await self.limiter.acquire()
        except BaseException:
            run.release()  # the key's run
            raise
        run.hold_slot()
        return run

    async def prepare_pipeline(self, spec: RunSpec, stages: list[StageSpec]) -> Pipeline:
        """Check every step (model, servers, tools, `unload_after`) before anything runs; a problem names its step."""
        check_instructions(stages)
        for index, stage in enumerate(stages, 1):  # only an admin key may unload: refused before any upstream call
            if stage.unload_after and spec.access is not None:
                try:
                    spec.access.check_admin("unload a model (unload_after)")
                except BridgeError as exc:
                    raise exc.for_step(index, stage.name) from None
        prepared: list[tuple[StageSpec, Run]] = []
        for index, stage in enumerate(stages, 1):
            step_spec = run_spec(
                stage.options,
                task=spec.task,
                store=False,  # recorded as part of the pipeline
                interactive=spec.interactive,
                asker=spec.asker,
                access=spec.access,
            )
            try:
                prepared.append((stage, await self.prepare(step_spec, key_run=False)))
            except BridgeError as exc:
                raise exc.for_step(index, stage.name) from None
        lease = await RunLease.take(self.limiter, self.ctx.keys, spec.access)  # the pipeline is one of the key's runs
        return self._journaled(Pipeline(self.ctx, spec, prepared, lease, self.active))

    async def prepare(self, spec: RunSpec, *, key_run: bool = True) -> Run:
        """Validate the spec (model, servers, tools) without taking a run slot; raises before anything runs."""
        if not self.accepting:
            raise ShuttingDownError("The gateway is shutting down; retry on another instance", retry_after=5)
        self.ctx.lmstudio.check()  # every LM Studio host is known to be down: fail in milliseconds
        requested, routed = spec.model, None
        if requested in (None, "default") and self.pick_model is not None:
            routed = await self.pick_model(spec.access)
            requested = routed[0] if routed else requested
        model = await resolve_model(self.ctx.catalog, requested, spec.access)
        if spec.access is not None and spec.mcp_servers is not None:  # refused before anything runs
            spec.access.check_servers(spec.mcp_servers)
        servers, tools, warnings = await self._tools_for(spec)
        if routed is not None:
            warnings.append(f"No model was named: routed to {routed[0]!r}, the best tool_score ({routed[1]:g})")
        if model.stale:
            warnings.append("LM Studio did not answer the model list; the model was checked against the last list")
        # `Run.finish` gives it back
        lease = await RunLease.take(self.limiter, self.ctx.keys, spec.access, key_run=key_run)
        return self._journaled(Run(self.ctx, spec, model, servers, tools, warnings, lease, self.active))

    def _journaled(self, run: R) -> R:
        if run.spec.store and self.ctx.journals is not None:
            run.journal = self.ctx.journals(run)
        return run

    async def _tools_for(self, spec: RunSpec) -> tuple[list[str], ToolSet, list[str]]:
        warnings: list[str] = []
        pool = self.ctx.pool
        if spec.mcp_servers is not None:
            servers = list(dict.fromkeys(spec.mcp_servers))
        else:  # every enabled server the key may use, started together; one that cannot start is left out
            names = [n for n in pool.names() if spec.access is None or spec.access.reaches(n)]
            listed = await asyncio.gather(*(pool.list_tools(n) for n in names), return_exceptions=True)
            servers = []
            for name, outcome in zip(names, listed, strict=True):
                if isinstance(outcome, MCPServerError):
                    warnings.append(f"MCP server {name!r} left out: {outcome.detail}")
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    servers.append(name)
        tools = await pool.tool_set(servers)  # unknown name -> 422, cannot start -> 503
        return servers, scoped_tools(tools, spec.access, spec.allowed_tools), warnings
