"""The mock LM Studio server; the script and fault formats are documented in the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.lmstudio_bodies import lmstudio_body

Json = dict[str, Any]


def recorded(name: str, **values: str) -> Response:
    """A recorded LM Studio answer (tests/data/lmstudio_bodies.json), placeholders filled from `values`."""
    status, body = lmstudio_body(name, **values)
    return JSONResponse(body, status_code=status)


LOG_LIMIT = 10_000
POLL_S = 0.02
BROKEN_ARGS = '{"path": '
SCRIPT_TAG = "[[mock "
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
DEFAULT_LOADED_CONTEXT = 4096  # LM Studio loads a model with 4,096 tokens unless told otherwise


@dataclass
class Model:
    id: str
    type: str  # "llm" | "vlm" | "embeddings"
    loaded: bool
    max_context_length: int
    tool_use: bool
    ttl: int | None = None
    # LM Studio docs, REST API "List your models": unload takes `loaded_instances[].id`, which need not be the
    # key (a second instance of a model is "<key>:2"); `instance_id` sets the first instance's id
    instance_id: str | None = None
    instances: list[str] = field(default_factory=list)
    jit_loaded: bool = False  # loaded on demand by a request (Auto-Evict unloads only these)
    # the context window (issue 28; see "context window" below): what it holds (None: no limit), what its
    # listings say it holds (None: `context_length`, else LM Studio's default 4096), how it overflows
    context_length: int | None = None
    listed_context: int | None = None
    overflow: str | None = None

    def listed_window(self) -> int:
        """The loaded context the model lists report."""
        return self.listed_context or self.context_length or DEFAULT_LOADED_CONTEXT

    def __post_init__(self) -> None:
        if self.loaded and not self.instances:
            self.instances = [self.instance_id or self.id]

    def add_instance(self) -> str:
        """Load one more instance (LM Studio's load makes a new instance even when one exists): its id."""
        new, n = self.instance_id or self.id, 1
        while new in self.instances:
            n += 1
            new = f"{self.id}:{n}"
        self.instances.append(new)
        self.loaded = True
        return new

    def drop(self, instance: str | None = None) -> None:
        """Unload one instance, or all of them."""
        self.instances = [] if instance is None else [i for i in self.instances if i != instance]
        self.loaded = bool(self.instances)
        self.jit_loaded = self.jit_loaded and self.loaded


DEFAULT_MODELS = [
    Model("text-embedding-nomic-embed-text-v1.5", "embeddings", True, 2048, False),
    Model("qwen/qwen3-4b", "llm", True, 32768, True),
    Model("mistralai/magistral-small-2509", "llm", False, 131072, True),
    Model("qwen/qwen3-coder-30b", "llm", False, 262144, True),
    Model("google/gemma-3-4b", "vlm", False, 8192, False),
]


def parse_models(items: list[Json]) -> list[Model]:
    """Models from the ``--models`` file format (also what ``POST /_mock/config {"models": [...]}`` takes)."""
    return [
        Model(
            m["id"],
            m["type"],
            bool(m["loaded"]),
            int(m["max_context_length"]),
            bool(m["tool_use"]),
            instance_id=m.get("instance_id"),
            context_length=m.get("context_length"),
            listed_context=m.get("listed_context"),
            overflow=m.get("overflow"),
        )
        for m in items
    ]


def load_models(path: str | None) -> list[Model]:
    if path is None:
        return copy.deepcopy(DEFAULT_MODELS)
    with open(path, encoding="utf-8") as f:
        return parse_models(json.load(f))


CURRENT, OLDER = "current", "0.3"
VERSIONS = {"current": CURRENT, "0.4": CURRENT, "0.3": OLDER}


@dataclass
class Options:
    """How the mock behaves; set by the command line, changed by ``POST /_mock/config``, restored by reset."""

    lmstudio: str = CURRENT  # "current" (0.4) or "0.3": which shapes the answers take
    jit: bool = True  # load a requested model that is not loaded (LM Studio's JIT loading, on by default)
    jit_load_ms: float = 0  # how long such a load takes
    auto_evict: bool = True  # a JIT load first unloads the models an earlier JIT load brought in
    separate_reasoning: bool = False  # reasoning goes to `reasoning_content` instead of `<think>` in content
    pin_loaded_model: bool = False  # answers come from the first loaded LLM whatever `model` says

    def update(self, values: Json) -> None:
        for key, value in values.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown mock option {key!r}")
            if key == "lmstudio":
                if str(value) not in VERSIONS:
                    raise ValueError(f"lmstudio must be one of {sorted(VERSIONS)}")
                value = VERSIONS[str(value)]
            setattr(self, key, value)


class Aborted(Exception):
    """The client went away before the answer was ready."""


@dataclass
class Call:
    request: Request
    entry: Json
    body: Any
    flags: set[str] = field(default_factory=set)
    script: Json = field(default_factory=dict)


# --- script helpers ---------------------------------------------------------------------------------


def text_of(content: Any) -> str:
    """Message content as text (a string or a list of OpenAI content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def scan_scripts(text: str) -> tuple[list[Json], str]:
    """All ``[[mock {...}]]`` objects in text, and the text with them removed."""
    found: list[Json] = []
    rest: list[str] = []
    pos = 0
    decoder = json.JSONDecoder()
    while (start := text.find(SCRIPT_TAG, pos)) >= 0:
        try:
            obj, end = decoder.raw_decode(text, start + len(SCRIPT_TAG))
        except json.JSONDecodeError:
            rest.append(text[pos : start + len(SCRIPT_TAG)])
            pos = start + len(SCRIPT_TAG)
            continue
        if isinstance(obj, dict) and text.startswith("]]", end):
            found.append(obj)
            rest.append(text[pos:start])
            pos = end + 2
        else:
            rest.append(text[pos : start + len(SCRIPT_TAG)])
            pos = start + len(SCRIPT_TAG)
    rest.append(text[pos:])
    return found, "".join(rest)


def find_script(body: Any) -> Json:
    if not isinstance(body, dict):
        return {}
    texts: list[str] = []
    if isinstance(body.get("messages"), list):
        texts = [
            text_of(m.get("content"))
            for m in body["messages"]
            if isinstance(m, dict) and m.get("role") in ("user", "system")
        ]
    elif isinstance(body.get("prompt"), str):
        texts = [body["prompt"]]
    scripts = [s for t in texts for s in scan_scripts(t)[0]]
    return scripts[-1] if scripts else {}


_CALL_ID = re.compile(r"^call_(\d+)_\d+$")


def rounds_done(messages: list[Json]) -> int:
    """Rounds of scripted calls the conversation has had: its assistant messages with calls, or, when a gateway
    left older rounds out to fit a context window, one more than the round in the last of the mock's call ids."""
    rounds = [m for m in messages if m.get("role") == "assistant" and m.get("tool_calls")]
    numbers = [
        int(match.group(1))
        for m in rounds
        for c in m["tool_calls"]
        if isinstance(c, dict) and (match := _CALL_ID.match(str(c.get("id")))) is not None
    ]
    return max(len(rounds), max(numbers, default=-1) + 1)


def scripted_calls(body: Json, script: Json, done: int) -> list[Json]:
    """The calls the script makes in this round (tools are offered)."""
    if isinstance(script.get("forever"), dict):
        return [script["forever"]]
    if done < len(script.get("calls") or []):
        return list(script["calls"][done])
    if body.get("tool_choice") == "required" and done < len(script.get("required_calls") or []):
        return list(script["required_calls"][done])  # the engine's grammar forces a call
    return []


def plan_chat(body: Json, script: Json, malformed: bool) -> tuple[str | None, list[Json]]:
    """Decide the answer: (text, []) or (the script's ``say`` text or None, tool calls in OpenAI shape)."""
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    done = rounds_done(messages)
    wanted: list[Json] = scripted_calls(body, script, done) if tools else []
    if tools and malformed and not wanted:
        wanted = [{"name": tools[0].get("function", {}).get("name", "tool")}]
    calls = []
    for i, c in enumerate(wanted):
        args = c.get("arguments", {})
        args_s = args if isinstance(args, str) else json.dumps(args)
        calls.append(
            {
                "id": f"call_{done}_{i}",
                "type": "function",
                "function": {"name": c.get("name", ""), "arguments": BROKEN_ARGS if malformed else args_s},
            }
        )
    if calls:
        # one message can carry text beside its tool calls (the OpenAI format allows both; models do it)
        say = script.get("say")
        return (say if isinstance(say, str) else None), calls
    tool_outputs = [text_of(m.get("content")) for m in messages if m.get("role") == "tool"]
    if tool_outputs and isinstance(script.get("final"), str):  # the answer after the calls, instead of an echo
        return script["final"], []
    if tool_outputs:
        return "Based on the tools: " + "\n".join(tool_outputs), []
    if isinstance(script.get("answer"), str):
        return script["answer"], []
    users = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    last = scan_scripts(users[-1])[1].strip() if users else ""
    return f"Mock answer to: {last}", []


def cut_at_max_tokens(
    body: Json, usage: Json, text: str | None, calls: list[Json]
) -> tuple[str | None, list[Json], str]:
    """The answer as a model under `max_tokens` gives it: cut where the budget ends (finish `length`)."""
    limit = body.get("max_tokens")
    if isinstance(limit, int) and limit > 0 and usage["completion_tokens"] > limit:
        usage["completion_tokens"], usage["total_tokens"] = limit, usage["prompt_tokens"] + limit
        return (text or "")[: limit * 4], [], "length"
    return text, calls, "tool_calls" if calls else "stop"


def count_tokens(text: str) -> int:
    return len(text) // 4 + 1


def embedding_of(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest[:8]]


def pieces(text: str, n: int) -> list[str]:
    """Split text into up to n non-empty pieces (at least 2 when it has 2+ characters)."""
    if len(text) < 2:
        return [text]
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)]


