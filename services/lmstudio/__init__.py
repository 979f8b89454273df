"""LM Studio: the HTTP client, its hosts and routing, model listing, chat results, error mapping, retries and
the model catalog."""

from services.lmstudio.catalog import ModelCatalog, ModelEntry, ModelKind, ResolvedModel, Snapshot
from services.lmstudio.chat import ChatResult, ToolCall, Usage
from services.lmstudio.client import LMStudioClient
from services.lmstudio.errors import counts_against_lmstudio
from services.lmstudio.hosts import HostsFileError, HostSpec, host_specs
from services.lmstudio.listing import ModelHost, ModelInfo
from services.lmstudio.retry import RetryPolicy
from services.lmstudio.routing import Host
from services.lmstudio.upstream import LMStudioHosts

__all__ = [
    "ChatResult",
    "Host",
    "HostSpec",
    "HostsFileError",
    "LMStudioClient",
    "LMStudioHosts",
    "ModelCatalog",
    "ModelEntry",
    "ModelHost",
    "ModelInfo",
    "ModelKind",
    "ResolvedModel",
    "RetryPolicy",
    "Snapshot",
    "ToolCall",
    "Usage",
    "counts_against_lmstudio",
    "host_specs",
]
