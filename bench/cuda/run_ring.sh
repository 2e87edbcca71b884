#!/usr/bin/env bash
# Issue 11's device call: the CUDA path of ring attention on ONE GPU (NCCL puts one rank on a
# device, so the ring has one part; its block kernels are checked against the reference per block
# and over a ring's blocks by test_ring_ops). bench/cuda/NOTES.md ("Ring attention on cuda").
#
#   on the CPU machine:  bash bench/cuda/run_ring.sh pack BUILD_DIR
#       run_hdp_multigpu.sh's pack (binaries, the libraries the GPU image lacks, a relocatable
#       Open MPI + PMIx), plus test_ring_ops and mpi_ring_test; BUILD_DIR must have built
#       longctx test_cuda_ops mpi_hdp_test test_ring_ops mpi_ring_test
#   on the device (carry .devlibs; about a minute):
#       bash bench/cuda/run_ring.sh [ops] [ring] [san]   (default: ops ring)
#   ops   test_ring_ops: RingOpsCuda.* (attn_block.cu vs the reference, per block; the merge; the
#         head-dim error) and RingOps.* (the blockwise pipeline on ref, cpu and cuda == the whole
#         stream)
#   ring  mpirun -np 1 mpi_ring_test --gtest_filter='RingGpu.*': ring attention on cuda == the cpu
#         backend (MPI and NCCL communicators, rel err < 1e-4), and the layer hook's ring run on
#         cuda == the model's own attention (loss, gradients)
#   san   compute-sanitizer memcheck of RingOpsCuda.*
# Logs go to $OUT.
set -uo pipefail

if [[ "${1:-}" == pack ]]; then
  set -e
  build=${2:?usage: run_ring.sh pack BUILD_DIR}
  bash bench/cuda/run_hdp_multigpu.sh pack "$build"
  cp "$build/tests/test_ring_ops" "$build/tests/mpi_ring_test" .devlibs/
  du -sh .devlibs
  exit 0
fi

STAGES="${*:-ops ring}"
source "$(dirname "$0")/device_env.sh"
export OMP_NUM_THREADS=8
# libnccl.so.2 (218 MB, not carried): the CUDA tree's or pip's nvidia-nccl, wherever the image has it
for d in /usr/local/cuda/lib /usr/local/cuda/lib64 \
         $(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0] + "/lib")' 2>/dev/null); do
  [[ -f $d/libnccl.so.2 ]] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d
done
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; command -v mpirun
  ldd $BIN/mpi_ring_test | grep -E "not found|fallback"; } 2>&1 | tee "$OUT/machine.log"
if has ops; then
  timeout 300 $BIN/test_ring_ops --gtest_color=no 2>&1 | tee "$OUT/test_ring_ops.log" |
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED|Failure|error" | head -40
fi
if has ring; then
  timeout 300 mpirun --allow-run-as-root -np 1 -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x OMP_NUM_THREADS \
    $BIN/mpi_ring_test --gtest_filter='RingGpu.*' --gtest_color=no 2>&1 | tee "$OUT/mpi_ring_gpu.log" |
    grep -E "rel err|^\[  (PASSED|FAILED|SKIPPED) |FAILED|Failure|error" | head -40
fi
if has san; then
  timeout 300 compute-sanitizer --tool memcheck $BIN/test_ring_ops --gtest_filter='RingOpsCuda*' 2>&1 |
    tail -3 | tee "$OUT/sanitizer.log"
fi
