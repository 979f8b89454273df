"""Configuration files that list entries (the keys file, the hosts file): YAML or JSON, read and checked
entry by entry. Errors name the file, the entry and the field, and never quote the file's text (it holds
keys and tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A configuration file cannot be used; the message says where and why."""


def read_yaml(path: Path) -> Any:
    """The file's document (YAML, so JSON too)."""
    import yaml  # only when such a file is configured

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:  # its message quotes the line, which may hold a secret: only where and what
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigFileError(f"{path}: not valid YAML or JSON{where}: {problem}") from None


def entry_label(index: int, item: Any) -> str:
    """`entry N ('name')`, as errors name an entry (N from 1)."""
    name = item.get("name") if isinstance(item, dict) else None
    return f"entry {index + 1}" + (f" ({name!r})" if isinstance(name, str) and name else "")


def validated(model: type[M], item: Any, where: str) -> M:
    """`item` as a `model`; ConfigFileError naming `where` (file and entry) and the first bad field."""
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "entry"
        raise ConfigFileError(f'{where}: field "{field}": {first["msg"]}') from None
