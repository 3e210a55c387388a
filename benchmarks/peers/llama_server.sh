#!/usr/bin/env bash
# llama.cpp's llama-server as hearth's peer, built from source once and started on the default GGUF.
#
#   benchmarks/peers/llama_server.sh build          # once: ~10 min on 2 cores; prints the binary's path
#   benchmarks/peers/llama_server.sh serve PORT     # 2 threads, 32 slots, on the default model's Q4_1 GGUF
#
# HEARTH_CPU_ISA=avx2 builds (in a build folder of its own) and serves llama.cpp's AVX2 + FMA + F16C build,
# the peer of hearth capped at the same level; otherwise the AVX-512 build below.
#
# The source is the one vendored in llama-cpp-python's sdist (PyPI is the only registry reached here):
# `pip download --no-deps --no-binary :all: llama-cpp-python`, then cmake -DLLAMA_CURL=OFF, target
# llama-server. Everything lives under ${HEARTH_CACHE:-~/.cache/hearth}/peers.
set -euo pipefail
HEARTH_CACHE=${HEARTH_CACHE:-$HOME/.cache/hearth}
PEERS=$HEARTH_CACHE/peers
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
SRC=$PEERS/llama_cpp_python-$VERSION/vendor/llama.cpp
if [ "${HEARTH_CPU_ISA:-}" = avx2 ]; then BUILD=$SRC/build-avx2; else BUILD=$SRC/build; fi
BIN=$BUILD/bin/llama-server
PY=${PYTHON:-$(dirname "$0")/../../.venv/bin/python}
GGUF=${LLAMA_SERVER_GGUF:-$HEARTH_CACHE/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}

# Not GGML_NATIVE: on this project's KVM guest (Sapphire Rapids) a -march=native build died with SIGILL at
# its first matmul (AMX tiles are not enabled for guests here). AVX-512 with VNNI and BF16, as llama.cpp's
# portable builds use, and no AMX.
CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
  -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
  -DGGML_AMX_BF16=OFF"
if [ "${HEARTH_CPU_ISA:-}" = avx2 ]; then
  CPU_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
    -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF \
    -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi
STAMP=$BUILD/hearth-cpu-flags

build() {
  if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$CPU_FLAGS" ]; then echo "$BIN"; return; fi
  mkdir -p "$PEERS"
  if [ ! -d "$SRC" ]; then
    "$PY" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$PEERS" >&2
    tar -xzf "$PEERS/llama_cpp_python-$VERSION.tar.gz" -C "$PEERS"
  fi
  # shellcheck disable=SC2086
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF $CPU_FLAGS \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
  cmake --build "$BUILD" --target llama-server -j "$(nproc)" >&2
  echo "$CPU_FLAGS" > "$STAMP"
  echo "$BIN"
}

case "${1:-}" in
  build) build ;;
  serve)
    port=${2:?usage: $0 serve PORT}
    [ -f "$GGUF" ] || { echo "no GGUF at $GGUF: run make setup" >&2; exit 2; }
    exec "$(build)" -m "$GGUF" --host 127.0.0.1 --port "$port" -t 2 -tb 2 -np 32 -c $((32 * 2048)) \
      --alias smollm2-135m-instruct --no-webui ;;
  *) echo "usage: $0 build | serve PORT" >&2; exit 2 ;;
esac
