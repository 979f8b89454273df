"""The model's context window: how big it is, how many tokens a request takes, and fitting requests to it
(docs/context.md)."""

from services.context.tokens import TokenCounter
from services.context.window import DEFAULT_CONTEXT_TOKENS, ContextWindow, WindowSource

__all__ = ["DEFAULT_CONTEXT_TOKENS", "ContextWindow", "TokenCounter", "WindowSource"]
