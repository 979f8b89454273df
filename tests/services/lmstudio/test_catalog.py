"""Model catalog: caching, single flight, resolution rules, stale fallback."""

from __future__ import annotations

import asyncio

import pytest

from services.context import ContextWindow
from services.errors import InvalidRequestError, LLMConnectionError, ModelNotFoundError
from services.lmstudio import ModelCatalog, ModelInfo

EMBED = ModelInfo("nomic-embed", "embedding", loaded=True)
SMALL = ModelInfo("qwen/qwen3-4b", "llm", loaded=False, tool_use=True)
BIG = ModelInfo("qwen/qwen3-coder-30b", "llm", loaded=True, tool_use=True)
VISION = ModelInfo("google/gemma-3-4b", "vlm", loaded=False)


class FakeUpstream:
    """The model list's source; with `held`, every call waits until `release()` (`entered` is set once a call
    has begun): a test knows the call is in flight without guessing how long it takes."""

    def __init__(self, models: list[ModelInfo], held: bool = False) -> None:
        self.models = models
        self.calls = 0
        self.down = False
        self.entered = asyncio.Event()
        self._gate = asyncio.Event()
        if not held:
            self._gate.set()

    def release(self) -> None:
        self._gate.set()

    async def __call__(self) -> list[ModelInfo]:
        self.calls += 1
        self.entered.set()
        await self._gate.wait()
        if self.down:
            raise LLMConnectionError("LM Studio is not reachable")
        return list(self.models)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_cache_hit_makes_no_upstream_call() -> None:
    upstream = FakeUpstream([EMBED, SMALL])
    catalog = ModelCatalog(upstream, ttl_s=60)
    await catalog.resolve("qwen/qwen3-4b")
    for _ in range(100):
        await catalog.resolve("qwen/qwen3-4b")
    assert upstream.calls == 1
    assert catalog.hits == 100 and catalog.misses == 1


async def test_expiry_refreshes() -> None:
    upstream, clock = FakeUpstream([SMALL]), Clock()
    catalog = ModelCatalog(upstream, ttl_s=60, clock=clock)
    await catalog.snapshot()
    clock.now += 59.9
    await catalog.snapshot()
    assert upstream.calls == 1
    clock.now += 0.2
    upstream.models = [SMALL, BIG]
    snap = await catalog.snapshot()
    assert upstream.calls == 2
    assert [m.id for m in snap.models] == [SMALL.id, BIG.id]


async def test_thousand_concurrent_misses_share_one_upstream_call() -> None:
    upstream, clock = FakeUpstream([SMALL], held=True), Clock()
    catalog = ModelCatalog(upstream, ttl_s=60, clock=clock)
    misses = asyncio.gather(*(catalog.resolve(None) for _ in range(1000)))
    await upstream.entered.wait()  # every caller has asked before the one call answers
    upstream.release()
    results = await misses
    assert upstream.calls == 1
    assert {r.id for r in results} == {SMALL.id}
    clock.now += 61  # expired: again 1,000 callers, one call
    await asyncio.gather(*(catalog.resolve(SMALL.id) for _ in range(1000)))
    assert upstream.calls == 2


async def test_default_skips_embedding_and_prefers_loaded_llm() -> None:
    catalog = ModelCatalog(FakeUpstream([EMBED, SMALL, BIG]))
    assert (await catalog.resolve(None)).id == BIG.id
    assert (await catalog.resolve("default")).id == BIG.id


async def test_default_falls_back_to_first_llm_when_none_loaded() -> None:
    catalog = ModelCatalog(FakeUpstream([EMBED, VISION, SMALL]))
    assert (await catalog.resolve(None)).id == VISION.id


async def test_default_model_setting_and_aliases() -> None:
    catalog = ModelCatalog(
        FakeUpstream([EMBED, SMALL, BIG]), default_model="small", aliases={"small": SMALL.id, "coding": BIG.id}
    )
    assert (await catalog.resolve(None)).id == SMALL.id
    assert (await catalog.resolve("coding")).id == BIG.id


async def test_unknown_model_lists_ids_and_aliases() -> None:
    catalog = ModelCatalog(FakeUpstream([EMBED, SMALL]), aliases={"coding": SMALL.id})
    with pytest.raises(ModelNotFoundError) as info:
        await catalog.resolve("nope/model")
    assert info.value.available_models == [EMBED.id, SMALL.id]
    assert info.value.problem()["aliases"] == {"coding": SMALL.id}
    assert info.value.problem()["code"] == "model_not_found"


async def test_embedding_model_is_refused_for_chat_and_chosen_for_embeddings() -> None:
    catalog = ModelCatalog(FakeUpstream([EMBED, SMALL]))
    with pytest.raises(InvalidRequestError):
        await catalog.resolve(EMBED.id)
    assert (await catalog.resolve(None, kind="embedding")).id == EMBED.id


