"""Configuration files that list entries (the keys file, the hosts file): YAML or JSON, read and checked
entry by entry. Errors name the file, the entry and the field, and never quote the file's text (it holds
keys and tokens)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
MAX_FILE_BYTES = 1 << 20  # 1 MiB: thousands of entries; a bigger file is refused, not read
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
_KINDS |= {stat.S_IFDIR: "a directory", stat.S_IFSOCK: "a socket"}


class ConfigFileError(ValueError):
    """A configuration file cannot be used; the message says where and why."""


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """The text of a regular file of at most `limit` bytes. Opened without blocking (a FIFO does not wait for a
    writer) and checked before anything is read: a FIFO, a device, a directory or a bigger file is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise ConfigFileError(f"{path}: is {kind}, not a regular file: refused")
        if info.st_size > limit:
            raise ConfigFileError(f"{path}: {info.st_size} bytes, over the limit of {limit} bytes: refused")
        data = os.read(fd, limit + 1)  # a regular file: one read (it may have grown since fstat)
        while len(data) <= limit and (more := os.read(fd, limit + 1 - len(data))):
            data += more
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ConfigFileError(f"{path}: over the limit of {limit} bytes: refused")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def read_yaml(path: Path) -> Any:
    """The file's document (YAML, so JSON too), read with `read_bounded`."""
    import yaml  # only when such a file is configured

    text = read_bounded(path)
    try:
        return yaml.safe_load(text)
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
