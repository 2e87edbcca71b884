#!/usr/bin/env bash
# CPU benchmark suite of the foundation issue: longctx vs PyTorch (Debian python3-torch, same
# thread count) in the same run. Appends JSON lines to bench/results/<date>_cpu_<ncores>core.jsonl.
# Usage: bash tools/bench_cpu.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
T=$(nproc)
OUT=bench/results/$(date -u +%F)_cpu_${T}core.jsonl
LCX="$B/longctx"
meta() { echo "{\"bench\":\"meta\",\"date\":\"$(date -u +%FT%TZ)\",\"cpu\":\"$(lscpu | sed -n 's/^Model name: *//p')\",\"threads\":$T,\"OPENBLAS_CORETYPE\":\"${OPENBLAS_CORETYPE:-}\",\"git\":\"$(git rev-parse --short HEAD)\"}"; }
meta | tee -a "$OUT"
for S in 4096 16384 65536; do
  $LCX bench attention -S $S -w 256 --heads 8 --head-dim 64 --repeats 3 | tee -a "$OUT"
done
/usr/bin/python3 tools/torch_attention_baseline.py --S 4096 --window 256 --H 8 --D 64 --threads "$T" | tee -a "$OUT"
for preset in tiny small; do
  for S in 1024 4096; do
    $LCX bench train --preset $preset -S $S --batch 1 --steps 3 | tee -a "$OUT"
    /usr/bin/python3 tools/torch_train_baseline.py --preset $preset --S $S --batch 1 --steps 2 --threads "$T" | tee -a "$OUT"
  done
done
echo "wrote $OUT"