async def test_no_chat_model_at_all() -> None:
    catalog = ModelCatalog(FakeUpstream([EMBED]))
    with pytest.raises(ModelNotFoundError):
        await catalog.resolve(None)


async def test_stale_list_used_when_lmstudio_is_down() -> None:
    upstream, clock = FakeUpstream([SMALL]), Clock()
    catalog = ModelCatalog(upstream, ttl_s=60, clock=clock)
    assert not (await catalog.resolve(SMALL.id)).stale
    upstream.down = True
    clock.now += 120
    resolved = await catalog.resolve(SMALL.id)
    assert resolved.stale and resolved.id == SMALL.id
    with pytest.raises(ModelNotFoundError):
        await catalog.resolve("other")
    upstream.down = False
    clock.now += 10
    assert not (await catalog.resolve(SMALL.id)).stale


async def test_down_without_any_list_raises() -> None:
    upstream = FakeUpstream([SMALL])
    upstream.down = True
    with pytest.raises(LLMConnectionError):
        await ModelCatalog(upstream).resolve(None)


async def test_one_cancelled_waiter_does_not_cancel_the_shared_refresh() -> None:
    upstream = FakeUpstream([SMALL], held=True)
    catalog = ModelCatalog(upstream)
    first = asyncio.ensure_future(catalog.snapshot())
    second = asyncio.ensure_future(catalog.snapshot())
    await upstream.entered.wait()  # the shared refresh is in flight, both waiting on it
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    upstream.release()
    assert (await second).models == (SMALL,)
    assert upstream.calls == 1


async def test_entries_mark_the_default_and_show_the_state() -> None:
    catalog = ModelCatalog(FakeUpstream([EMBED, SMALL, BIG]), default_model="small", aliases={"small": SMALL.id})
    snap = await catalog.snapshot()
    assert catalog.default_id(snap) == SMALL.id
    entries = {e.id: e for e in catalog.entries(snap)}
    assert [e.id for e in entries.values() if e.default] == [SMALL.id]
    assert entries[BIG.id].state == "loaded" and entries[SMALL.id].state == "not-loaded"
    assert (entries[EMBED.id].object, entries[EMBED.id].owned_by, entries[EMBED.id].type) == (
        "model",
        "lmstudio",
        "embedding",
    )


async def test_no_default_when_no_chat_model() -> None:
    catalog = ModelCatalog(FakeUpstream([EMBED]))
    snap = await catalog.snapshot()
    assert catalog.default_id(snap) is None
    assert [e.default for e in catalog.entries(snap)] == [False]


# --- the context window (issue 28) ---------------------------------------------------------------------


async def test_window_is_the_loaded_context_else_the_default() -> None:
    loaded = ModelInfo("m", "llm", loaded=True, max_context_length=32768, loaded_context_length=8192)
    catalog = ModelCatalog(FakeUpstream([loaded, SMALL]), default_window=3000)
    assert catalog.window_of("m") == ContextWindow(3000, "default")  # nothing fetched yet: nothing known
    await catalog.resolve("m")
    assert catalog.window_of("m") == ContextWindow(8192, "loaded")
    assert catalog.window_of(SMALL.id) == ContextWindow(3000, "default")  # not loaded: the list does not say
    assert catalog.window_of("unknown") == ContextWindow(3000, "default")
    assert ModelCatalog(FakeUpstream([])).window_of("m") == ContextWindow(4096, "default")


async def test_a_learned_window_holds_until_the_list_says_another() -> None:
    """The engine holds less than it lists: what it said wins, until the model is reloaded with another context."""
    clock = Clock()
    upstream = FakeUpstream([ModelInfo("m", "llm", loaded=True, loaded_context_length=8192)])
    catalog = ModelCatalog(upstream, ttl_s=10, clock=clock)
    await catalog.resolve("m")
    assert catalog.learn_window("m", 4096) == ContextWindow(4096, "learned")
    clock.now += 11
    await catalog.resolve("m")  # refreshed, the list still says 8192: the engine's word stands
    assert catalog.window_of("m") == ContextWindow(4096, "learned")
    upstream.models = [ModelInfo("m", "llm", loaded=True, loaded_context_length=16384)]  # reloaded
    clock.now += 11
    await catalog.resolve("m")
    assert catalog.window_of("m") == ContextWindow(16384, "loaded")


async def test_a_window_learned_of_an_unlisted_context_stays_until_the_list_tells_one() -> None:
    clock = Clock()
    upstream = FakeUpstream([ModelInfo("m", "llm", loaded=False)])
    catalog = ModelCatalog(upstream, ttl_s=10, clock=clock)
    await catalog.resolve("m")
    catalog.learn_window("m", 2048)
    assert catalog.window_of("m") == ContextWindow(2048, "learned")
    upstream.models = [ModelInfo("m", "llm", loaded=True, loaded_context_length=4096)]  # JIT-loaded since
    clock.now += 11
    await catalog.resolve("m")
    assert catalog.window_of("m") == ContextWindow(4096, "loaded")
