#!/usr/bin/env bash
# Training-step A/B of two builds on one card in one call (issue 5): `bench train --device cuda`
# on the 374M SWAT preset (w 1024, 16K tokens a step) at S 4096 (two alternating rounds), S 16K,
# and with --recompute at S 16K and 64K (peak memory in each JSON), the new build's --profile-ops,
# and compiled PyTorch's training anchors when torch_anchors.py is given (same card).
#   CPU machine: bash bench/cuda/pack_backend.sh NEW_BUILD, and the baseline's binary copied into
#                .devlibs under another name (e.g. .devlibs/longctx.head; the libraries are shared)
#   device:      bash bench/cuda/run_train_ab.sh NEW_BIN BASE_BIN [torch_anchors.py]   (carry .devlibs)
# Output: $OUT/train_ab.jsonl (one line per run: build, S, B, recompute, the bench JSON), profile_new.log.
set -uo pipefail
new=${1:?usage: run_train_ab.sh NEW_BIN BASE_BIN [torch_anchors.py]} base=${2:?} anchors=${3:-}
STAGES=all
source "$(dirname "$0")/device_env.sh"
export OMP_NUM_THREADS=8
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$OUT/machine.log"
train() {  # train BINARY TAG S B [flags...]: one bench line into train_ab.jsonl
  local bin=$1 tag=$2 S=$3 B=$4
  shift 4
  local j
  j=$(timeout 150 "$bin" bench train --device cuda \
      --preset swat-340m --window 1024 --batch "$B" -S "$S" --steps 5 "$@" 2> /dev/null | tail -1)
  echo "{\"build\":\"$tag\",\"S\":$S,\"B\":$B,\"flags\":\"$*\",\"run\":${j:-null}}" | tee -a "$OUT/train_ab.jsonl" |
    python3 -c "import json,sys; d=json.load(sys.stdin); r=d['run'] or {}; print(d['build'], d['S'], d['flags'], r.get('step_ms'), r.get('tokens_per_s'), r.get('peak_device_mb'))"
}
for round in 1 2; do train "$new" new 4096 4; train "$base" base 4096 4; done
train "$new" new 16384 1; train "$base" base 16384 1
train "$new" new 16384 1 --recompute
train "$new" new 65536 1 --recompute
timeout 150 "$new" bench train --device cuda --preset swat-340m \
  --window 1024 --batch 4 -S 4096 --steps 5 --profile-ops > "$OUT/profile_new.json" 2> "$OUT/profile_new.log"
tail -3 "$OUT/profile_new.log"
if [[ -n $anchors ]]; then  # compiled PyTorch on the same card (eager σ, compiled σ, Flex softmax, σ at 16K)
  OUT=$OUT timeout 400 python3 "$anchors" train 2>&1 | grep -E "^\{" | tee "$OUT/torch_anchors_train.log"
fi
