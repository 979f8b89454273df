"""Write the app's OpenAPI document: `python -m app.openapi_export openapi/openapi.json` (`make openapi`).

`--check` compares instead of writing and exits 1 when the file has drifted from the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.gateway import MCPSetup
from app.main import create_app
from app.settings import Settings

DEFAULT_PATH = Path("openapi/openapi.json")


def openapi_document() -> dict[str, Any]:
    """The document of an app built from default settings (it does not depend on the environment)."""
    settings = Settings(_env_file=None)
    return create_app(settings, MCPSetup(None, {})).openapi()


def render(document: dict[str, Any]) -> str:
    """Stable text: 2-space indent, key order as FastAPI produces it, trailing newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.openapi_export", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help="output file (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the app's document")
    args = parser.parse_args(argv)
    text = render(openapi_document())
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.is_file() else ""
        if current != text:
            print(f"{args.path} is out of date: run `make openapi`", file=sys.stderr)
            return 1
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
