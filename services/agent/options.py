"""The run options: one definition of every option a client may set on a run, with its bounds, shared by REST
(`/v1/autonomous` and its mirrors, `/v1/runs`), pipeline steps, the bridge fields of `/v1/chat/completions`
and the MCP front door's tools; `run_spec` is the one conversion to a `RunSpec`. Unset options (None)
take the gateway's settings, applied in one place (`RunDefaults.limits_for`)."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, WithJsonSchema

from services.agent.records import RunSpec, ToolChoice
from services.errors import InvalidRequestError

M = TypeVar("M", bound=BaseModel)

MAX_ROUNDS_CAP = 100
MAX_TOKENS_CAP = 1_000_000
MAX_TIMEOUT_S = 86_400
MAX_TEXT_CHARS = 20_000  # a task, an instruction, a system prompt

Task = Annotated[
    str,
    Field(
        min_length=1, max_length=MAX_TEXT_CHARS, description="What the model should do", examples=["What time is it?"]
    ),
]
Model = Annotated[
    str | None,
    Field(description='Model id or alias; null or "default" picks the default model', examples=["qwen/qwen3-4b"]),
]
MCPServers = Annotated[
    list[str] | None, Field(description="MCP servers whose tools the model may use; omitted = every enabled server")
]
MaxRounds = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_ROUNDS_CAP,
        description=f"Tool rounds before a final answer is asked for (1-{MAX_ROUNDS_CAP}; BRIDGE_MAX_ROUNDS_DEFAULT)",
    ),
]
MaxTokens = Annotated[
    int | None,
    Field(ge=1, le=MAX_TOKENS_CAP, description="max_tokens of each LM Studio call (BRIDGE_MAX_TOKENS_DEFAULT)"),
]
Temperature = Annotated[float | None, Field(ge=0, le=2, description="Sampling temperature of each LM Studio call")]
SystemPrompt = Annotated[
    str | None, Field(max_length=MAX_TEXT_CHARS, description="Replaces the gateway's system prompt")
]
AllowedTools = Annotated[list[str] | None, Field(description="Subset of <server>__<tool> names the model may call")]
TimeoutS = Annotated[
    float | None, Field(gt=0, le=MAX_TIMEOUT_S, description="Run deadline in seconds (default BRIDGE_RUN_TIMEOUT_S)")
]
ToolChoiceOption = Annotated[
    ToolChoice | None,
    Field(
        description='OpenAI tool_choice for the first round ("auto", "required", "none" or a named function); '
        'later rounds use "auto"; "none" offers no tools'
    ),
]


class RunOptions(BaseModel):
    """Every option of a run a client may set; unset ones take the gateway's settings."""

    # strict: the types are the documented ones (no "max_rounds": "5"), as schemathesis checks
    model_config = ConfigDict(extra="forbid", strict=True)

    model: Model = None
    mcp_servers: MCPServers = None
    max_rounds: MaxRounds = None
    max_tokens: MaxTokens = None
    temperature: Temperature = None
    system_prompt: SystemPrompt = None
    allowed_tools: AllowedTools = None
    timeout_s: TimeoutS = None
    tool_choice: ToolChoiceOption = None


RUN_OPTION_NAMES: frozenset[str] = frozenset({"task", *RunOptions.model_fields})


def run_spec(options: BaseModel, **extra: Any) -> RunSpec:
    """The one conversion to a run spec: the run options a request model has (its fields named in
    RUN_OPTION_NAMES, declared with the types above), then `extra` (the spec's other fields, or overrides)."""
    values = {name: getattr(options, name) for name in type(options).model_fields if name in RUN_OPTION_NAMES}
    return RunSpec(**{**values, **extra})


def validated(model: type[M], values: dict[str, Any]) -> M:
    """`values` checked against `model`; a violation is the REST API's 422 `validation_error` naming the field."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *(str(p) for p in e["loc"])], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(e['loc'][1:])}: {e['msg']}" for e in errors)
        raise InvalidRequestError(summary, errors=errors) from None


def shown(option: Any) -> WithJsonSchema:
    """An option's JSON schema (bounds, description) for a parameter of its plain type that does not enforce
    them, for callers (the MCP SDK) whose own refusal would not be the REST API's problem: `validated` checks."""
    return WithJsonSchema(TypeAdapter(option).json_schema())
