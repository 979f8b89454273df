"""Which LM Studio hosts the gateway talks to: one URL, a comma-separated list, or a hosts file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.config_files import ConfigFileError, entry_label, read_yaml, validated
from services.text import UnsetVariableError, expand_env


class HostsFileError(ConfigFileError):
    """LMSTUDIO_HOSTS_FILE cannot be used; the message names the entry and the field."""


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One LM Studio server: its name (shown in listings, metrics and spans), URL, token and weight."""

    name: str
    url: str
    token: str | None = field(default=None, repr=False)
    weight: float = 1.0


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = Field(None, min_length=1, max_length=64)
    url: str
    token: str | None = None
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return normal_url(value)

    @field_validator("weight", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        return float(value) if type(value) is int else value


def normal_url(url: str) -> str:
    """An LM Studio URL without a trailing `/` or `/v1`."""
    return url.rstrip("/").removesuffix("/v1")


def host_specs(base_url: str, base_urls: list[str], hosts_file: str | None, token: str | None) -> list[HostSpec]:
    """The hosts the settings name: the hosts file, else LMSTUDIO_BASE_URLS, else LMSTUDIO_BASE_URL.
    `token` (LMSTUDIO_API_TOKEN) is every host's token unless the file gives one."""
    if hosts_file:
        return load_hosts_file(Path(hosts_file), token)
    return [HostSpec(url, url, token) for url in (base_urls or [base_url])]


def load_hosts_file(path: Path, token: str | None = None, environ: Mapping[str, str] | None = None) -> list[HostSpec]:
    """The hosts of a YAML (or JSON) file: `hosts: [{name, url, token, weight}]`. `${env:VAR}` in a token
    is read from the environment. Anything wrong raises HostsFileError naming the entry and the field."""
    env = os.environ if environ is None else environ
    try:
        raw = read_yaml(path)
    except ConfigFileError as exc:
        raise HostsFileError(str(exc)) from None
    items = raw.get("hosts") if isinstance(raw, dict) else None
    if not isinstance(items, list) or not items:
        raise HostsFileError(f'{path}: expected an object with a non-empty "hosts" list')
    specs: list[HostSpec] = []
    for index, item in enumerate(items):
        label = entry_label(index, item)
        try:
            entry = validated(_Entry, item, f"{path}: {label}")
        except ConfigFileError as exc:
            raise HostsFileError(str(exc)) from None
        name = entry.name or entry.url
        if any(s.url == entry.url for s in specs):
            raise HostsFileError(f'{path}: {label}: field "url": {entry.url!r} is listed twice')
        if any(s.name == name for s in specs):
            raise HostsFileError(f'{path}: {label}: field "name": {name!r} is used by another entry')
        try:
            secret = token if entry.token is None else expand_env(entry.token, env)
        except UnsetVariableError as exc:
            raise HostsFileError(
                f'{path}: {label}: field "token": ${{env:{exc.name}}} refers to an unset variable'
            ) from None
        specs.append(HostSpec(name, entry.url, secret or None, entry.weight))
    return specs
