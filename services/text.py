"""Text that may not be valid Unicode: JSON allows lone surrogates ("\\udc00"), UTF-8 does not.

Anything from a client, a model or a tool passes through here before it is sent on or rendered,
so one bad string can neither break a shared MCP session nor a response. Also: secrets taken out of text
(`Redactor`), and `${env:VAR}` in configuration files (`expand_env`).
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
# a lone surrogate in JSON text, as is or as an escape (`\\udc00`); an escaped backslash before `u` matches too
_SURROGATE_IN_JSON = re.compile("[\ud800-\udfff]|\\\\u[dD][89a-fA-F]")
_ENV_REF = re.compile(r"\$\{env:([^}]*)\}")


class UnsetVariableError(KeyError):
    """A `${env:VAR}` names a variable the environment does not have (`name`)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def expand_env(value: str, environ: Mapping[str, str]) -> str:
    """`value` with each `${env:VAR}` replaced by VAR's value; UnsetVariableError when VAR is unset."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise UnsetVariableError(name)
        return environ[name]

    return _ENV_REF.sub(one, value)


def scrub(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (valid text is returned as is, cheaply)."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def storable(text: str) -> str:
    """Text every store accepts: no lone surrogates, no NUL (PostgreSQL refuses it)."""
    return scrub(text).replace("\x00", "\ufffd")


def may_hold_surrogates(json_text: str) -> bool:
    """False when the value parsed from `json_text` surely holds no lone surrogate (no walk needed)."""
    return _SURROGATE_IN_JSON.search(json_text) is not None


def unencodable_path(value: Any, path: str = "") -> str | None:
    """The JSON path (e.g. `arguments.items[2]`) of the first string, or key, that UTF-8 cannot encode."""
    if isinstance(value, str):
        return path or "$" if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return here
            found = unencodable_path(item, here)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = unencodable_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


# a bearer token ends at whitespace, a quote, a comma, or the backslash of an escape in JSON text
BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',\\]+")
REDACTED = "[REDACTED]"
LEARNED_MAX = 256  # the newest secrets learned while running that every redactor takes out (older ones expired)


class _Learned:
    """Secrets the process learns while it runs (OAuth tokens as they are issued): every `Redactor` of the
    process takes them out, whenever it was built (the log formatter's is built before any token exists)."""

    def __init__(self) -> None:
        self.values: deque[str] = deque(maxlen=LEARNED_MAX)
        self.version = 0

    def add(self, value: str) -> None:
        if len(value) >= 8 and value not in self.values:
            self.values.append(value)
            self.version += 1


_learned = _Learned()


def learn_secret(value: str | None) -> None:
    """A secret learned while running (an OAuth access or refresh token, a registered client's secret): never
    written to a log line, a stored run or an answer from now on."""
    if value:
        _learned.add(value)


def _forms(secrets: Iterable[str]) -> list[str]:
    """Each secret also as JSON text writes it (escaped quotes, \\uXXXX), since logs and stored data are JSON;
    longest first, so a secret that contains another is replaced whole."""
    forms = {
        form
        for secret in secrets
        if len(secret) >= 4
        for form in (secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1])
    }
    return sorted(forms, key=len, reverse=True)


class Redactor:
    """Replaces known secrets (API keys, tokens, MCP env and header values) and bearer tokens in text,
    before it reaches a log line or the run store.

    `more` returns secrets that come later (the keys a reloaded keys file brings: `KeyRing.clear_keys`), as a
    list that only grows; each call takes what it has added since the call before."""

    def __init__(self, secrets: Iterable[str] = (), *, more: Callable[[], Sequence[str]] | None = None) -> None:
        self.secrets: list[str] = []
        self._more = more
        self._taken = 0  # how many of `more()` are in `secrets`
        self._learned: list[str] = []  # `learn_secret`'s, as of `_learned_version`
        self._learned_version = 0
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """More secrets."""
        self.secrets = sorted(set(_forms(secrets)).union(self.secrets), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if self._more is not None and len(more := self._more()) > self._taken:
            self.add(more[self._taken :])
            self._taken = len(more)
        if self._learned_version != _learned.version:
            self._learned, self._learned_version = _forms(_learned.values), _learned.version
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for secret in self._learned:
            if secret in text:
                text = text.replace(secret, REDACTED)
        # the pattern's scan costs more than a lower-cased copy: most texts hold no bearer token to look at
        return BEARER.sub(rf"\g<1>{REDACTED}", text) if "bearer" in text.lower() else text
