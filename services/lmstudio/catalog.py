"""Model catalog: a cached, single-flight view of LM Studio's models, model resolution, and the list
as `GET /v1/models` shows it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import Field

from services.context.window import DEFAULT_CONTEXT_TOKENS, ContextWindow, Learned
from services.errors import (
    BridgeError,
    InvalidRequestError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    ModelNotFoundError,
)
from services.lmstudio.client import ModelErrorHook
from services.lmstudio.listing import ModelHost, ModelInfo, ModelType

DEFAULT_NAMES = frozenset({"", "default"})
ModelKind = Literal["chat", "embedding", "any"]  # what the caller will do with the model
STALE_RETRY_S = 5.0  # while LM Studio is down, ask it again at most this often


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelEntry:
    """A model as the gateway lists it: OpenAI's model object plus what LM Studio says of it."""

    id: str
    object: Literal["model"] = "model"
    owned_by: str = "lmstudio"
    type: ModelType
    state: Annotated[Literal["loaded", "not-loaded"], Field(description="Whether LM Studio has it in memory")]
    max_context_length: Annotated[
        int | None, Field(description="The most context the model can take, in tokens, when the server says")
    ]
    loaded_context_length: Annotated[
        int | None,
        Field(
            description="The context it is loaded with, in tokens: what one request (prompt and answer) may hold; "
            "with several hosts, the smallest of those that have it loaded. Null when it is not loaded or the "
            "server does not say"
        ),
    ]
    tool_use: Annotated[bool, Field(description="Trained for tool use, when LM Studio says")]
    default: Annotated[bool, Field(description="True for the model a request without `model` gets")]
    hosts: Annotated[
        list[ModelHost],
        Field(description="The LM Studio hosts that have it (by name, else URL) and its state on each"),
    ]
    tool_score: Annotated[
        float | None,
        Field(description="Share of the eval suite's tasks its newest completed eval did (0-1); null: never evaluated"),
    ] = None

    @classmethod
    def of(cls, info: ModelInfo, *, default: bool) -> ModelEntry:
        return cls(
            id=info.id,
            type=info.type,
            state="loaded" if info.loaded else "not-loaded",
            max_context_length=info.max_context_length,
            loaded_context_length=info.loaded_context_length,
            tool_use=info.tool_use,
            default=default,
            hosts=list(info.hosts),
        )


class ModelSource(Protocol):
    """Where the models come from (`LMStudioHosts`, or one `LMStudioClient`)."""

    async def list_models(self) -> list[ModelInfo]: ...


S = TypeVar("S", bound=ModelSource)


@dataclass(frozen=True, slots=True)
class Snapshot:
    models: tuple[ModelInfo, ...]
    by_id: dict[str, ModelInfo]
    fetched_at: float
    stale: bool = False  # LM Studio did not answer; this is the last list it gave


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    id: str
    info: ModelInfo
    stale: bool  # validated against a stale list because LM Studio did not answer


