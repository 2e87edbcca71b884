#!/usr/bin/env bash
# Issue 10's device calls: the HDP runtime on several GPUs of one host (cuda backend, NCCL between
# ranks, one GPU per rank). bench/cuda/NOTES.md ("Multi-GPU HDP") says how to run it.
#
#   on the CPU machine:  bash bench/cuda/run_hdp_multigpu.sh pack BUILD_DIR
#       prebuilt binaries + libraries the GPU image lacks into .devlibs/ (pack_backend.sh), plus
#       mpi_hdp_test and a relocatable Open MPI + PMIx runtime (used only if the image has no mpirun)
#   on the device (carry .devlibs; each call ≤ 10 min, so split the stages over calls):
#       bash bench/cuda/run_hdp_multigpu.sh [probe] [test] [bytes] [speed] [sim]   (default: all)
#   probe  GPUs, driver, where mpirun comes from
#   test   correctness: `mpi_hdp_test gpu SCHED [softmax]` on all GPUs and on 2 (NCCL HDP training
#          == one GPU on the same global batch, bf16 tolerance in tests/mpi_hdp_test.cpp), then
#          `train --hdp --device cuda` from the CLI (SWAT: trains, checkpoints; full attention:
#          ring attention on the GPUs)
#   bytes  halo (SWAT) vs ring (full attention) bytes on one placement (CPU ranks, exact counts)
#   speed  tokens/s of the ablation (a) static DP×CP (b) HDP naive (c) + offload (d) + balance
#          (e) + remote loader, 340M SWAT model on a mixed-length batch (ByteScale distribution,
#          contexts up to CONTEXT); STAGES_ABL="a b" picks stages
#   sim    `bench profile --device cuda` and `longctx simulate` with it, next to `speed`'s numbers
# Knobs (environment): CAP (tokens per rank per micro-batch, 32768), CONTEXT (min(262144,
# GPUs·CAP)), STEP_TOKENS (2·GPUs·CAP), STEPS (6), WINDOW (256, the preset's: `bench profile`
# measures that one), OFFLOAD_R (0.5; 0: stages d, e without offloading, c skipped), FLAGS (extra train flags for every stage, e.g.
# --recompute). Logs and JSON go to $OUT.
set -uo pipefail

if [[ "${1:-}" == pack ]]; then
  set -e
  build=${2:?usage: run_hdp_multigpu.sh pack BUILD_DIR}
  bash bench/cuda/pack_backend.sh "$build"
  cp "$build/tests/mpi_hdp_test" .devlibs/
  om=.devlibs/openmpi
  rm -rf "$om" && mkdir -p "$om/bin" "$om/lib/x86_64-linux-gnu" "$om/share" "$om/pmix2"
  cp /usr/bin/orterun "$om/bin/mpirun" && cp /usr/bin/orted "$om/bin/"
  cp -a /usr/lib/x86_64-linux-gnu/openmpi "$om/lib/x86_64-linux-gnu/"
  rm -rf "$om/lib/x86_64-linux-gnu/openmpi/include"
  cp -a /usr/share/openmpi "$om/share/"
  cp -a /usr/lib/x86_64-linux-gnu/pmix2/lib /usr/lib/x86_64-linux-gnu/pmix2/share "$om/pmix2/"
  cp -L /lib/x86_64-linux-gnu/libmca_common_*.so.[0-9][0-9] /lib/x86_64-linux-gnu/libmunge.so.2 \
        .devlibs/fallback/
  du -sh .devlibs
  exit 0
fi

STAGES="${*:-probe test bytes speed sim}"
source "$(dirname "$0")/device_env.sh"
export OMP_NUM_THREADS=4
G=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
# "${MPI[@]}" -np N CMD...: one process per GPU, the environment (NVLink multicast off) passed on
# (an array, not a function, so that `timeout` can run it)
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE
     -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS -x OMP_NUM_THREADS)
