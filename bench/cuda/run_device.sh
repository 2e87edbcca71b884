#!/usr/bin/env bash
# The one script a device call runs (METHOD.md "fit the lease"): build the SWAT attention lab,
# check correctness, run compute-sanitizer, benchmark, profile, and run the baselines in the
# same call. Logs and JSON go to $OUT.
#   bash bench/cuda/run_device.sh [build] [check] [san] [bench] [ncu] [base]   (default: all)
set -uo pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT" build_lab
STAGES=" ${*:-build check san bench ncu base} "
has() { [[ "$STAGES" == *" $1 "* ]]; }
NVCC=${NVCC:-nvcc}
ARCH="-gencode=arch=compute_90a,code=sm_90a"
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit --format=csv | tee "$OUT/gpu.txt"
if has build; then
  $NVCC -std=c++20 -O3 $ARCH -lineinfo -Xcompiler -fopenmp,-Wall,-Wextra -Xptxas -v -Isrc \
    bench/cuda/swat_lab.cu src/kernels/cuda/swat_attention.cu -o build_lab/swat_lab \
    > "$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; exit 1; }
  grep -E "registers|spill" "$OUT/build.log" | head -20
fi
if has check; then
  ./build_lab/swat_lab check 2>&1 | tee "$OUT/check.log"
fi
if has san; then
  { compute-sanitizer --tool memcheck --leak-check full ./build_lab/swat_lab small 2>&1 | tail -4
    compute-sanitizer --tool racecheck ./build_lab/swat_lab small 2>&1 | tail -4
    compute-sanitizer --tool synccheck ./build_lab/swat_lab small 2>&1 | tail -3; } | tee "$OUT/sanitizer.log"
fi
if has bench; then
  ./build_lab/swat_lab bench 20 2>&1 | tee "$OUT/bench.json"
fi
if has ncu; then
  # one forward and one backward launch at S 16K, w 1024, D 64
  ncu --kernel-name regex:swat_ --launch-skip 6 --launch-count 2 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy \
    --section WarpStateStats --section InstructionStats \
    ./build_lab/swat_lab bench 1 > "$OUT/ncu.txt" 2>&1
  grep -E "swat_|Throughput|Pipe|Issue Slots|Achieved Occ|Registers|Stall|Duration" "$OUT/ncu.txt" | head -60
fi
if has base; then
  export PYTHONUNBUFFERED=1
  python3 .baselines/triton_sigmoid_swa.py 2>&1 | grep -v Warning | tee "$OUT/triton.log" | tail -6
  python3 .baselines/torch_anchors.py attn 2>&1 | grep -v Warning | tee "$OUT/anchors.log" | tail -6
fi
