#!/usr/bin/env bash
# Build llama.cpp's llama-server (and llama-batched-bench, the ceiling bench/ceiling.py
# measures) from the very sources llama-cpp-python vendors (same version, same options as
# the Makefile gives its build) into a cache outside the repo, and print llama-server's
# path. Later runs reuse the build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
version="$("$python" -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')"
cmake_args="$(sed -n 's/^export CMAKE_ARGS := //p' "$here/../Makefile")"
cache="${LLAMA_BOX_BENCH_CACHE:-$HOME/.cache/llama-box-bench}/llama-cpp-python-$version"
binary="$cache/build/bin/llama-server"
if [ -x "$binary" ] && [ -x "$cache/build/bin/llama-batched-bench" ]; then echo "$binary"; exit 0; fi

mkdir -p "$cache"
if [ ! -d "$cache/src" ]; then
  "$python" -m pip download --quiet --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$cache" >&2
  mkdir -p "$cache/src"
  tar -xzf "$cache/llama_cpp_python-$version.tar.gz" -C "$cache/src" --strip-components=1
fi
# llama-cpp-python's own CMakeLists builds shared libraries in Release with curl off.
# shellcheck disable=SC2086
cmake -S "$cache/src/vendor/llama.cpp" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF $cmake_args >&2
cmake --build "$cache/build" --target llama-server llama-batched-bench -j "$(nproc)" >&2
echo "$binary"
