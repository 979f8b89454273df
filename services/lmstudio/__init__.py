"""LM Studio: the HTTP client, model listing, chat results, error mapping, retries and the model catalog."""

from services.lmstudio.catalog import ModelCatalog, ModelEntry, ModelKind, ResolvedModel, Snapshot
from services.lmstudio.chat import ChatResult, ToolCall, Usage
from services.lmstudio.client import LMStudioClient
from services.lmstudio.errors import counts_against_lmstudio
from services.lmstudio.listing import ModelInfo
from services.lmstudio.retry import RetryPolicy

__all__ = [
    "ChatResult",
    "LMStudioClient",
    "ModelCatalog",
    "ModelEntry",
    "ModelInfo",
    "ModelKind",
    "ResolvedModel",
    "RetryPolicy",
    "Snapshot",
    "ToolCall",
    "Usage",
    "counts_against_lmstudio",
]
