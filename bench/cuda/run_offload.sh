#!/usr/bin/env bash
# The device call of issue 8 (activation offloading): the offload tests on cuda, `bench profile
# --device cuda` (T(s), Act(s), PCIe bandwidths), the Fig. 21 analogue (340M SWAT, w 1024, B 1:
# peak device memory and step time vs offload ratio r and recompute), the longest trainable
# context (recompute + r = 1; `chunk`: context parallelism over time, --chunk, up to 2M tokens and
# the softmax-window model at 1M), and the NCCL communicator on one rank. Binaries come prebuilt in
# .devlibs/ (bench/cuda/pack_backend.sh BUILD_DIR, which also packs test_offload and
# nccl_comm_test). Logs and JSON go to $OUT.
#   bash bench/cuda/run_offload.sh [test] [prof] [fig21] [long] [chunk] [nccl]   (default: all)
set -uo pipefail
STAGES="${*:-test prof fig21 long chunk nccl}"
source "$(dirname "$0")/device_env.sh"
export OMP_NUM_THREADS=8
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  grep -m1 "model name" /proc/cpuinfo; free -g | head -2; ldd $BIN/longctx | grep -E "not found"; } | tee "$OUT/machine.log"
# one bench-train case: S, then extra flags; an OOM or a timeout prints a JSON line saying so
case_() {
  local S=$1 t=$2; shift 2
  local line
  line=$(timeout "$t" $BIN/longctx bench train --device cuda --preset swat-340m --window 1024 --batch 1 \
         -S "$S" --steps "${STEPS:-2}" "$@" 2>&1 | tail -1)
  if [[ "$line" == \{* ]]; then echo "$line"
  else echo "{\"S\":$S,\"flags\":\"$*\",\"error\":$(printf '%s' "$line" | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()[:300]))')}"; fi
}
if has test; then
  $BIN/test_offload 2>&1 | tail -25 | tee "$OUT/test_offload.log"
fi
if has prof; then
  timeout 60 $BIN/longctx bench profile --device cuda --preset swat-340m -w 1024 --lengths 4096,8192,16384 \
    --repeats 1 --out "$OUT/profile_cuda.json" > /dev/null 2> "$OUT/profile.err"; tail -2 "$OUT/profile.err"
  python3 -c "import json;j=json.load(open('$OUT/profile_cuda.json'));print({k:j[k] for k in ('time','act','d2h_bytes_per_s','h2d_bytes_per_s')})"
fi
if has fig21; then
  for S in ${FIG21_S:-16384 65536}; do
    case_ $S 60
    for r in 0.25 0.5 0.75 1.0; do case_ $S 60 --offload $r; done
    case_ $S 60 --recompute
    [[ -f "$OUT/profile_cuda.json" ]] && case_ $S 60 --offload auto --offload-cost "$OUT/profile_cuda.json"
  done | tee "$OUT/fig21.jsonl"
  for f in "" "--offload 0.5" "--offload 1.0"; do case_ 262144 60 --recompute $f; done | tee -a "$OUT/fig21.jsonl"
fi
if has long; then
  for S in ${LONG_S:-393216 524288 1048576}; do case_ $S 90 --recompute --offload 1.0; done | tee "$OUT/long.jsonl"
fi
if has chunk; then  # context parallelism over time (dist/chunked_seq.h): the longest context.
  # Lists of S per variant; set one to "" to skip it (e.g. CHUNK_BASE_S= CHUNK_S= …).
  { for S in ${CHUNK_BASE_S-4096 16384}; do case_ $S 60; done
    for S in ${CHUNK_S-262144 1048576 2097152}; do STEPS=1 case_ $S 150 --chunk 16384; done
    for S in ${CHUNK_RECOMPUTE_S-262144}; do STEPS=1 case_ $S 60 --chunk 65536 --recompute; done
    for S in ${CHUNK_HOST_S-2097152 4194304}; do  # halo in pinned host memory
      STEPS=1 case_ $S 200 --chunk 16384 --chunk-halo host; done
    for S in ${CHUNK_SOFTMAX_S-262144}; do STEPS=1 case_ $S 150 --chunk 16384 --attention softmax; done
  } | tee "$OUT/chunk.jsonl"
fi
if has nccl; then
  if command -v mpirun > /dev/null; then
    timeout 60 mpirun --allow-run-as-root -np 1 -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH $BIN/nccl_comm_test 2>&1 | tail -15 | tee "$OUT/nccl.log"
  else
    echo "no mpirun on this machine" | tee "$OUT/nccl.log"
  fi
fi
