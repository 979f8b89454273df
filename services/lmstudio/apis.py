"""The host APIs the gateway speaks, as data: one `HostAPI` per kind of model server (LM Studio 0.4's REST
API, LM Studio 0.3's, llama.cpp's llama-server, any OpenAI-compatible server), each saying where its model
list is and what the server can do. A client detects its host's API once (`HOST_APIS`, richest first) and
asks the entry, never the name; adding a host type is one entry here (and its parser in `listing.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.lmstudio.answer import Answer
from services.lmstudio.listing import ModelInfo, parse_api_v0, parse_api_v1, parse_llamacpp, parse_openai


@dataclass(frozen=True, slots=True)
class HostAPI:
    """One kind of model server: how its models are listed and what it can do."""

    name: str  # as logs, `lmstudio-bridge check` and `LMStudioClient.models_api` show it
    title: str  # what it is, for people
    listing_path: str  # GET: the model list
    parse: Callable[[Any], list[ModelInfo] | None]  # the list's models, or None when the body is not this API's
    reports_load_state: bool  # the list says which models are loaded (a refetch after a JIT load tells something)
    loaded_context: str  # where the list says a loaded model's context length (docs; the parser reads it)
    load_path: str | None = None  # POST {"model", "ttl"}: load a model (None: the server cannot)
    unload_path: str | None = None  # POST {"instance_id"}: unload one loaded instance
    props_path: str | None = None  # GET: the server's settings, with the context one request gets
    tokenize_path: str | None = None  # POST {"content"}: the model's own tokenizer

    @property
    def loads_models(self) -> bool:
        """Models can be loaded and unloaded through this API."""
        return self.load_path is not None and self.unload_path is not None

    def models(self, response: Answer) -> list[ModelInfo] | None:
        """The models in an answer, or None when the answer says this server does not have the API
        (404/405, a body that is not JSON, or LM Studio's 200 `{"error": "Unexpected endpoint..."}`). Other
        failures never get here: the probe raises them (`errors.error_for_probe`), so a 401 or a 5xx never
        marks an API absent."""
        if response.status_code >= 400:
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        return self.parse(body)


API_V1 = HostAPI(
    "api-v1",
    "LM Studio 0.4+ REST API",
    "/api/v1/models",
    parse_api_v1,
    reports_load_state=True,
    loaded_context="`loaded_instances[].config.context_length`",
    load_path="/api/v1/models/load",
    unload_path="/api/v1/models/unload",
)
API_V0 = HostAPI(
    "api-v0",
    "LM Studio 0.3 REST API (beta)",
    "/api/v0/models",
    parse_api_v0,
    reports_load_state=True,
    loaded_context="`loaded_context_length` of a loaded model",
)
LLAMACPP = HostAPI(
    "llamacpp",
    "llama.cpp's llama-server",
    "/v1/models",
    parse_llamacpp,
    reports_load_state=True,
    loaded_context="`meta.n_ctx`; with one model, `/props` `default_generation_settings.n_ctx` (a slot's share)",
    props_path="/props",
    tokenize_path="/tokenize",
)
OPENAI = HostAPI(
    "openai",
    "OpenAI-compatible `/v1/models` (LM Studio's, any other server's)",
    "/v1/models",
    parse_openai,
    reports_load_state=False,
    loaded_context="not listed (`BRIDGE_CONTEXT_DEFAULT_TOKENS` until the engine says)",
)

HOST_APIS: tuple[HostAPI, ...] = (API_V1, API_V0, LLAMACPP, OPENAI)  # detection order: richest first
