#!/usr/bin/env bash
# The one script a device call runs (METHOD.md "fit the lease"): build the SWAT attention lab,
# check correctness, run compute-sanitizer, benchmark, profile, and run the baselines in the
# same call. Logs and JSON go to $OUT (at most 8 files come back).
#   bash bench/cuda/run_device.sh [build] [check] [san] [bench] [ncu] [base]   (default: all)
# The baselines must be copied into .baselines/ first (see bench/cuda/NOTES.md) and carried.
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT" build_lab
STAGES=" ${*:-build check san bench ncu base} "
has() { [[ "$STAGES" == *" $1 "* ]]; }
LAB=./build_lab/swat_lab
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$OUT/build.log"
if has build; then
  # -arch=sm_90a as the project builds it (nvcc 13.0 also runs an sm_90 pass; see the .cu)
  nvcc -std=c++20 -O3 -arch=sm_90a -lineinfo -Xcompiler -fopenmp,-Wall,-Wextra -Xptxas -v -Isrc \
    bench/cuda/swat_lab.cu src/kernels/cuda/swat_attention.cu -o $LAB >> "$OUT/build.log" 2>&1 \
    || { cat "$OUT/build.log"; exit 1; }
  grep -E "registers|spill" "$OUT/build.log" | sort | uniq -c
  cuobjdump -sass $LAB | grep -oE "HGMMA\.[0-9x]+|MUFU\.[A-Z]+|RED\.E\.ADD[A-Z0-9.]*" | sort | uniq -c \
    | tee -a "$OUT/build.log"
fi
if has check; then
  $LAB check 2>&1 | tee "$OUT/check.log" | tail -3
fi
if has san; then
  { compute-sanitizer --tool memcheck --leak-check full $LAB small 2>&1 | tail -2
    compute-sanitizer --tool racecheck $LAB small 2>&1 | tail -1
    compute-sanitizer --tool synccheck $LAB small 2>&1 | tail -1; } | tee -a "$OUT/check.log"
fi
if has bench; then
  $LAB bench 30 2>&1 | grep '"S"' | tee "$OUT/bench.json"
fi
if has ncu; then
  # one forward and one backward launch at S 16K, w 1024, D 64 (launches 3 and 4 of the run)
  ncu --kernel-name regex:swat_ --launch-skip 2 --launch-count 2 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy \
    --section WarpStateStats --section InstructionStats --section MemoryWorkloadAnalysis \
    $LAB bench 1 > "$OUT/ncu.txt" 2>&1
  ncu --kernel-name regex:swat_ --launch-skip 2 --launch-count 2 --metrics \
sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_issued.avg.pct_of_peak_sustained_active,smsp__average_warp_latency_issue_stalled_barrier.ratio,smsp__average_warp_latency_issue_stalled_math_pipe_throttle.ratio \
    $LAB bench 1 >> "$OUT/ncu.txt" 2>&1
  grep -E "swat_|Duration|Compute \(SM\) Throughput|Issued Ipc|L2 Cache Throughput|DRAM Throughput|pct_of_peak|ratio|Achieved Occupancy" "$OUT/ncu.txt" | cut -c1-120
fi
if has base; then
  export PYTHONUNBUFFERED=1
  python3 .baselines/triton_sigmoid_swa.py 2>&1 | grep -vi warn > "$OUT/triton.log"
  grep -E "err|triton_best" "$OUT/triton.log" | sed -E 's/, .(tanh|sigm|bwd)_[^,]*//g' | cut -c1-400
  python3 .baselines/torch_anchors.py attn 2>&1 | grep -vi warn > "$OUT/anchors.log"
  grep -E "^\{'S'" "$OUT/anchors.log" | cut -c1-300
fi
