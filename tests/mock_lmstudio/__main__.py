"""Entry point: ``python -m tests.mock_lmstudio --port N``."""

from tests.mock_lmstudio.server import main

if __name__ == "__main__":
    main()
