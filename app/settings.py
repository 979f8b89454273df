"""Settings, read once at start-up from the environment (and an optional `.env`)."""

from __future__ import annotations

import difflib
import logging
import socket
import sys
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.agent.aids import AID_NAMES
from services.lmstudio.hosts import normal_url

DEFAULT_LMSTUDIO_URL = "http://localhost:1234"
log = logging.getLogger("lmstudio_bridge.settings")
# Variables of this project that other parts read, not the gateway: never "unknown" to it.
OTHER_VARIABLES = {
    "BRIDGE_API_KEY": "lmstudio-bridge runs",
    "BRIDGE_URL": "lmstudio-bridge runs",
    "BRIDGE_PUBLISH": "docker-compose.yml",
    "BRIDGE_PYTHON": "examples/demo-mcp.json",
    "BRIDGE_FUZZ_TARGETS": "the contract tests",
    "BRIDGE_TEST_SECRET": "the contract tests",
}


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every value an operator may tune. Names are the environment variables (docs/configuration.md)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False, populate_by_name=True)

    # LM Studio
    lmstudio_base_url: str = Field(DEFAULT_LMSTUDIO_URL, validation_alias=_env("LMSTUDIO_BASE_URL"))
    lmstudio_base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("LMSTUDIO_BASE_URLS")
    )
    lmstudio_hosts_file: str | None = Field(None, validation_alias=_env("LMSTUDIO_HOSTS_FILE"))
    lmstudio_host: str | None = Field(None, validation_alias=_env("LMSTUDIO_HOST"))
    lmstudio_port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("LMSTUDIO_PORT"))
    lmstudio_api_token: SecretStr | None = Field(None, validation_alias=_env("LMSTUDIO_API_TOKEN"))
    lmstudio_connect_timeout_s: float = Field(5.0, gt=0, validation_alias=_env("BRIDGE_LMSTUDIO_CONNECT_TIMEOUT_S"))
    lmstudio_read_timeout_s: float = Field(120.0, gt=0, validation_alias=_env("BRIDGE_LMSTUDIO_READ_TIMEOUT_S"))
    lmstudio_load_timeout_s: float = Field(300.0, gt=0, validation_alias=_env("BRIDGE_LMSTUDIO_LOAD_TIMEOUT_S"))
    lmstudio_retries: int = Field(2, ge=0, le=10, validation_alias=_env("BRIDGE_LMSTUDIO_RETRIES"))
    lmstudio_retry_backoff_s: float = Field(0.25, ge=0, validation_alias=_env("BRIDGE_LMSTUDIO_RETRY_BACKOFF_S"))
    lmstudio_retry_backoff_max_s: float = Field(8.0, ge=0, validation_alias=_env("BRIDGE_LMSTUDIO_RETRY_BACKOFF_MAX_S"))
    breaker_failures: int = Field(5, ge=1, validation_alias=_env("BRIDGE_BREAKER_FAILURES"))
    breaker_reset_s: float = Field(30.0, gt=0, validation_alias=_env("BRIDGE_BREAKER_RESET_S"))
    lmstudio_max_connections: int = Field(100, ge=1, validation_alias=_env("BRIDGE_LMSTUDIO_MAX_CONNECTIONS"))

    # Models
    default_model: str | None = Field(None, validation_alias=_env("DEFAULT_MODEL"))
    model_cache_ttl_s: float = Field(60.0, ge=0, validation_alias=_env("MODEL_CACHE_TTL_S"))
    model_aliases: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, validation_alias=_env("BRIDGE_MODEL_ALIASES")
    )

    # MCP
    mcp_config: str | None = Field(None, validation_alias=_env("MCP_CONFIG", "MCP_JSON_PATH"))
    mcp_warmup: bool = Field(False, validation_alias=_env("BRIDGE_MCP_WARMUP"))
    mcp_idle_s: float = Field(600.0, gt=0, validation_alias=_env("BRIDGE_MCP_IDLE_S"))
    mcp_call_timeout_s: float = Field(60.0, gt=0, validation_alias=_env("BRIDGE_MCP_CALL_TIMEOUT_S"))
    # a tool call that reports progress runs at most this long; 0: progress never extends a call
    mcp_progress_max_s: float = Field(600.0, ge=0, validation_alias=_env("BRIDGE_MCP_PROGRESS_MAX_S"))
    mcp_start_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("BRIDGE_MCP_START_TIMEOUT_S"))
    mcp_max_concurrency: int = Field(16, ge=1, validation_alias=_env("BRIDGE_MCP_MAX_CONCURRENCY"))
    # OAuth toward remote servers: the Fernet key(s) their tokens are sealed with in the run store (newest first)
    token_key: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias=_env("BRIDGE_TOKEN_KEY")
    )
    oauth_refresh_margin_s: float = Field(60.0, ge=0, validation_alias=_env("BRIDGE_OAUTH_REFRESH_MARGIN_S"))

    # Runs
    run_timeout_s: float = Field(300.0, gt=0, validation_alias=_env("BRIDGE_RUN_TIMEOUT_S"))
    max_rounds_default: int = Field(10, ge=1, le=100, validation_alias=_env("BRIDGE_MAX_ROUNDS_DEFAULT"))
    max_tokens_default: int = Field(2048, ge=1, le=1_000_000, validation_alias=_env("BRIDGE_MAX_TOKENS_DEFAULT"))
    text_tool_calls: bool = Field(True, validation_alias=_env("BRIDGE_TEXT_TOOL_CALLS"))
    repeat_call_limit: int = Field(3, ge=2, le=100, validation_alias=_env("BRIDGE_REPEAT_CALL_LIMIT"))
    # aids that lift small models (docs/configuration.md#aids); BRIDGE_AID_PROFILES: model=aid+aid,... wins
    aid_nudge: bool = Field(False, validation_alias=_env("BRIDGE_AID_NUDGE"))
    aid_repair: bool = Field(False, validation_alias=_env("BRIDGE_AID_REPAIR"))
    aid_loop_hint: bool = Field(False, validation_alias=_env("BRIDGE_AID_LOOP_HINT"))
    aid_profiles: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=dict, validation_alias=_env("BRIDGE_AID_PROFILES")
    )
    route_by_score: bool = Field(False, validation_alias=_env("BRIDGE_ROUTE_BY_SCORE"))
    eval_seed: int = Field(42, ge=0, validation_alias=_env("BRIDGE_EVAL_SEED"))
    eval_temperature: float = Field(0.0, ge=0, le=2, validation_alias=_env("BRIDGE_EVAL_TEMPERATURE"))
    tool_output_max_chars: int = Field(20_000, ge=100, validation_alias=_env("BRIDGE_TOOL_OUTPUT_MAX_CHARS"))
    max_concurrent_runs: int = Field(32, ge=1, validation_alias=_env("BRIDGE_MAX_CONCURRENT_RUNS"))
    queue_timeout_s: float = Field(10.0, ge=0, validation_alias=_env("BRIDGE_QUEUE_TIMEOUT_S"))

    # The model's context window (docs/context.md)
    context_default_tokens: int = Field(4096, ge=256, validation_alias=_env("BRIDGE_CONTEXT_DEFAULT_TOKENS"))
    context_answer_share: float = Field(0.25, gt=0, lt=0.9, validation_alias=_env("BRIDGE_CONTEXT_ANSWER_SHARE"))
    context_tools_share: float = Field(0.5, gt=0, le=1, validation_alias=_env("BRIDGE_CONTEXT_TOOLS_SHARE"))
    context_margin_share: float = Field(0.05, ge=0, lt=0.5, validation_alias=_env("BRIDGE_CONTEXT_MARGIN_SHARE"))

    # Run store, background runs, approvals
    database_url: str = Field("sqlite+aiosqlite:///./data/runs.db", validation_alias=_env("BRIDGE_DATABASE_URL"))
    run_retention_days: float = Field(30.0, gt=0, validation_alias=_env("BRIDGE_RUN_RETENTION_DAYS"))
    max_queued_runs: int = Field(100, ge=0, validation_alias=_env("BRIDGE_MAX_QUEUED_RUNS"))
    approval_tools: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("BRIDGE_APPROVAL_TOOLS")
    )
    approval_timeout_s: float = Field(300.0, gt=0, validation_alias=_env("BRIDGE_APPROVAL_TIMEOUT_S"))
    lease_s: float = Field(15.0, ge=1, le=3600, validation_alias=_env("BRIDGE_LEASE_S"))
    orphan_grace_s: float = Field(900.0, ge=1, validation_alias=_env("BRIDGE_ORPHAN_GRACE_S"))
    instance_id: str = Field(
        default_factory=socket.gethostname, min_length=1, validation_alias=_env("BRIDGE_INSTANCE_ID")
    )

    # Server
    host: str = Field("127.0.0.1", validation_alias=_env("BRIDGE_HOST"))
    port: int = Field(8000, ge=1, le=65535, validation_alias=_env("BRIDGE_PORT"))
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias=_env("BRIDGE_API_KEYS")
    )
    keys_file: str | None = Field(None, validation_alias=_env("BRIDGE_KEYS_FILE"))
    otel_console: bool = Field(False, validation_alias=_env("BRIDGE_OTEL_CONSOLE"))
    otel_capture_content: bool = Field(False, validation_alias=_env("BRIDGE_OTEL_CAPTURE_CONTENT"))
    shutdown_grace_s: float = Field(20.0, ge=0, validation_alias=_env("BRIDGE_SHUTDOWN_GRACE_S"))
    max_body_bytes: int = Field(1_048_576, ge=1024, validation_alias=_env("BRIDGE_MAX_BODY_BYTES"))
    header_timeout_s: float = Field(10.0, gt=0, le=300, validation_alias=_env("BRIDGE_HEADER_TIMEOUT_S"))
    metrics_require_key: bool = Field(False, validation_alias=_env("BRIDGE_METRICS_REQUIRE_KEY"))
    # /docs (Swagger UI) and /redoc load their scripts from a CDN (FastAPI's pages): off unless asked for, so
    # an offline gateway shows no blank page; /openapi.json is always served
    api_docs: bool = Field(False, validation_alias=_env("BRIDGE_API_DOCS"))
    require_auth: bool = Field(False, validation_alias=_env("BRIDGE_REQUIRE_AUTH"))
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("BRIDGE_CORS_ORIGINS")
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", validation_alias=_env("BRIDGE_LOG_LEVEL"))

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _parse_aliases(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        aliases: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, model = item.partition("=")
            if not sep or not name.strip() or not model.strip():
                raise ValueError(f"expected name=model pairs separated by commas, got {item!r}")
            aliases[name.strip()] = model.strip()
        return aliases

    @field_validator("aid_profiles", mode="before")
    @classmethod
    def _parse_profiles(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        profiles: dict[str, list[str]] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            model, sep, aids = item.partition("=")
            if not sep or not model.strip():
                raise ValueError(f"expected model=aid+aid pairs separated by commas, got {item!r}")
            names = [a.strip() for a in aids.split("+") if a.strip()]
            unknown = [a for a in names if a not in AID_NAMES]
            if unknown:
                raise ValueError(f"unknown aid(s) {unknown} for {model.strip()!r}; known: {', '.join(AID_NAMES)}")
            profiles[model.strip()] = names
        return profiles

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("api_keys", "cors_origins", "approval_tools", "lmstudio_base_urls", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("token_key", mode="before")
    @classmethod
    def _check_token_keys(cls, value: object) -> object:
        if isinstance(value, str):
            from services.runs.oauth_tokens import check_token_keys  # `cryptography`: only when a key is set

            value = [key.strip() for key in value.split(",") if key.strip()]
            check_token_keys(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must be sqlite+aiosqlite:///<path> or postgresql+asyncpg://<user>@<host>/<db>")
        return value

    @field_validator("lmstudio_base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("lmstudio_base_urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"every URL must start with http:// or https:// (got {url!r})")
        if len(set(map(normal_url, value))) != len(value):
            raise ValueError("the same URL is listed twice")
        return [normal_url(url) for url in value]

    @model_validator(mode="after")
    def _normalise_base_url(self) -> Settings:
        url = self.lmstudio_base_url
        if (self.lmstudio_host or self.lmstudio_port) and url == DEFAULT_LMSTUDIO_URL:
            url = f"http://{self.lmstudio_host or 'localhost'}:{self.lmstudio_port or 1234}"
        self.lmstudio_base_url = normal_url(url)
        if self.lmstudio_base_urls and self.lmstudio_hosts_file:
            raise ValueError("set LMSTUDIO_BASE_URLS or LMSTUDIO_HOSTS_FILE, not both")
        return self


def format_validation_error(exc: Exception) -> str:
    """A start-up message naming each bad setting by its environment variable."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    fields = Settings.model_fields
    lines = ["Invalid configuration:"]
    for err in errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        field = fields.get(name)
        alias = field.validation_alias if field else None
        if isinstance(alias, AliasChoices):
            name = " / ".join(str(choice) for choice in alias.choices)
        lines.append(f"  {name}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def setting_names() -> list[str]:
    """Every environment variable the gateway reads (upper case)."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
    return sorted(names)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each BRIDGE_* / LMSTUDIO_* variable of `environ` that nothing reads (a typo, an old name),
    with the closest known name."""
    known = setting_names()
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(("BRIDGE_", "LMSTUDIO_")) or upper in known or upper in OTHER_VARIABLES:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.75)  # the shared prefix alone: ~0.7
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"unknown setting {name} is ignored{hint} (docs/configuration.md lists every setting)")
    return warnings


def warn_unknown_variables(environ: Mapping[str, str]) -> None:
    for warning in unknown_variables(environ):
        log.warning("%s", warning)


def load_settings() -> Settings:
    """Settings from the environment; invalid values stop start-up with a clear message."""
    try:
        return Settings()
    except ValidationError as exc:
        print(format_validation_error(exc), file=sys.stderr)
        raise SystemExit(2) from None
