# lmstudio-bridge: make demo | make test | make lint | make bench
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
MOCK_PORT ?= 0

.PHONY: install run demo test lint bench soak openapi lock clean screenshots

install: $(VENV)/.installed node_modules/.installed

# Dependencies come from the pinned, hashed lock (requirements/dev.lock: runtime + test tools), wheels only:
# a package with no wheel for this machine fails the install instead of compiling (tests/contract/test_locks.py).
# The project itself is installed editable on top, without dependencies.
$(VENV)/.installed: pyproject.toml requirements/dev.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --only-binary :all: -r requirements/dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(VENV)/bin/lmstudio-bridge serve --port $(PORT)

demo: install
	$(PY) -m scripts.demo --port $(PORT) --mock-port $(MOCK_PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/pytest -q

# the console's screenshots in docs/console/ (docs/console.md, README), made by its browser tests
screenshots: install
	UPDATE_SCREENSHOTS=1 $(VENV)/bin/pytest -q tests/console

bench: install
	$(PY) -m bench

# 10,000 runs with ~5 % injected faults; SOAK_ARGS="--runs 500" to try it (bench/soak.py); then 300 runs on three
# replicas, the busiest killed every 4 s, 15 times (bench/chaos.py; CHAOS_ARGS="--runs 60 --kills 3" to try it)
soak: install
	$(PY) -m bench.soak $(SOAK_ARGS)
	$(PY) -m bench.chaos $(CHAOS_ARGS)

openapi: install
	$(PY) -m app.openapi_export openapi/openapi.json

# Re-pin requirements/{runtime,image,dev}.lock from pyproject.toml (uv, from PyPI, for Python 3.11+
# on every platform); run it after changing a dependency. tests/contract/test_locks.py fails while they disagree.
UV_VERSION := 0.13.8
LOCK_TOOL := $(VENV)/lock-tool/bin/uv
LOCK := UV_NO_CONFIG=1 $(LOCK_TOOL) pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --only-binary :all: --index-url https://pypi.org/simple --custom-compile-command 'make lock'
lock:
	test -x $(LOCK_TOOL) || { python3 -m venv $(VENV)/lock-tool && $(VENV)/lock-tool/bin/pip install --quiet uv==$(UV_VERSION); }
	$(LOCK) -o requirements/runtime.lock
	$(LOCK) --extra image -o requirements/image.lock
	$(LOCK) --extra dev -o requirements/dev.lock

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
