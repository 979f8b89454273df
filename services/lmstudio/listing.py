"""Model listing for LM Studio's three API generations, normalised to `ModelInfo`.

`/api/v1/models` (0.4+), `/api/v0/models` (the older REST API) and OpenAI's `/v1/models`, richest first.
llama.cpp's `llama-server` has only `/v1/models`; its entries (`owned_by: "llamacpp"`, a `meta` object with
`n_ctx`) say more than OpenAI's, and are read as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from services.lmstudio.answer import Answer

ModelType = Literal["llm", "vlm", "embedding"]
HostState = Literal["loaded", "available", "unreachable"]


@dataclass(frozen=True, slots=True)
class ModelHost:
    """A host that has a model, and the model's state there."""

    name: str
    state: HostState


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model, normalised from whichever model-list API the server has."""

    id: str
    type: ModelType
    loaded: bool
    max_context_length: int | None = None
    tool_use: bool = False
    hosts: tuple[ModelHost, ...] = ()  # where it is: filled in when the hosts' lists are merged

    @property
    def can_chat(self) -> bool:
        return self.type != "embedding"


def _parse_api_v1(body: Any) -> list[ModelInfo] | None:
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
            )
        )
    return out


def _parse_api_v0(body: Any) -> list[ModelInfo] | None:
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
        )
        for m in data
    ]


def _parse_openai(body: Any) -> list[ModelInfo] | None:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return [_openai_entry(m) for m in data]


def _openai_entry(m: dict[str, Any]) -> ModelInfo:
    kind: ModelType = "embedding" if "embed" in str(m["id"]).lower() else "llm"
    if not _is_llamacpp(m):  # OpenAI's list (and LM Studio's) says nothing about state or context
        return ModelInfo(id=str(m["id"]), type=kind, loaded=False)
    n_ctx = _object(m, "meta").get("n_ctx")
    if kind == "llm" and "image" in (_object(m, "architecture").get("input_modalities") or []):
        kind = "vlm"
    # a single-model llama-server serves exactly what it lists; in router mode (several models) each entry
    # carries `status: {"value": "loaded" | "loading" | "unloaded" | ...}`
    status = m.get("status")
    loaded = status.get("value") == "loaded" if isinstance(status, dict) else True
    context = n_ctx if type(n_ctx) is int and n_ctx > 0 else None
    return ModelInfo(id=str(m["id"]), type=kind, loaded=loaded, max_context_length=context)


def _object(m: dict[str, Any], key: str) -> dict[str, Any]:
    value = m.get(key)
    return value if isinstance(value, dict) else {}


def _is_llamacpp(m: dict[str, Any]) -> bool:
    """A `/v1/models` entry of llama.cpp's llama-server: `owned_by: "llamacpp"` and/or `meta.n_ctx`."""
    return m.get("owned_by") == "llamacpp" or "n_ctx" in _object(m, "meta")


@dataclass(frozen=True, slots=True)
class ModelAPI:
    """One model-list API: its name (as `LMStudioClient.models_api` reports it), path and parser."""

    name: str
    path: str
    parse: Callable[[Any], list[ModelInfo] | None]

    def models(self, response: Answer) -> list[ModelInfo] | None:
        """The models in an answer, or None when the answer says this server does not have the API
        (a 4xx, a body that is not JSON, or LM Studio's 200 `{"error": "Unexpected endpoint..."}`)."""
        if response.status_code >= 400:
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        return self.parse(body)


MODEL_APIS = (
    ModelAPI("api-v1", "/api/v1/models", _parse_api_v1),
    ModelAPI("api-v0", "/api/v0/models", _parse_api_v0),
    ModelAPI("openai", "/v1/models", _parse_openai),
)
