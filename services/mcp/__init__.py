"""MCP servers from mcp.json: configuration, one pooled session per server, tools and tool calls.

- `config`: loading and validating mcp.json
- `tools`: tool specs, call results, the tool set offered to a model, model-facing tool names
- `arguments`: repair and JSON-schema validation of the arguments a model sends
- `transport`: stdio / streamable HTTP transports and a child's stderr
- `connection`: one start of a server's session, owned by one task
- `session`: one server: its current connection, breaker, restart backoff, idle close, status
- `pool`: `MCPPool`, the public API
"""

from services.mcp.arguments import coerce_arguments, validate_arguments
from services.mcp.config import (
    MCPServerConfig,
    Transport,
    find_config_path,
    guard_recursion,
    is_bridge_entry,
    load_mcp_config,
    safe_url,
)
from services.mcp.pool import MCPPool
from services.mcp.session import RECURSION_SKIPPED, ServerStatus, Status
from services.mcp.tools import (
    VALID_TOOL_NAME,
    ToolNameMap,
    ToolResult,
    ToolSet,
    ToolSpec,
    model_tool_name,
    qualified_name,
    split_qualified,
    to_tool_result,
)

__all__ = [
    "RECURSION_SKIPPED",
    "VALID_TOOL_NAME",
    "MCPPool",
    "MCPServerConfig",
    "ServerStatus",
    "Status",
    "ToolNameMap",
    "ToolResult",
    "ToolSet",
    "ToolSpec",
    "Transport",
    "coerce_arguments",
    "find_config_path",
    "guard_recursion",
    "is_bridge_entry",
    "load_mcp_config",
    "model_tool_name",
    "qualified_name",
    "safe_url",
    "split_qualified",
    "to_tool_result",
    "validate_arguments",
]
