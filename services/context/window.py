"""A model's context window: its size in tokens and where that number comes from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_CONTEXT_TOKENS = 4096  # LM Studio loads a model with 4,096 tokens unless told otherwise
WindowSource = Literal["learned", "loaded", "default"]


@dataclass(frozen=True, slots=True)
class ContextWindow:
    """The tokens one request may hold (prompt and answer together) for a model.

    `source`: `loaded` (the host's model list says what the model is loaded with), `learned` (the engine said
    so in an overflow answer: its `n_ctx`), or `default` (nothing is known: `BRIDGE_CONTEXT_DEFAULT_TOKENS`).
    """

    tokens: int
    source: WindowSource


@dataclass(frozen=True, slots=True)
class Learned:
    """A window an engine told (`n_ctx`), and what the model list said when it did: once the list says
    something else (the model was reloaded), the list is newer than what was learned."""

    tokens: int
    listed: int | None
