"""The model lists of LM Studio's three API generations and llama.cpp's, normalised to `ModelInfo`.

`/api/v1/models` (0.4+), `/api/v0/models` (the older REST API), llama.cpp's `/v1/models` (entries with
`owned_by: "llamacpp"` and a `meta` object with `n_ctx`) and OpenAI's `/v1/models`. Which server has which
list, and what else it can do, is `apis.py`'s table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import Field

ModelType = Literal["llm", "vlm", "embedding"]
HostState = Literal["loaded", "available", "unreachable"]


@dataclass(frozen=True, slots=True)
class ModelHost:
    """A host that has a model, and the model's state there."""

    name: str
    state: HostState
    loaded_context_length: Annotated[
        int | None, Field(description="The context the model is loaded with on this host, in tokens")
    ] = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model, normalised from whichever model-list API the server has."""

    id: str
    type: ModelType
    loaded: bool
    max_context_length: int | None = None  # the most the model can take (what it was trained with)
    tool_use: bool = False
    hosts: tuple[ModelHost, ...] = ()  # where it is: filled in when the hosts' lists are merged
    # the context it is loaded with (every request must fit in it); None: not loaded, or the server does not say.
    # Merged over hosts: the smallest of the hosts that have it loaded (a call may go to any of them)
    loaded_context_length: int | None = None

    @property
    def can_chat(self) -> bool:
        return self.type != "embedding"


def parse_api_v1(body: Any) -> list[ModelInfo] | None:
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        return None
    out = []
    for m in models:
        caps = m.get("capabilities") or {}
        kind: ModelType = "embedding" if m.get("type") == "embedding" else "llm"
        if kind == "llm" and caps.get("vision"):
            kind = "vlm"
        out.append(
            ModelInfo(
                id=str(m["key"]),
                type=kind,
                loaded=bool(m.get("loaded_instances")),
                max_context_length=m.get("max_context_length"),
                tool_use=bool(caps.get("trained_for_tool_use")),
                loaded_context_length=_smallest(
                    _object(i, "config").get("context_length") for i in _list(m, "loaded_instances")
                ),
            )
        )
    return out


def parse_api_v0(body: Any) -> list[ModelInfo] | None:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or (data and "state" not in data[0]):
        return None
    kinds: dict[str, ModelType] = {"embeddings": "embedding", "embedding": "embedding", "vlm": "vlm"}
    return [
        ModelInfo(
            id=str(m["id"]),
            type=kinds.get(str(m.get("type")), "llm"),
            loaded=m.get("state") == "loaded",
            max_context_length=m.get("max_context_length"),
            tool_use="tool_use" in (m.get("capabilities") or []),
            loaded_context_length=_tokens(m.get("loaded_context_length")) if m.get("state") == "loaded" else None,
        )
        for m in data
    ]


def parse_llamacpp(body: Any) -> list[ModelInfo] | None:
    """llama.cpp's `/v1/models`: None unless its entries are llama-server's."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not data or not all(isinstance(m, dict) and _is_llamacpp(m) for m in data):
        return None
    return [_llamacpp_entry(m) for m in data]


def parse_openai(body: Any) -> list[ModelInfo] | None:
    """OpenAI's `/v1/models` (and LM Studio's): ids only, nothing about state or context."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return [ModelInfo(id=str(m["id"]), type=_kind_by_name(m), loaded=False) for m in data]


def _kind_by_name(m: dict[str, Any]) -> ModelType:
    return "embedding" if "embed" in str(m["id"]).lower() else "llm"


def _llamacpp_entry(m: dict[str, Any]) -> ModelInfo:
    kind = _kind_by_name(m)
    meta = _object(m, "meta")
    if kind == "llm" and "image" in (_object(m, "architecture").get("input_modalities") or []):
        kind = "vlm"
    # a single-model llama-server serves exactly what it lists; in router mode (several models) each entry
    # carries `status: {"value": "loaded" | "loading" | "unloaded" | ...}`
    status = m.get("status")
    loaded = status.get("value") == "loaded" if isinstance(status, dict) else True
    # `n_ctx`: the context it runs with (all slots together); `n_ctx_train`: the most the model takes
    n_ctx = _tokens(meta.get("n_ctx"))
    return ModelInfo(
        id=str(m["id"]),
        type=kind,
        loaded=loaded,
        max_context_length=_tokens(meta.get("n_ctx_train")) or n_ctx,
        loaded_context_length=n_ctx if loaded else None,
    )


def with_props(models: list[ModelInfo], props: Any) -> list[ModelInfo]:
    """llama.cpp's `/props` refines a single loaded model's window: `default_generation_settings.n_ctx` is what
    ONE request (slot) gets, which is less than `meta.n_ctx` when the slots split the context."""
    settings = props.get("default_generation_settings") if isinstance(props, dict) else None
    n_ctx = _tokens(settings.get("n_ctx")) if isinstance(settings, dict) else None
    if n_ctx is None or len(models) != 1 or not models[0].loaded:
        return models
    return [replace(models[0], loaded_context_length=n_ctx)]


def _tokens(value: Any) -> int | None:
    """A token count the server gave: a positive integer, else None."""
    return value if type(value) is int and value > 0 else None


def _smallest(values: Iterable[Any]) -> int | None:
    return min(filter(None, map(_tokens, values)), default=None)


def _list(m: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = m.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _object(m: dict[str, Any], key: str) -> dict[str, Any]:
    value = m.get(key)
    return value if isinstance(value, dict) else {}


def _is_llamacpp(m: dict[str, Any]) -> bool:
    """A `/v1/models` entry of llama.cpp's llama-server: `owned_by: "llamacpp"` and/or `meta.n_ctx`."""
    return m.get("owned_by") == "llamacpp" or "n_ctx" in _object(m, "meta")
