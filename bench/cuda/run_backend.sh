#!/usr/bin/env bash
# The device call for the cuda backend (issue 5 parts 2-3): the CUDA tests, compute-sanitizer,
# `bench train` on the 374M configuration, `bench attention` on the issue's shapes, a short
# `train --device cuda`, and the PyTorch anchors, in one call. Logs and JSON go to $OUT.
# Binaries come prebuilt in .devlibs/ (bench/cuda/pack_backend.sh, on the CPU machine) with the
# shared libraries the GPU image lacks; .baselines/ holds ../shared/bench/*.py.
#   bash bench/cuda/run_backend.sh [test] [san] [train] [bench] [attn] [base] [prof]
#   (default: all but prof; prof = an nsys kernel-time summary of two training steps)
set -uo pipefail
STAGES="${*:-test san train bench attn base}"
source "$(dirname "$0")/device_env.sh"
BENCH_RUNS=${BENCH_RUNS:-"fast16bf 4096|bf16copy 4096|bf16copy 16384|bf16copy 16384 --recompute"}
export OMP_NUM_THREADS=8
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader
  grep -m1 "model name" /proc/cpuinfo; ldd .devlibs/longctx | grep -E "not found|fallback"; } | tee "$OUT/machine.log"
if has test; then
  $BIN/test_cuda_ops 2>&1 | tee "$OUT/test_cuda_ops.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED|error|Failure" | head -40
fi
if has san; then
  { timeout 150 compute-sanitizer --tool memcheck $BIN/test_cuda_ops --gtest_filter='CudaOps.*:CudaAttention.*' 2>&1 | tail -3
    timeout 60 compute-sanitizer --tool racecheck $BIN/test_cuda_ops --gtest_filter='CudaOps.LmHead*:CudaOps.Emb*' 2>&1 | tail -2
  } | tee "$OUT/sanitizer.log"
fi
if has train; then
  rm -rf /tmp/run && timeout 150 $BIN/longctx train --data demo/data --out /tmp/run --device cuda --preset tiny \
    --batch 8 --seq 512 --steps 150 --warmup 20 --lr 2e-3 --min-lr 2e-4 --eval-every 50 --save-every 100 --quiet 2>&1 | tail -3 | tee "$OUT/train.log"
  timeout 60 $BIN/longctx train --data demo/data --out /tmp/run --device cuda --preset tiny \
    --batch 8 --seq 512 --steps 200 --warmup 20 --lr 2e-3 --min-lr 2e-4 --eval-every 50 --resume --quiet 2>&1 | tail -2 | tee -a "$OUT/train.log"
  cp /tmp/run/metrics.jsonl "$OUT/train_metrics.jsonl"
fi
if has bench; then
  # the issue's 374M SWAT model: d 1024, 24 layers, 16 heads, ffn 2816, w 1024, V 32000, S 4096, 16K tokens/step
  # GEMM inputs: FAST_16BF on fp32 (default) vs bf16 copies (backend.cpp), measured side by side
  IFS='|' read -ra runs <<< "$BENCH_RUNS"
  for run in "${runs[@]}"; do
    set -- $run
    echo -n "{\"gemm\":\"$1\",\"run\":"
    LONGCTX_CUDA_GEMM=$1 timeout 120 $BIN/longctx bench train --device cuda --preset swat-340m \
      --window 1024 --batch $((16384 / $2)) -S $2 --steps 5 ${3:-} 2>&1 | tail -1
    echo "}"
  done | tee "$OUT/bench_train.json"
fi
if has attn; then
  for shape in "16384 1024 16 64" "65536 1024 16 64" "16384 4096 8 128" "65536 4096 8 128"; do
    set -- $shape
    timeout 60 $BIN/longctx bench attention --device cuda -S $1 -w $2 --heads $3 --head-dim $4 --repeats 10 2>&1 | tail -1
  done | tee "$OUT/bench_attention.json"
fi
if has base; then
  export PYTHONUNBUFFERED=1
  timeout 150 python3 .baselines/torch_anchors.py attn 2>&1 | grep -vi warn > "$OUT/anchors.log"
  grep -E "^\{'S'" "$OUT/anchors.log" | cut -c1-300
fi
if has prof; then
  if command -v nsys > /dev/null; then
    nsys profile -o /tmp/prof --force-overwrite true $BIN/longctx bench train --device cuda --preset swat-340m \
      --window 1024 --batch 4 -S 4096 --steps 2 > /dev/null 2>&1
    nsys stats --report cuda_gpu_kern_sum --format csv /tmp/prof.nsys-rep 2>/dev/null | head -30 | cut -c1-220 | tee "$OUT/profile.csv"
  else
    echo "no nsys on this machine" | tee "$OUT/profile.csv"
  fi
fi
