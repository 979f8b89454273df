# lmstudio-bridge: the gateway (and, with another command, the mock LM Studio) in one slim image.
#   docker build -t lmstudio-bridge .
#   docker run --rm -p 127.0.0.1:8000:8000 --add-host host.docker.internal:host-gateway \
#     -v ~/.lmstudio/mcp.json:/config/mcp.json:ro lmstudio-bridge
# Podman/Buildah: `podman build --format docker -t lmstudio-bridge .` (the default OCI format drops HEALTHCHECK).
# See docs/operations.md.

# Node 20 for MCP servers started with npx / npm (copied, not installed: no apt in the final image)
FROM node:20-slim AS node

# Build stage: a virtualenv with the gateway and its dependencies, no compilers and no installers left behind
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# the dependencies first, from the pinned and hashed lock (wheels only): a code change reuses this layer.
# requirements/image.lock = the gateway's runtime set + the reference time server (deploy/mcp.json starts it)
COPY requirements/image.lock requirements/image.lock
RUN pip install --require-hashes --only-binary :all: -r requirements/image.lock
COPY pyproject.toml README.md ./
COPY app ./app
COPY routers ./routers
COPY services ./services
# the gateway itself, without re-resolving; then pip and setuptools leave the venv
RUN pip install --no-deps --no-build-isolation . \
    && pip uninstall --yes setuptools pip

# Final stage
FROM python:3.11-slim AS runtime
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
# no installers in the runtime image: the base image's pip, setuptools and wheel go too.
# /config stays root's (the gateway reads its mcp.json, never rewrites it); only /app/data is the user's.
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
    && node --version && npx --version \
    && python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin bridge \
    && mkdir /config /app /app/data && chown bridge /app/data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# the mock LM Studio (docker-compose.yml's `mock-lmstudio` service runs it from this image)
COPY tests/__init__.py tests/__init__.py
COPY tests/mock_lmstudio tests/mock_lmstudio
COPY deploy/mcp.json /config/mcp.json
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8000 \
    LMSTUDIO_BASE_URL=http://host.docker.internal:1234 \
    MCP_CONFIG=/config/mcp.json
USER 10001
# the run store (./data/runs.db, SQLite) lives here: mount a volume to keep run records
VOLUME ["/app/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BRIDGE_PORT', '8000'), timeout=4)"]
CMD ["lmstudio-bridge", "serve"]
