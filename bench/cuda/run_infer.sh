#!/usr/bin/env bash
# The device call for the inference engine on cuda (issue 6): the attention kernels vs cpu_ref
# (test_cuda_ops CudaAttention.*: training shapes and queries after a KV cache), the CUDA engine
# test, `bench_infer throughput --device cuda` on the small and swat-340m presets with the
# PyTorch HF-style eager decode of the same shapes (tools/torch_infer_baseline.py) in the same
# call, and device memory vs context (bench_infer memory). JSON lines and logs go to $OUT.
#   On the CPU machine first:  bash bench/cuda/run_infer.sh pack BUILD_DIR   (a CUDA build with
#   the targets longctx test_cuda_ops test_cuda_engine bench_infer; fills .devlibs/, carry it)
#   On the device:             bash bench/cuda/run_infer.sh [attn] [test] [tput] [base] [mem]   (default: all)
set -uo pipefail
if [[ "${1:-}" == pack ]]; then
  build=${2:?usage: run_infer.sh pack BUILD_DIR}
  bash "$(dirname "$0")/pack_backend.sh" "$build"
  cp "$build/tests/test_cuda_engine" "$build/bench/bench_infer" .devlibs/
  exit
fi
STAGES="${*:-attn test tput base mem}"
source "$(dirname "$0")/device_env.sh"
export OMP_NUM_THREADS=8
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader
  grep -m1 "model name" /proc/cpuinfo; ldd $BIN/bench_infer | grep -E "not found|fallback"; } | tee "$OUT/machine.log"
if has attn; then
  timeout 300 $BIN/test_cuda_ops --gtest_filter='CudaAttention.*' 2>&1 | tee "$OUT/test_cuda_attention.log" |
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED|Failure|differs" | head -40
fi
if has test; then
  timeout 120 $BIN/test_cuda_engine 2>&1 | tee "$OUT/test_cuda_engine.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED|Failure" | head -20
fi
if has tput; then  # longctx engine: prefill 4096 tokens, decode batch 1 / 32 after 256-token prompts
  for preset in small swat-340m; do
    timeout 150 $BIN/bench_infer throughput --device cuda --preset $preset 2>&1
  done | tee "$OUT/infer_throughput_cuda.jsonl"
fi
if has base; then  # the same shapes in PyTorch, eager, growing KV cache (issue 6's baseline)
  for preset in small swat-340m; do
    timeout 150 python3 tools/torch_infer_baseline.py --preset $preset 2>&1 | grep -v -i warn
  done | tee "$OUT/infer_throughput_torch.jsonl"
fi
if has mem; then  # device peak vs context, one process per point; softmax-full grows, SWAT must not
  { for n in 1024 16384 131072 1048576; do timeout 90 $BIN/bench_infer memory --device cuda --attn swat --context $n 2>&1; done
    for n in 1024 16384 65536; do timeout 90 $BIN/bench_infer memory --device cuda --attn softmax --context $n 2>&1; done
  } | tee "$OUT/infer_memory_cuda.jsonl"
fi