CAP=${CAP:-32768}
CONTEXT=${CONTEXT:-$(( G * CAP < 262144 ? G * CAP : 262144 ))}
STEP_TOKENS=${STEP_TOKENS:-$(( 2 * G * CAP ))}
STEPS=${STEPS:-6}
WINDOW=${WINDOW:-256}
OFFLOAD_R=${OFFLOAD_R:-0.5}
FLAGS=${FLAGS:-}
DATA=/tmp/hdp_data

if has probe; then
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    grep -m1 "model name" /proc/cpuinfo; echo "GPUs: $G"; echo "mpirun: $(command -v mpirun) (OPAL_PREFIX=${OPAL_PREFIX:-})"
    mpirun --version 2>&1 | head -1; ldd "$BIN/longctx" | grep -E "not found"
    nvidia-smi topo -m 2>/dev/null | head -12; } 2>&1 | tee "$OUT/machine.log"
fi

if has test; then
  for np in $(printf '%s\n' "$G" 2 | sort -un); do
    for args in "balance" "static" "naive" "balance softmax" "balance full" "static full"; do
      echo "== np $np: gpu $args"
      timeout 180 "${MPI[@]}" -np "$np" "$BIN/mpi_hdp_test" gpu $args 2>&1 | grep -vE "^\s*$" | tail -8
    done
  done 2>&1 | tee "$OUT/test_gpu.log"
  "$BIN/mpi_hdp_test" mkdata /tmp/hdp_cli
  cli=("$BIN/longctx" train --hdp --device cuda --data /tmp/hdp_cli --preset tiny --capacity 64 --steps 2 --quiet)
  { echo "== CLI, SWAT (expect: trained 2 steps on $G ranks (HDP, balance, nccl))"
    timeout 120 "${MPI[@]}" -np "$G" "${cli[@]}" --window 16 --out /tmp/hdp_cli/run --zero1 --remote-loader 2>&1 | tail -3
    echo "== CLI, full attention (ring attention on the GPUs; expect: trained 2 steps)"
    timeout 120 "${MPI[@]}" -np "$G" "${cli[@]}" --attention softmax --window 1048576 --out /tmp/hdp_cli/full 2>&1 | tail -3
  } 2>&1 | tee -a "$OUT/test_gpu.log"
fi

if has bytes; then
  # exact bytes of one step on CPU ranks (placement only; no GPU needed): halo vs ring
  for C in 1024 4096; do timeout 300 "${MPI[@]}" -np "$G" "$BIN/mpi_hdp_test" bytes $C 2>&1 | grep '^{'; done \
    | tee "$OUT/hdp_cp_bytes.jsonl"
fi

# one ablation stage: NAME, then train flags; a JSON line with the median tokens/s of steps ≥ 2
stage() {
  local name=$1; shift
  local out=/tmp/hdp_run_$name
  rm -rf "$out"
  timeout 480 "${MPI[@]}" -np "$G" "$BIN/longctx" train --hdp --device cuda --data "$DATA" --out "$out" --preset swat-340m \
    --window "$WINDOW" --steps "$STEPS" --warmup 1 --max-len "$CONTEXT" --step-tokens "$STEP_TOKENS" \
    --quiet $FLAGS "$@" > "$OUT/train_$name.log" 2>&1
  local rc=$?
  cp "$out/metrics.jsonl" "$OUT/metrics_$name.jsonl" 2>/dev/null
  python3 - "$name" "$rc" "$out/metrics.jsonl" "$OUT/train_$name.log" "$G" "$*" <<'EOF'
import json, statistics, sys
name, rc, metrics, log, gpus, flags = sys.argv[1:7]
try:
    rows = [json.loads(l) for l in open(metrics)]
except OSError:
    rows = []
r = {"stage": name, "gpus": int(gpus), "flags": flags, "rc": int(rc), "steps": len(rows)}
if len(rows) >= 2:
    tps = [x["tokens_per_s"] for x in rows[1:]]
    r.update(tokens_per_s=statistics.median(tps), tokens_per_s_all=tps,
             cp_bytes_per_step=statistics.median(x["cp_bytes"] for x in rows[1:]),
             micro_batches=[rows[-1]["micro_batches_min"], rows[-1]["micro_batches_max"]],
             loss_last=rows[-1]["loss"])
else:
    r["error"] = open(log).read()[-600:]
print(json.dumps(r))
EOF
}

