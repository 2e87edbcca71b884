#!/usr/bin/env bash
# Packs what bench/cuda/run_backend.sh needs into .devlibs/ (ignored; carry it): the binaries of
# a local CUDA build (nvcc works without a GPU) and the Debian shared libraries the GPU image
# (Ubuntu 24.04, CUDA 13) lacks (it has libopenblas.so.0). Usage: bash bench/cuda/pack_backend.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: pack_backend.sh BUILD_DIR}
mkdir -p .devlibs
grep -qxF "/.devlibs/" .git/info/exclude || echo "/.devlibs/" >> .git/info/exclude
cp "$build/longctx" "$build/tests/test_cuda_ops" .devlibs/
for t in test_offload nccl_comm_test; do  # issue 8's call (run_offload.sh), where built
  [[ -f "$build/tests/$t" ]] && cp "$build/tests/$t" .devlibs/
done
for lib in libcpp-httplib.so.0.11 libfmt.so.9 libsentencepiece.so.0 libsentencepiece_train.so.0 \
           libbrotlidec.so.1 libbrotlienc.so.1 libbrotlicommon.so.1; do
  cp -L "/lib/x86_64-linux-gnu/$lib" .devlibs/
done
# used only where the image has none (run_backend.sh puts fallback/ last on the library path)
mkdir -p .devlibs/fallback
for lib in libmpi.so.40 libopen-rte.so.40 libopen-pal.so.40 libhwloc.so.15 libevent_core-2.1.so.7 \
           libevent_pthreads-2.1.so.7 libgfortran.so.5 libquadmath.so.0; do
  cp -L "/lib/x86_64-linux-gnu/$lib" .devlibs/fallback/
done
du -sh .devlibs
