# lmstudio-bridge: make demo | make test | make lint | make bench
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
MOCK_PORT ?= 0

.PHONY: install run demo test lint bench soak openapi clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
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

bench: install
	$(PY) -m bench

# 10,000 runs with ~5 % injected faults; SOAK_ARGS="--runs 500" to try it (bench/soak.py)
soak: install
	$(PY) -m bench.soak $(SOAK_ARGS)

openapi: install
	$(PY) -m app.openapi_export openapi/openapi.json

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