class CutResponse(Response):
    """Starts an answer, sends part of it, then returns: uvicorn drops the connection."""

    def __init__(self, parts: list[bytes], media_type: str, length: int | None = None) -> None:
        super().__init__(media_type=media_type)
        self.parts = parts
        del self.headers["content-length"]
        if length is not None:  # announce the full length, send less
            self.headers["content-length"] = str(length)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        for p in self.parts:
            await send({"type": "http.response.body", "body": p, "more_body": True})


# --- context window (issue 28) ---------------------------------------------------------------------
# A model with `context_length` holds that many tokens: a chat request whose prompt (counted by `prompt_tokens`)
# is that many or more gets the model's `overflow` answer, and an answer is cut where the window ends. The
# bodies are the recorded ones of tests/data/context_overflow.json.

OVERFLOWS_FILE = Path(__file__).resolve().parents[1] / "data" / "context_overflow.json"
OVERFLOW_SHAPES = ("n_keep_400", "n_keep_200", "empty_200", "llama_400")


def prompt_tokens(body: Json) -> int:
    """The mock's token count of a chat request: ceil(characters / 4) of the JSON of its `messages` plus the JSON
    of its `tools` (when it has any), `json.dumps` with its defaults (non-ASCII as \\uXXXX escapes). Both the
    window check and `usage.prompt_tokens` use it."""
    chars = len(json.dumps(body.get("messages")))
    if body.get("tools"):
        chars += len(json.dumps(body["tools"]))
    return -(-chars // 4)


def within_window(body: Json, model: Model, prompt: int) -> Json:
    """The request's `max_tokens`, lowered to what is left of the model's window after the prompt."""
    if model.context_length is None:
        return body
    room = model.context_length - prompt
    limit = body.get("max_tokens")
    return {"max_tokens": room if not isinstance(limit, int) or limit <= 0 else min(limit, room)}


def head_of(call: Call, name: str) -> Json:
    return {
        "id": f"chatcmpl-{call.entry['id']}",
        "created": int(time.time()),
        "model": name,
        "system_fingerprint": name,
    }


def recorded_overflow(shape: str, n_prompt: int, n_ctx: int) -> tuple[int, Json]:
    """The status and body of a recorded overflow answer, with this request's numbers."""
    entry = json.loads(OVERFLOWS_FILE.read_text())[shape]
    return int(entry["status"]), _filled(entry.get("template", entry["body"]), {"n_prompt": n_prompt, "n_ctx": n_ctx})


def _filled(value: Any, numbers: dict[str, int]) -> Any:
    if isinstance(value, dict):
        return {k: _filled(v, numbers) for k, v in value.items()}
    if isinstance(value, str):
        for name, number in numbers.items():
            if value == "{" + name + "}":
                return number
            value = value.replace("{" + name + "}", str(number))
    return value


def llamacpp_not_found() -> Response:
    """llama-server's answer to a path it does not have."""
    return JSONResponse({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}, 404)


# --- the application --------------------------------------------------------------------------------


Handler = Callable[[Call], Awaitable[Response]]


class MockServer:
    def __init__(self, models: list[Model], api: str = "v1", options: Options | None = None) -> None:
        self.initial = copy.deepcopy(models)
        self.models = copy.deepcopy(models)
        self.api = api
        self.initial_options = options or Options()
        self.options = copy.copy(self.initial_options)
        self.faults: list[Json] = []
        self.log: deque[Json] = deque(maxlen=LOG_LIMIT)
        self.ids = itertools.count(1)
        self.gates: dict[str, asyncio.Event] = {}  # script "hold": released by POST /_mock/release
        self.held: dict[str, int] = {}  # requests waiting at each gate now
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/v1/models"): self.openai_models,
            ("POST", CHAT): self.chat,
            ("POST", COMPLETIONS): self.completions,
            ("POST", "/v1/embeddings"): self.embeddings,
        }
        if api in ("v0", "v1"):
            self.routes[("GET", "/api/v0/models")] = self.v0_models
        if api == "llamacpp":
            self.routes[("GET", "/v1/models")] = self.llamacpp_models
            self.routes[("GET", "/props")] = self.props
        if api == "v1":
            self.routes[("GET", "/api/v1/models")] = self.v1_models
            self.routes[("POST", "/api/v1/models/load")] = self.load
            self.routes[("POST", "/api/v1/models/unload")] = self.unload
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
        self.app = Starlette(routes=[Route("/{path:path}", self.dispatch, methods=methods)])

    @property
    def current(self) -> bool:
        return self.options.lmstudio == CURRENT

    # --- plumbing

    async def dispatch(self, request: Request) -> Response:
        if request.url.path.startswith("/_mock/"):
            return await self.control(request)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        entry: Json = {
            "id": next(self.ids),
            "method": request.method,
            "path": request.url.path,
            "headers": dict(request.headers),  # names in lower case
            "body": body,
            "aborted": False,
            "status": None,
            "started": time.time(),
            "ended": None,
        }
        self.log.append(entry)
        try:
            response = await self.handle(Call(request, entry, body))
        except Aborted:
            entry["aborted"] = True
            entry["ended"] = time.time()
            return Response(status_code=499)
        entry["status"] = response.status_code
        if not isinstance(response, StreamingResponse | CutResponse):
            entry["ended"] = time.time()
        return response

    async def handle(self, call: Call) -> Response:
        method, path = call.request.method, call.request.url.path
        if path in (CHAT, COMPLETIONS):
            call.script = find_script(call.body)
        faults = [f for f in (self.pop_fault(path), call.script.get("fault")) if isinstance(f, dict)]
        if isinstance(call.script.get("delay_ms"), int | float):
            await self.wait(call, call.script["delay_ms"] / 1000)
        if isinstance(call.script.get("hold"), str):
            await self.hold(call, call.script["hold"])
        for fault in faults:
            early = await self.apply_fault(call, fault)
            if early is not None:
                return early
        handler = self.routes.get((method, path))
        if handler is None and self.api == "llamacpp":
            return llamacpp_not_found()
        if handler is None:
            return recorded("unknown_endpoint", method=method, path=path)
        if method == "POST" and not isinstance(call.body, dict):
            return self.bad_request("The request body must be a JSON object")
        response = await handler(call)
        if "cut_stream" in call.flags and not isinstance(response, StreamingResponse | CutResponse):
            call.entry["ended"] = time.time()
            data = bytes(response.body)
            return CutResponse([data[: len(data) // 2]], response.media_type or "", len(data))
        return response

    async def apply_fault(self, call: Call, fault: Json) -> Response | None:
        """Carry out one fault: the answer that replaces the normal one, or None (waited, or flagged)."""
        kind = fault.get("kind")
        if kind == "status":
            return self.status_fault(fault)
        if kind == "malformed_json":
            return Response(b'{"id": "chatcmpl-broken", "choices": [', media_type="application/json")
        if kind == "delay":
            await self.wait(call, float(fault.get("ms", 0)) / 1000)
        elif kind == "hang":
            await self.wait(call, None)
        elif kind == "unload":
            model = self.find(self.body_model(call))
            if model is not None:
                model.drop()
            call.flags.add("unknown_model")
        elif isinstance(kind, str):
            call.flags.add(kind)
        return None

    def pop_fault(self, path: str) -> Json | None:
        for i, fault in enumerate(self.faults):
            if fault.get("path") in (None, path):
                return self.faults.pop(i)
        return None

    async def wait(self, call: Call, seconds: float | None) -> None:
        """Sleep (forever when None) unless the client disconnects first, which raises Aborted."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            if await call.request.is_disconnected():
                raise Aborted
            left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            await asyncio.sleep(max(left, 0))

    async def hold(self, call: Call, name: str) -> None:
        """Wait at gate `name` until it is released (``POST /_mock/release``), or raise Aborted when the client
        disconnects first. A released gate lets every later request through (until reset)."""
        gate = self.gates.setdefault(name, asyncio.Event())
        self.held[name] = self.held.get(name, 0) + 1
        try:
            while not gate.is_set():
                if await call.request.is_disconnected():
                    raise Aborted
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gate.wait(), POLL_S)
        finally:
            self.held[name] -= 1
            if not self.held[name]:
                del self.held[name]

    def release_gates(self) -> None:
        for gate in self.gates.values():
            gate.set()  # nothing stays held across a reset
        self.gates = {}

    @staticmethod
    def status_fault(fault: Json) -> Response:
        status = int(fault.get("status", 500))
        body = fault.get("body") or {"error": {"message": f"Mock fault: HTTP {status}", "type": "server_error"}}
        headers = {"Retry-After": str(fault["retry_after"])} if fault.get("retry_after") is not None else {}
        return JSONResponse(body, status_code=status, headers=headers)

    async def control(self, request: Request) -> Response:
        key = (request.method, request.url.path)
        if key == ("GET", "/_mock/health"):
            return JSONResponse({"ok": True})
        if key == ("POST", "/_mock/faults"):
            body = await request.json()
            self.faults.extend(body.get("faults", []))
            return JSONResponse({"queued": len(self.faults)})
        if key == ("DELETE", "/_mock/faults"):
            self.faults.clear()
            return JSONResponse({"queued": 0})
        if key == ("GET", "/_mock/requests"):
            return JSONResponse({"requests": list(self.log)})
        if key == ("POST", "/_mock/release"):
            self.gates.setdefault(str((await request.json())["gate"]), asyncio.Event()).set()
            return JSONResponse({"held": self.held})
        if key == ("GET", "/_mock/held"):
            return JSONResponse({"held": self.held})
        if key == ("POST", "/_mock/reset"):
            self.release_gates()
            self.faults.clear()
            self.log.clear()
            self.models = copy.deepcopy(self.initial)
            self.options = copy.copy(self.initial_options)
            return JSONResponse({"ok": True})
        if key in (("GET", "/_mock/config"), ("POST", "/_mock/config")):
            if key[0] == "POST":
                return self.configure(await request.json())
            return JSONResponse(dataclasses.asdict(self.options))
        return recorded("unknown_endpoint", method=key[0], path=key[1])

    def configure(self, body: Any) -> Response:
        """Change options (and with ``models``, the model list) until the next reset."""
        if not isinstance(body, dict):
            return self.bad_request("the config must be a JSON object")
        values = dict(body)
        try:
            models = parse_models(values.pop("models")) if "models" in values else None
            self.options.update(values)
        except (KeyError, TypeError, ValueError) as exc:
            return self.bad_request(f"bad mock config: {exc}")
        if models is not None:
            self.models = models
        return JSONResponse(dataclasses.asdict(self.options))

    # --- models

    def find(self, model_id: Any) -> Model | None:
        return next((m for m in self.models if m.id == model_id), None)

    @staticmethod
    def body_model(call: Call) -> Any:
        if not isinstance(call.body, dict):
            return None
        return call.body.get("model") or call.body.get("instance_id")

    def visible(self) -> list[Model]:
        """The models a request may name: every downloaded one, or with JIT loading off only the loaded ones
        (LM Studio docs, "Idle TTL and Auto-Evict": JIT loading is what lets a request use an unloaded model)."""
        return self.models if self.options.jit else [m for m in self.models if m.loaded]

    def not_found(self, model_id: Any) -> Response:
        """LM Studio's answer to a model it does not have, in the shape of the configured version (recorded, with
        their sources, in tests/data/lmstudio_bodies.json): now 400 naming three models, before 404 naming all."""
        names = [m.id for m in self.visible()]
        if self.current:
            status, body = lmstudio_body("unknown_model", model=str(model_id), examples=", ".join(names[:3]))
        else:
            status, body = lmstudio_body("unknown_model_0.3", model=str(model_id), listing="\n".join(names))
        return JSONResponse(body, status_code=status)

    @staticmethod
    def no_models_loaded() -> Response:
        return recorded("no_models_loaded")  # a plain STRING error (JIT loading off)

    @staticmethod
    def bad_request(message: str) -> Response:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=400)

    async def resolve(self, call: Call, kinds: tuple[str, ...], *, load: bool = True) -> Model | Response:
        """The requested model of one of kinds (JIT-loaded when `load`), or the error LM Studio would give."""
        requested = self.body_model(call)
        if not requested:
            first = next((m for m in self.models if m.loaded and m.type in kinds), None)
            return first if first is not None else self.no_models_loaded()
        model = self.find(requested)
        if model is None or "unknown_model" in call.flags:
            return self.not_found(requested)
        if model.type not in kinds:
            what = "a llm" if "llm" in kinds else "an embedding model"
            return self.bad_request(f'Model "{requested}" is not {what} (it is of type {model.type}).')
        if model.loaded or not load:
            return model
        if not self.options.jit:
            return self.no_models_loaded() if not any(m.loaded for m in self.models) else self.not_found(requested)
        # LM Studio docs, "Idle TTL and Auto-Evict": JIT loads the model on first use (which can take a while),
        # Auto-Evict first unloads the models earlier JIT loads brought in; a JIT model gets the request's ttl
        await self.wait(call, self.options.jit_load_ms / 1000)
        if self.options.auto_evict:
            for other in self.models:
                if other.jit_loaded and other is not model:
                    other.drop()
        model.add_instance()
        model.jit_loaded = True
        return model

    @staticmethod
    def parts(m: Model) -> tuple[str, str]:
        publisher, _, name = m.id.rpartition("/")
        return publisher or "lmstudio-community", name

    async def openai_models(self, call: Call) -> Response:
        # DESIGN.md: with JIT loading on, /v1/models lists every downloaded model (else only the loaded ones)
        data = [{"id": m.id, "object": "model", "owned_by": "organization_owner"} for m in self.visible()]
        return JSONResponse({"object": "list", "data": data})

    async def v0_models(self, call: Call) -> Response:
        data = [
            {
                "id": m.id,
                "object": "model",
                "type": m.type,
                "publisher": self.parts(m)[0],
                "arch": self.parts(m)[1].split("-")[0],
                "compatibility_type": "gguf",
                "quantization": "Q4_K_M",
                "state": "loaded" if m.loaded else "not-loaded",
                "max_context_length": m.max_context_length,
                **({"loaded_context_length": m.listed_window()} if m.loaded else {}),
                "capabilities": ["tool_use"] if m.tool_use else [],
            }
            for m in self.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def v1_models(self, call: Call) -> Response:
        models = [
            {
                "type": "embedding" if m.type == "embeddings" else "llm",
                "publisher": self.parts(m)[0],
                "key": m.id,
                "display_name": self.parts(m)[1].replace("-", " ").title(),
                "architecture": self.parts(m)[1].split("-")[0],
                "quantization": {"name": "Q4_K_M", "bits_per_weight": 4},
                "size_bytes": 2_500_000_000,
                "params_string": "4B",
                # LM Studio docs, REST API "List your models": one entry per loaded instance, `id` its instance id
                "loaded_instances": [{"id": i, "config": {"context_length": m.listed_window()}} for i in m.instances],
                "max_context_length": m.max_context_length,
                "format": "gguf",
                "capabilities": {"vision": m.type == "vlm", "trained_for_tool_use": m.tool_use},
            }
            for m in self.models
        ]
        return JSONResponse({"models": models})

    async def load(self, call: Call) -> Response:
        model = self.find(call.body.get("model"))
        if model is None or "unknown_model" in call.flags:
            return self.not_found(call.body.get("model"))
        instance = model.add_instance()
        if isinstance(call.body.get("ttl"), int):
            model.ttl = call.body["ttl"]
        kind = "embedding" if model.type == "embeddings" else "llm"
        # LM Studio docs, REST API "Load a model": lmstudio.ai names the id `instance_id`, the beta.lmstudio.ai
        # page `model_instance_id`; the 0.3 mode answers the other name so the gateway is tested on both
        name = "instance_id" if self.current else "model_instance_id"
        return JSONResponse({"type": kind, name: instance, "load_time_seconds": 0.1, "status": "loaded"})

    async def unload(self, call: Call) -> Response:
        # LM Studio docs, REST API "Unload a model": the body names an INSTANCE (`loaded_instances[].id`); a key
        # that is no instance's id is not found (the docs give no error body: this one is the mock's)
        instance = call.body.get("instance_id")
        model = next((m for m in self.models if instance in m.instances), None)
        if model is None or "unknown_model" in call.flags:
            message = f'No loaded model instance with id "{instance}" was found.'
            error = {"message": message, "type": "invalid_request_error", "param": "instance_id"}
            return JSONResponse({"error": {**error, "code": "model_not_found"}}, status_code=404)
        model.drop(instance)
        return JSONResponse({"instance_id": instance})

    # --- context window (issue 28): llama.cpp's listing and props, the overflow answers

    async def llamacpp_models(self, call: Call) -> Response:
        """llama-server's `/v1/models`: `meta.n_ctx` the loaded context, `meta.n_ctx_train` the most it takes;
        with several models (router mode) each entry says its `status`."""
        router = len(self.models) > 1
        data = [
            {
                "id": m.id,
                "object": "model",
                "owned_by": "llamacpp",
                "created": 1795939793,
                "meta": {"vocab_type": 2, "n_ctx": m.listed_window(), "n_ctx_train": m.max_context_length},
                **({"status": {"value": "loaded" if m.loaded else "unloaded"}} if router else {}),
            }
            for m in self.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def props(self, call: Call) -> Response:
        """llama-server's `/props`: what one request (slot) of the loaded model gets."""
        model = next((m for m in self.models if m.loaded and m.type in ("llm", "vlm")), None)
        n_ctx = model.listed_window() if model is not None else 0
        return JSONResponse({"default_generation_settings": {"n_ctx": n_ctx, "params": {}}, "total_slots": 1})

    def over_window(self, model: Model | Response, call: Call, prompt: int) -> Model | Response:
        """The model's answer to a prompt that fills its window or more: its `overflow` shape (default: llama.cpp's
        400 in llamacpp mode, else LM Studio's n_keep 400); the model (or the answer already given) otherwise."""
        if isinstance(model, Response) or model.context_length is None or prompt < model.context_length:
            return model
        body, head = call.body, head_of(call, model.id)
        shape = model.overflow or ("llama_400" if self.api == "llamacpp" else "n_keep_400")
        window = int(model.context_length or 0)
        if shape != "empty_200":
            status, error = recorded_overflow(shape, prompt, window)
            return JSONResponse(error, status_code=status)
        usage = {"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": prompt}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = self.chunks(head, None, [], "stop", usage if include_usage else None)
            return StreamingResponse(iter([*map(sse, chunks), b"data: [DONE]\n\n"]), media_type="text/event-stream")
        choice = {
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": ""},
        }
        return JSONResponse({**head, "object": "chat.completion", "choices": [choice], "usage": usage, "stats": {}})

    # --- inference

    async def chat(self, call: Call) -> Response:
        body = call.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self.bad_request("'messages' field is required")
        # lmstudio-bug-tracker #619: with one model loaded, some versions answer with it whatever `model` says
        prompt = prompt_tokens(body)
        resolved = await self.resolve(call, ("llm", "vlm"), load=not self.options.pin_loaded_model)
        model = self.over_window(resolved, call, prompt)
        if isinstance(model, Response):
            return model
        if isinstance(body.get("ttl"), int):
            model.ttl = body["ttl"]
        name = model.id
        if self.options.pin_loaded_model:
            name = next((m.id for m in self.models if m.loaded and m.type in ("llm", "vlm")), name)
        text, calls = plan_chat(body, call.script, "malformed_tool_args" in call.flags)
        reasoning = call.script.get("reasoning") if isinstance(call.script.get("reasoning"), str) else None
        if reasoning is not None and not self.options.separate_reasoning:
            text = f"<think>{reasoning}</think>\n{text or ''}"  # the model's raw output, reasoning inline
            reasoning = None
        completion = count_tokens((text or "") + (reasoning or ""))
        completion += sum(len(c["function"]["arguments"]) // 4 for c in calls)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        usage["total_tokens"] = usage["prompt_tokens"] + completion
        head = head_of(call, name)
        text, calls, finish = cut_at_max_tokens(within_window(body, model, prompt), usage, text, calls)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = self.chunks(head, text, calls, finish, usage if include_usage else None, reasoning)
            if "cut_stream" in call.flags:
                return CutResponse([sse(c) for c in chunks[:2]], "text/event-stream")
            return StreamingResponse(self.stream(call, chunks), media_type="text/event-stream")
        message: Json = {"role": "assistant", "content": text}
        if reasoning is not None:
            # LM Studio API changelog 0.3.9: "Separate reasoning_content in Chat Completion responses"
            # (App Settings > Developer); off, the reasoning stays in content inside <think>...</think>
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = calls
        choice = {"index": 0, "logprobs": None, "finish_reason": finish, "message": message}
        return JSONResponse({**head, "object": "chat.completion", "choices": [choice], "usage": usage, "stats": {}})

    @staticmethod
    def chunks(
        head: Json, text: str | None, calls: list[Json], finish: str, usage: Json | None, reasoning: str | None = None
    ) -> list[Json]:
        def chunk(delta: Json, reason: str | None = None) -> Json:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            return {**head, "object": "chat.completion.chunk", "choices": [choice]}

        out = [chunk({"role": "assistant"})]
        for piece in pieces(reasoning, 3) if reasoning else []:
            out.append(chunk({"reasoning_content": piece}))
        for piece in pieces(text or "", 4) if text else []:
            out.append(chunk({"content": piece}))
        for i, c in enumerate(calls):
            fn = c["function"]
            first = {"index": i, "id": c["id"], "type": "function", "function": {"name": fn["name"], "arguments": ""}}
            out.append(chunk({"tool_calls": [first]}))
            for piece in pieces(fn["arguments"], 3):
                out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
        out.append(chunk({}, finish))
        if usage is not None:
            out.append({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        return out

    @staticmethod
    async def stream(call: Call, chunks: list[Json]) -> AsyncIterator[bytes]:
        try:
            for c in chunks:
                yield sse(c)
            yield b"data: [DONE]\n\n"
        finally:
            call.entry["ended"] = time.time()

    async def completions(self, call: Call) -> Response:
        model = await self.resolve(call, ("llm", "vlm"))
        if isinstance(model, Response):
            return model
        prompt = text_of(call.body.get("prompt"))
        answer = call.script.get("answer")
        text = answer if isinstance(answer, str) else f"Mock completion of: {scan_scripts(prompt)[1].strip()}"
        usage = {"prompt_tokens": count_tokens(prompt), "completion_tokens": count_tokens(text)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        return JSONResponse(
            {
                "id": f"cmpl-{call.entry['id']}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model.id,
                "choices": [choice],
                "usage": usage,
            }
        )

    async def embeddings(self, call: Call) -> Response:
        model = await self.resolve(call, ("embeddings",))
        if isinstance(model, Response):
            return model
        raw = call.body.get("input")
        inputs = [raw] if isinstance(raw, str) else [str(x) for x in raw or []]
        data = [{"object": "embedding", "index": i, "embedding": embedding_of(t)} for i, t in enumerate(inputs)]
        tokens = sum(count_tokens(t) for t in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": model.id, "usage": usage})


def sse(chunk: Json) -> bytes:
    return f"data: {json.dumps(chunk)}\n\n".encode()


def build_app(
    models: list[Model] | None = None, api: str = "v1", pin_loaded_model: bool = False, **options: Any
) -> Starlette:
    """The mock as an ASGI app (also usable in-process with httpx.ASGITransport); `options`: `Options` fields."""
    settings = Options(pin_loaded_model=pin_loaded_model)
    settings.update(options)
    return MockServer(models if models is not None else load_models(None), api, settings).app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mock_lmstudio", description="Mock LM Studio")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api", choices=["v1", "v0", "openai", "llamacpp"], default="v1")
    parser.add_argument("--lmstudio", choices=sorted(VERSIONS), default=CURRENT, help="answer shapes of this version")
    parser.add_argument("--models", help="JSON file with the model list")
    parser.add_argument("--pin-loaded-model", action="store_true")
    parser.add_argument("--no-jit", action="store_true", help="JIT loading off: unloaded models cannot be used")
    parser.add_argument("--jit-load-ms", type=float, default=0, help="how long a JIT load takes")
    parser.add_argument("--no-auto-evict", action="store_true", help="a JIT load keeps earlier JIT-loaded models")
    parser.add_argument("--separate-reasoning", action="store_true", help="reasoning in `reasoning_content`")
    args = parser.parse_args(argv)
    app = build_app(
        load_models(args.models),
        args.api,
        args.pin_loaded_model,
        lmstudio=args.lmstudio,
        jit=not args.no_jit,
        jit_load_ms=args.jit_load_ms,
        auto_evict=not args.no_auto_evict,
        separate_reasoning=args.separate_reasoning,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )


__all__ = ["DEFAULT_MODELS", "MockServer", "Model", "Options", "build_app", "main"]