if has speed; then
  if [[ ! -f $DATA/train.bin ]]; then
    "$BIN/mpi_hdp_test" mkdist "$DATA" bytescale $(( STEP_TOKENS * (STEPS + 2) )) "$CONTEXT" 32000
  fi
  # (c): selective offloading at ratio r lets a rank hold C·l / (2 + (1 − r)(l − 2)) tokens in the
  # activation memory of C (ByteScale Eq. 3, l = 24 layers), so D(s) drops
  CAP_OFF=$(python3 -c "r=$OFFLOAD_R; l=24; print(int($CAP*l/(2+(1-r)*(l-2)))//1024*1024)")
  OFF=""
  if [[ $OFFLOAD_R == 0 ]]; then echo '{"stage":"c","skipped":"OFFLOAD_R=0"}' >> "$OUT/hdp_ablation.jsonl"
  elif "$BIN/longctx" train --help | grep -q -- "--offload"; then OFF="--offload $OFFLOAD_R --capacity $CAP_OFF"
  else echo '{"stage":"c","skipped":"train has no --offload"}' >> "$OUT/hdp_ablation.jsonl"; fi
  for s in ${STAGES_ABL:-a b c d e}; do
    case $s in
      a) stage a --scheduler static --capacity "$CAP" ;;
      b) stage b --scheduler naive --capacity "$CAP" ;;
      c) [[ -n $OFF ]] && stage c --scheduler naive $OFF ;;
      d) stage d --scheduler balance ${OFF:---capacity $CAP} ;;
      e) stage e --scheduler balance ${OFF:---capacity $CAP} --remote-loader ;;
    esac
  done | tee -a "$OUT/hdp_ablation.jsonl"
fi

if has sim; then
  timeout 240 "$BIN/longctx" bench profile --device cuda --preset swat-340m \
    --lengths 4096,8192,16384,32768 --repeats 2 --out "$OUT/profile_cuda.json" > /dev/null 2> "$OUT/profile.err"
  tail -2 "$OUT/profile.err"
  # the same model as `speed` (swat-340m, one GPU per rank) with the per-layer profile just measured
  timeout 120 "$BIN/longctx" simulate --model swat-340m --gpus "$G" --context "$CONTEXT" \
    --tokens "$STEP_TOKENS" --window "$WINDOW" -C "$CAP" --cost "$OUT/profile_cuda.json" \
    --json "$OUT/simulate.json" 2>&1 | tee "$OUT/simulate.log"
  python3 - "$OUT/simulate.json" "$OUT/hdp_ablation.jsonl" <<'EOF' | tee "$OUT/predicted_vs_measured.md"
import json, sys
sim = {s["stage"]: s for s in json.load(open(sys.argv[1]))["stages"]}
meas = {}
try:
    for l in open(sys.argv[2]):
        r = json.loads(l)
        if "tokens_per_s" in r: meas[r["stage"]] = r["tokens_per_s"]
except OSError:
    pass
print("| stage | simulated tokens/s | measured tokens/s | measured / simulated |")
print("|---|---|---|---|")
for k in "abcde":
    p, m = sim.get(k, {}).get("tokens_per_s"), meas.get(k)
    ratio = f"{m / p:.2f}" if p and m else "–"
    print(f"| ({k}) {sim.get(k, {}).get('label', '')} | {p or 0:.4g} | {m or 0:.4g} | {ratio} |")
EOF
fi
