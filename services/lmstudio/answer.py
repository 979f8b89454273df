"""An LM Studio answer whose body has been read: what the client, the error mapping and the relaying routes
read of it. httpx's `Response` is one; `Buffered` is the light one the client's direct exchange makes."""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Answer(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...

    @property
    def text(self) -> str: ...

    @property
    def extensions(self) -> MutableMapping[str, Any]: ...

    def json(self) -> Any: ...


@dataclass(slots=True)
class Buffered:
    """Status, headers (case-insensitive) and the whole body, decoded by its Content-Encoding. Building an
    httpx `Response` around the same bytes costs about 0.1 ms of CPU (header normalising, a stream, a
    decoder chain); this costs nothing (docs/performance.md)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    extensions: MutableMapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)