class ModelCatalog:
    """Caches the model list for `ttl_s`; concurrent misses share one upstream request.

    Built with the LM Studio hosts (`ModelCatalog.over`), it also hears from them when LM Studio says a model is
    missing or none is loaded (`model_error`), so every path (runs, chat pass-through, chat with MCP,
    load/unload) answers with the fresh list.
    """

    @classmethod
    def over(cls, build: Callable[[ModelErrorHook], S], **options: Any) -> tuple[ModelCatalog, S]:
        """A source of models built by `build` with the catalog's `model_error` as its hook (told when LM
        Studio says a model is missing), and the catalog of its models: each gets the other when it is built."""
        source: S | None = None

        async def fetch() -> list[ModelInfo]:
            assert source is not None  # built before `over` returns, so before anyone can ask
            return await source.list_models()

        catalog = cls(fetch, **options)
        source = build(catalog.model_error)
        return catalog, source

    def __init__(
        self,
        fetch: Callable[[], Awaitable[list[ModelInfo]]],
        *,
        ttl_s: float = 60.0,
        default_model: str | None = None,
        aliases: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        default_window: int = DEFAULT_CONTEXT_TOKENS,
    ) -> None:
        self._fetch = fetch
        self.ttl_s = ttl_s
        self.default_model = default_model or None
        self.aliases = dict(aliases or {})
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._refresh: asyncio.Task[Snapshot] | None = None
        self.default_window = default_window
        self._learned: dict[str, Learned] = {}
        self.hits = 0
        self.misses = 0

    def invalidate(self) -> None:
        """Forget the list (a model was loaded or unloaded, by us or by LM Studio's JIT loading)."""
        self._snapshot = None

    async def model_error(self, error: LLMError, since: float | None = None) -> LLMError:
        """LM Studio said a model is missing (or none is loaded): the cached list is out of date. Refresh it,
        once for calls that failed together, and return the error to raise: a missing model's lists the
        fresh ids. `since`: when the failed call began (`time.monotonic()`); a list fetched later is fresh."""
        snap = self._snapshot
        if since is None or snap is None or snap.fetched_at < since:
            self.invalidate()
        if not isinstance(error, ModelNotFoundError):
            return error
        try:
            fresh = await self.snapshot()
        except BridgeError:  # LM Studio cannot list its models now: the error as LM Studio gave it
            return error
        ids = [m.id for m in fresh.models]
        missing = ModelNotFoundError(error.model, ids, self.aliases)
        listed = fresh.by_id.get(error.model)
        if listed is not None and not listed.loaded:  # downloaded, but LM Studio would not load it (JIT off)
            missing.detail = (
                f"LM Studio refused model {error.model!r}: it is downloaded but not loaded. Load it with "
                f"POST /v1/models/{error.model}/load and retry. Available models: {', '.join(ids)}"
            )
        return missing

    async def snapshot(self) -> Snapshot:
        """The cached list, refreshed when older than the TTL."""
        snap = self._snapshot
        if snap is not None and self._clock() - snap.fetched_at < self._max_age(snap):
            self.hits += 1
            return snap
        self.misses += 1
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._load())
        # shield: one caller going away must not cancel the refresh the others wait for
        return await asyncio.shield(self._refresh)

    def _max_age(self, snap: Snapshot) -> float:
        return min(self.ttl_s, STALE_RETRY_S) if snap.stale else self.ttl_s

    async def _load(self) -> Snapshot:
        try:
            models = await self._fetch()
        except (LLMConnectionError, LLMTimeoutError):
            if self._snapshot is None:
                raise
            old = self._snapshot
            self._snapshot = Snapshot(old.models, old.by_id, self._clock(), stale=True)
            return self._snapshot
        snap = Snapshot(tuple(models), {m.id: m for m in models}, self._clock())
        self._snapshot = snap
        return snap

    async def resolve(self, requested: str | None, *, kind: ModelKind = "chat") -> ResolvedModel:
        """`None`/"default" -> DEFAULT_MODEL, else the first loaded LLM, else the first LLM.

        An alias maps to its model id. `kind="embedding"` asks for an embedding model instead.
        """
        snap = await self.snapshot()
        info = self._find(snap, requested, kind)
        return ResolvedModel(info.id, info, snap.stale)

    def window_of(self, model_id: str) -> ContextWindow:
        """The context window of a model, from what is known now (no request): what an engine told in an overflow
        answer (`learn_window`) while the model list still says what it said then, else the context the list
        says it is loaded with, else `default_window` (BRIDGE_CONTEXT_DEFAULT_TOKENS)."""
        info = self._snapshot.by_id.get(model_id) if self._snapshot is not None else None
        listed = info.loaded_context_length if info is not None else None
        learned = self._learned.get(model_id)
        if learned is not None and learned.listed != listed and listed is not None:
            del self._learned[model_id]  # the list changed since (the model was reloaded): it is newer
            learned = None
        if learned is not None:
            return ContextWindow(learned.tokens, "learned")
        if listed is not None:
            return ContextWindow(listed, "loaded")
        return ContextWindow(self.default_window, "default")

    def learn_window(self, model_id: str, tokens: int) -> ContextWindow:
        """An engine said the model's window (`ContextExceededError.n_ctx`): it holds until the model list says
        another loaded context than it says now. Returns the window from now on."""
        info = self._snapshot.by_id.get(model_id) if self._snapshot is not None else None
        self._learned[model_id] = Learned(tokens, info.loaded_context_length if info is not None else None)
        return self.window_of(model_id)

    def default_id(self, snap: Snapshot) -> str | None:
        """The id a chat request without `model` gets from this list, or None when no model fits."""
        try:
            return self._find(snap, None, "chat").id
        except ModelNotFoundError:
            return None

    def entries(self, snap: Snapshot) -> list[ModelEntry]:
        """The list as the gateway shows it, the default model marked."""
        default = self.default_id(snap)
        return [ModelEntry.of(m, default=m.id == default) for m in snap.models]

    def _find(self, snap: Snapshot, requested: str | None, kind: ModelKind) -> ModelInfo:
        name = (requested or "").strip()
        wanted = self.aliases.get(name, name)
        if wanted.lower() in DEFAULT_NAMES:
            wanted = self.aliases.get(self.default_model or "", self.default_model or "")
        if not wanted:
            info = self._pick_default(snap, kind)
        else:
            found = snap.by_id.get(wanted)
            if found is None:
                raise ModelNotFoundError(name or wanted, [m.id for m in snap.models], self.aliases)
            info = found
        if kind != "any" and (kind == "embedding") == info.can_chat:
            need = "an embedding model" if kind == "embedding" else "a chat (LLM/VLM) model"
            raise InvalidRequestError(
                f"Model {info.id!r} is a {info.type} model; this endpoint needs {need}",
                model=info.id,
                available_models=[m.id for m in snap.models if (kind == "embedding") != m.can_chat],
            )
        return info

    def _pick_default(self, snap: Snapshot, kind: ModelKind) -> ModelInfo:
        fits = [m for m in snap.models if (kind == "embedding") != m.can_chat]
        loaded = [m for m in fits if m.loaded]
        if loaded or fits:
            return (loaded or fits)[0]
        raise ModelNotFoundError("default", [m.id for m in snap.models], self.aliases)
