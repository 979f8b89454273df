"""The agent service: checks a run spec and opens runs (see `services.agent.loop` for the loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from services.access import KeyRing
from services.agent.approvals import ApprovalPolicy
from services.agent.loop import Run
from services.agent.pipeline import Pipeline, StageSpec, check_instructions
from services.agent.records import Journal, RunSpec
from services.errors import BridgeError, InvalidRequestError, MCPServerError, ModelNotFoundError, ShuttingDownError
from services.limits import RunLimiter
from services.lmstudio import LMStudioHosts, ModelCatalog, ResolvedModel
from services.mcp import MCPPool, ToolSet
from services.metrics import Metrics

MAX_ROUNDS_CAP = 100
R = TypeVar("R", bound=Run)


@dataclass(frozen=True, slots=True)
class RunDefaults:
    """The gateway's run settings (from `Settings`); a request's own values win."""

    max_rounds: int
    run_timeout_s: float
    tool_output_max_chars: int
    load_timeout_s: float | None
    max_tokens: int
    repeat_call_limit: int
    text_tool_calls: bool = True  # recover tool calls written as text
    capture_content: bool = False
    approval_timeout_s: float = 300.0  # a call nobody decides on is denied after this


# gives each new run its journal (the run store), or None when it is not recorded
Journals = Callable[[Run], Journal | None]


class AgentService:
    """Opens agent runs over one LM Studio client, model catalog and MCP pool."""

    def __init__(
        self,
        lmstudio: LMStudioHosts,
        catalog: ModelCatalog,
        pool: MCPPool,
        limiter: RunLimiter,
        defaults: RunDefaults,
        metrics: Metrics,
        approvals: ApprovalPolicy | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        self.lmstudio = lmstudio
        self.catalog = catalog
        self.pool = pool
        self.limiter = limiter
        self.defaults = defaults
        self.metrics = metrics
        self.approvals = approvals or ApprovalPolicy()
        self.keys = keys or KeyRing()
        self.journals: Journals | None = None  # set by the run store once it is open
        self.accepting = True
        self.active: set[Run] = set()

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
        """Check every step (model, servers, tools) before anything runs; a problem names its step."""
        check_instructions(stages)
        prepared: list[tuple[StageSpec, Run]] = []
        for index, stage in enumerate(stages, 1):
            step_spec = RunSpec(
                task=spec.task,
                mcp_servers=stage.mcp_servers,
                model=stage.model,
                max_rounds=stage.max_rounds,
                max_tokens=stage.max_tokens,
                temperature=stage.temperature,
                system_prompt=stage.system_prompt,
                allowed_tools=stage.allowed_tools,
                store=False,  # recorded as part of the pipeline
                interactive=spec.interactive,
                access=spec.access,
            )
            try:
                prepared.append((stage, await self.prepare(step_spec, key_run=False)))
            except BridgeError as exc:
                raise exc.for_step(index, stage.name) from None
        if spec.access is not None:
            self.keys.enter_run(spec.access)  # the pipeline is one of the key's runs
        pipeline = Pipeline(self, spec, prepared)
        if spec.store and self.journals is not None:
            pipeline.journal = self.journals(pipeline)
        return pipeline

    async def prepare(self, spec: RunSpec, *, key_run: bool = True) -> Run:
        """Validate the spec (model, servers, tools) without taking a run slot; raises before anything runs."""
        if not self.accepting:
            raise ShuttingDownError("The gateway is shutting down; retry on another instance", retry_after=5)
        if spec.max_rounds is None:
            spec.max_rounds = self.defaults.max_rounds
        if not 1 <= spec.max_rounds <= MAX_ROUNDS_CAP:
            raise InvalidRequestError(f"max_rounds must be between 1 and {MAX_ROUNDS_CAP}")
        self.lmstudio.check()  # every LM Studio host is known to be down: fail in milliseconds
        model = await self._model_for(spec)
        if spec.access is not None and spec.mcp_servers is not None:  # refused before anything runs
            spec.access.check_servers(spec.mcp_servers)
        servers, tools, warnings = await self._tools_for(spec)
        if model.stale:
            warnings.append("LM Studio did not answer the model list; the model was checked against the last list")
        if spec.access is not None and key_run:
            self.keys.enter_run(spec.access)  # the key's own concurrency limit; `Run.finish` gives it back
        run = Run(self, spec, model, servers, tools, warnings)
        run.holds_key_run = key_run and spec.access is not None
        if spec.store and self.journals is not None:
            run.journal = self.journals(run)
        return run

    async def _model_for(self, spec: RunSpec) -> ResolvedModel:
        """The resolved model, within the key's scope (a key is told only of the models it may use)."""
        access = spec.access
        try:
            model = await self.catalog.resolve(spec.model)
        except ModelNotFoundError as exc:
            if access is None:
                raise
            raise exc.within(lambda m: access.model_allowed(m, self.catalog.aliases)) from None
        if access is not None:
            access.check_model(model.id, self.catalog.aliases)
        return model

    async def _tools_for(self, spec: RunSpec) -> tuple[list[str], ToolSet, list[str]]:
        warnings: list[str] = []
        if spec.mcp_servers is not None:
            servers = list(dict.fromkeys(spec.mcp_servers))
        else:  # every enabled server the key may use, started together; one that cannot start is left out
            names = [n for n in self.pool.names() if spec.access is None or spec.access.reaches(n)]
            listed = await asyncio.gather(*(self.pool.list_tools(n) for n in names), return_exceptions=True)
            servers = []
            for name, outcome in zip(names, listed, strict=True):
                if isinstance(outcome, MCPServerError):
                    warnings.append(f"MCP server {name!r} left out: {outcome.detail}")
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    servers.append(name)
        tools = await self.pool.tool_set(servers)  # unknown name -> 422, cannot start -> 503
        if spec.access is not None:  # tools outside the key's scope are never offered
            access = spec.access
            if spec.allowed_tools is not None:
                named = {t.model_name: t for t in tools.tools}
                access.check_tools((named[n].server, named[n].name) for n in spec.allowed_tools if n in named)
            tools = ToolSet([t for t in tools.tools if access.tool_allowed(t.server, t.name)])
        if spec.allowed_tools is not None:
            known = {t.model_name for t in tools.tools}
            unknown = [name for name in spec.allowed_tools if name not in known]
            if unknown and spec.access is not None:  # a tool of a server outside the scope: forbidden, not unknown
                parts = [n.partition("__") for n in unknown if "__" in n]
                spec.access.check_tools((server, tool) for server, _, tool in parts)
            if unknown:
                raise InvalidRequestError(
                    f"allowed_tools names tools the chosen servers do not have: {', '.join(unknown)}",
                    unknown_tools=unknown,
                    available_tools=sorted(known),
                )
            allowed = set(spec.allowed_tools)
            tools = ToolSet([t for t in tools.tools if t.model_name in allowed])
        return servers, tools, warnings
